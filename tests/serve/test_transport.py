"""The demo server's transport and guards: malformed requests, slow clients, bursts, the queue,
Host/Origin/token checks and the headers on every answer. Raw sockets on 127.0.0.1 only."""
from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from refinemask.serve import make_server
from refinemask.serve.server import SECURITY_HEADERS
from tests.serve.running import Running


def exchange(running, request: bytes, then: bytes = b"", half_close: bool = False, timeout: float = 30) -> bytes:
    """Send ``request`` (and ``then``), read until the server closes; b'' when it answered nothing."""
    with socket.create_connection(running.server.server_address[:2], timeout=timeout) as connection:
        connection.sendall(request)
        if then:
            connection.sendall(then)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one raw HTTP/1.1 response."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    headers = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
    if body and "Content-Length" not in headers:
        headers["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def json_error_of(response: bytes) -> tuple[int, str]:
    status, headers, body = parse(response)
    assert headers["content-type"] == "application/json", response[:300]
    return status, json.loads(body)["error"]


def still_serving(running) -> bool:
    return parse(exchange(running, request("GET", "/api/info")))[0] == 200


def test_a_content_length_that_is_not_a_number_gets_a_json_400(running):
    status, error = json_error_of(exchange(running, request("POST", "/api/predict", {"Content-Length": "²"})))
    assert status == 400 and "bad Content-Length" in error
    assert still_serving(running)


@pytest.mark.parametrize("parts", [1, 2])
def test_headers_over_16_kb_get_a_json_431_however_they_arrive(running, parts):
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n"
    first, then = (head, b"") if parts == 1 else (head[:10_000], head[10_000:])
    status, error = json_error_of(exchange(running, first, then=then))
    assert status == 431 and "larger than 16 kB" in error
    assert still_serving(running)


def test_headers_just_under_16_kb_are_served(running):
    head = request("GET", "/api/info", {"X-Long": "a" * 15_000})
    assert parse(exchange(running, head))[0] == 200


def test_head_answers_the_headers_of_get_without_a_body(running):
    status, headers, body = parse(exchange(running, request("HEAD", "/")))
    page = parse(exchange(running, request("GET", "/")))[2]
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(page) > 0


def test_other_methods_get_a_json_405_with_allow(running):
    for method, path in [("OPTIONS", "/"), ("PUT", "/api/predict"), ("DELETE", "/api/info")]:
        status, headers, body = parse(exchange(running, request(method, path)))
        assert status == 405 and headers["content-type"] == "application/json", (method, path)
        assert "is not allowed" in json.loads(body)["error"] and headers["allow"]


def test_a_body_shorter_than_its_content_length_is_not_run(running, example):
    done = running.server.jobs.completed
    head = request("POST", "/api/predict", {"Content-Type": "image/png", "Content-Length": "100000"})
    response = exchange(running, head, then=example.read_bytes()[:500], half_close=True)
    status, error = json_error_of(response)
    assert status == 400 and "before the body reached its Content-Length" in error
    assert running.server.jobs.completed == done
    assert still_serving(running)


def test_100_continue_is_sent_before_the_body_and_not_for_a_refused_one(running, example):
    data = example.read_bytes()
    with socket.create_connection(running.server.server_address[:2], timeout=30) as connection:
        connection.sendall(request("POST", "/api/predict", {
            "Content-Type": "image/png", "Content-Length": str(len(data)), "Expect": "100-continue"}))
        assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue")
    too_big = request("POST", "/api/predict", {
        "Content-Type": "image/png", "Content-Length": str(10**9), "Expect": "100-continue"})
    response = exchange(running, too_big)
    assert json_error_of(response)[0] == 413 and b"100 Continue" not in response


def test_every_answer_carries_the_security_headers_and_no_server_version(running, example):
    for raw in [request("GET", "/"), request("GET", "/nothing"), request("POST", "/api/predict", {"Content-Type": "text/plain"}, b"x"),
                request("POST", "/api/predict", {"Content-Length": "x"})]:
        status, headers, _ = parse(exchange(running, raw))
        assert "frame-ancestors 'none'" in headers["content-security-policy"], status
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert "server" not in headers
    assert set(SECURITY_HEADERS) >= {"Content-Security-Policy", "X-Frame-Options"}


def test_a_host_name_other_than_an_address_or_localhost_is_refused(running):
    # DNS rebinding: a page at evil.example re-resolved to 127.0.0.1 sends Host: evil.example
    status, error = json_error_of(exchange(running, request("GET", "/api/info", {"Host": "evil.example:7860"})))
    assert status == 400 and "--allow-host" in error
    for host in ["localhost:7860", "127.0.0.1", "[::1]:7860"]:
        assert parse(exchange(running, request("GET", "/api/info", {"Host": host})))[0] == 200, host


def test_a_post_from_another_origin_is_refused_and_the_pages_own_is_served(running):
    foreign = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    status, error = json_error_of(exchange(running, request("POST", "/api/predict", foreign, bytes(4 * 2**20))))
    assert status == 403 and "evil.example" in error  # answered, not reset, while the body was on its way
    cross = {"Sec-Fetch-Site": "cross-site", "Content-Type": "image/png"}
    assert json_error_of(exchange(running, request("POST", "/api/predict", cross, b"x")))[0] == 403
    own = {"Origin": "http://127.0.0.1", "Content-Type": "image/png", "Content-Length": "0"}
    status, error = json_error_of(exchange(running, request("POST", "/api/predict", own)))
    assert status == 400 and "empty" in error  # past the guard, refused for its content


def test_a_burst_of_64_connections_is_answered_without_resets(running):
    barrier = threading.Barrier(64)

    def one(_):
        barrier.wait(timeout=30)
        return parse(exchange(running, request("GET", "/api/info")))[0]

    with ThreadPoolExecutor(64) as pool:
        assert list(pool.map(one, range(64))) == [200] * 64


@pytest.fixture()
def one_slot(model):
    """A server holding one upload at a time, with a header deadline of half a second."""
    running = Running(make_server(model, "127.0.0.1", 0, quiet=True, queue_size=1, header_timeout=0.5))
    yield running
    running.stop()


def test_a_full_queue_answers_503_with_retry_after_even_while_the_upload_is_sent(one_slot, example):
    server, release, started = one_slot.server, threading.Event(), threading.Event()

    def slow_predict(data: bytes) -> dict:
        started.set()
        release.wait(30)
        return {"detections": [], "size": len(data)}

    server.predict = slow_predict
    upload = request("POST", "/api/predict", {"Content-Type": "image/png"}, example.read_bytes())
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(exchange, one_slot, upload)
        assert started.wait(30)
        # a large upload: the client is still sending when the answer comes, and must get it, not a reset
        large = request("POST", "/api/predict", {"Content-Type": "image/png"}, bytes(4 * 2**20))
        status, headers, body = parse(exchange(one_slot, large))
        assert status == 503 and int(headers["retry-after"]) >= 1 and "busy" in json.loads(body)["error"]
        release.set()
        assert parse(first.result(timeout=30))[0] == 200
    assert still_serving(one_slot)


def test_slow_headers_get_a_json_408_and_the_page_answers_meanwhile(one_slot):
    with socket.create_connection(one_slot.server.server_address[:2], timeout=30) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHo")  # and nothing more
        assert parse(exchange(one_slot, request("GET", "/")))[0] == 200
        response = b""
        while chunk := slow.recv(65536):
            response += chunk
    status, error = json_error_of(response)
    assert status == 408 and "headers took more than 0.5 s" in error


def test_an_idle_connection_is_closed_at_the_header_deadline(one_slot):
    with socket.create_connection(one_slot.server.server_address[:2], timeout=30) as idle:
        assert idle.recv(100) == b""  # closed, without an answer


def test_the_api_needs_the_token_when_one_is_set(model):
    running = Running(make_server(model, "127.0.0.1", 0, quiet=True, token="s3cret"))
    try:
        status, headers, body = parse(exchange(running, request("GET", "/api/info")))
        assert status == 401 and headers["www-authenticate"] == "Bearer" and "token" in json.loads(body)["error"]
        wrong = {"Authorization": "Bearer guess"}
        assert parse(exchange(running, request("GET", "/api/info", wrong)))[0] == 401
        assert parse(exchange(running, request("GET", "/example", wrong)))[0] == 401
        right = {"Authorization": "Bearer s3cret"}
        assert parse(exchange(running, request("GET", "/api/info", right)))[0] == 200
        assert parse(exchange(running, request("GET", "/")))[0] == 200  # the page itself, which reads #token=
    finally:
        running.stop()


def test_stopping_returns_while_a_client_holds_a_connection_half_sent(model):
    running = Running(make_server(model, "127.0.0.1", 0, quiet=True))
    with socket.create_connection(running.server.server_address[:2], timeout=30) as slow:
        slow.sendall(request("POST", "/api/predict", {"Content-Type": "image/png", "Content-Length": "5000"}, b"")[:-2])
        slow.sendall(b"\r\n" + b"\x89PNG")  # headers complete, body not
        running.stop()
        assert not running.thread.is_alive()


def test_every_bad_input_of_the_benchmark_gets_a_json_4xx_and_the_server_keeps_serving(running, example):
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run_bad_inputs(SimpleNamespace(address=running.server.server_address[:2]), example.read_bytes())
    assert rows.pop("HEAD /") == "200 not JSON"  # HEAD answers without a body
    assert rows.pop("multipart form upload (curl -F)") == "200 JSON"
    assert rows.pop("still serving afterwards") == "yes"
    for case, row in rows.items():
        status, kind = row.split(" ", 1)
        assert 400 <= int(status) < 500 and kind == "JSON", (case, row)
