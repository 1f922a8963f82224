"""`refinemask serve` under load, slow clients, shutdown signals and bad input, on 127.0.0.1 only.

Each case starts ``python -m refinemask.cli serve --port 0`` (it listens on 127.0.0.1, the
default, on a free port) with a small random RefineMask model (ResNet-18, test size 128, 5 detections), runs
bounded loops of clients against it, and stops it; every loop has a deadline and every socket a
timeout, so the script ends by itself. ``--before DIR`` runs the same cases against another
source tree (e.g. the `http.server` version) and prints both columns.

    git archive 7431d35 src | tar -x -C /tmp/serve-before     # the http.server version
    python benchmarks/serve_load.py --before /tmp/serve-before/src

Cases (as in issue #28):
  * load: 1, 4, 16, 64 clients; each uploads the example image once, then asks GET /api/info
    on a new connection for ``--seconds``; resets are connections the server reset or closed
    without an answer;
  * burst: 40 and 256 clients connect at the same moment and ask GET /api/info;
  * slow clients: 50 idle connections and 50 sending one byte a second for 15 s, while a probe
    asks for the page every second; how many of the 100 the server still holds at the end, and
    its thread count;
  * shutdown: SIGINT or SIGTERM with no client, an idle connection, a keep-alive connection, a
    one-byte-a-second client and a stalled upload; seconds until the process exits (killed
    after 20 s);
  * bad input: malformed and hostile requests; the status, whether the answer is JSON, and
    whether the server still answers afterwards.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # never any other address
KILL_AFTER_S = 20.0


def make_weights(folder: Path) -> Path:
    import torch

    from refinemask import build_model
    from refinemask.model_files import save_weights

    torch.manual_seed(0)
    # few RoIs: the transport is measured, not the model (each upload still runs the whole detector)
    model = build_model(num_classes=3, backbone="resnet18", mask_head="refinemask", min_size=[128], max_size=192,
                        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50, detections_per_img=5)
    return save_weights(model.eval(), folder / "model.safetensors")


def png_bytes(height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class Served:
    """A `refinemask serve` process of one source tree, on a free 127.0.0.1 port."""

    def __init__(self, src: Path, weights: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(src))
        # the server's output (its access log) goes to a file: a pipe would need a reader in
        # this process, competing with the clients for the GIL
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "refinemask.cli", "serve", "--weights", str(weights), "--host", HOST, "--port", "0"],
            stdout=self.log, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        line, deadline = "", time.monotonic() + 300
        started = lambda: line.endswith("\n") and " on http://" in line  # noqa: E731 - a whole first line
        while not started() and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            self.log.seek(0)
            line = self.log.readline()
        if not started():
            self.process.kill()
            raise SystemExit(f"the server in {src} did not start: {line!r}")
        parts = urlsplit(line.split(" on ", 1)[1].split()[0])
        assert parts.hostname == HOST
        self.address = (HOST, parts.port)

    def threads(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return -1

    def stop(self, signum: int = signal.SIGINT) -> float:
        """Seconds from the signal until the process exited; inf when it had to be killed."""
        start = time.perf_counter()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=KILL_AFTER_S)
            return time.perf_counter() - start
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return float("inf")
        finally:
            self.log.close()


def raw_request(method: str, path: str, headers: dict | None = None, body: bytes = b"") -> bytes:
    headers = {"Host": HOST, "Connection": "close", **(headers or {})}
    if body and "Content-Length" not in headers:
        headers["Content-Length"] = str(len(body))
    head = "\r\n".join([f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]) + "\r\n\r\n"
    return head.encode("utf-8") + body


def exchange(address, data: bytes, then: bytes = b"", half_close: bool = False, timeout: float = 30) -> tuple[str, bytes]:
    """('ok', response) or ('reset' | 'timeout' | 'refused', b'') for one request on a new connection."""
    try:
        with socket.create_connection(address, timeout=timeout) as connection:
            connection.sendall(data)
            if then:
                connection.sendall(then)
            if half_close:
                connection.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
    except (ConnectionResetError, BrokenPipeError):
        return "reset", b""
    except ConnectionRefusedError:
        return "refused", b""
    except (socket.timeout, TimeoutError):
        return "timeout", b""
    return ("ok" if received else "reset"), received


def status_of(response: bytes) -> tuple[int, bool]:
    """(status, whether the body is JSON) of a raw response; (0, False) for none."""
    if not response.startswith(b"HTTP/"):
        return 0, False
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    kind = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
                 if line.lower().startswith(b"content-type:")), b"")
    try:
        json.loads(body)
        is_json = kind.startswith(b"application/json")
    except ValueError:
        is_json = False
    return status, is_json


# --- cases


def load(served: Served, clients: int, seconds: float, image: bytes) -> dict:
    counts = {"GETs answered": 0, "resets": 0, "timeouts": 0, "uploads answered": 0, "uploads busy (503)": 0, "other": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(_):
        barrier.wait(timeout=60)
        outcome, response = exchange(served.address, raw_request("POST", "/api/predict", {"Content-Type": "image/png"}, image), timeout=120)
        status = status_of(response)[0]
        key = {200: "uploads answered", 503: "uploads busy (503)"}.get(status, "resets" if outcome == "reset" else
                                                           "timeouts" if outcome == "timeout" else "other")
        with lock:
            counts[key] += 1
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            outcome, response = exchange(served.address, raw_request("GET", "/api/info"), timeout=10)
            key = ("GETs answered" if status_of(response)[0] == 200 else "other") if outcome == "ok" else \
                ("timeouts" if outcome == "timeout" else "resets")
            with lock:
                counts[key] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return counts


def burst(served: Served, clients: int) -> dict:
    barrier = threading.Barrier(clients)

    def client(_):
        barrier.wait(timeout=60)
        outcome, response = exchange(served.address, raw_request("GET", "/api/info"), timeout=30)
        return "ok" if outcome == "ok" and status_of(response)[0] == 200 else outcome

    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(client, range(clients)))
    return {"answered": outcomes.count("ok"), "resets": outcomes.count("reset") + outcomes.count("refused"),
            "timeouts": outcomes.count("timeout")}


def slow_clients(served: Served, seconds: float = 15.0) -> dict:
    """50 idle + 50 byte-a-second connections for ``seconds``; the page probed once a second."""
    threads_before = served.threads()
    request = raw_request("GET", "/")
    idle = [socket.create_connection(served.address, timeout=5) for _ in range(50)]
    trickling = [socket.create_connection(served.address, timeout=5) for _ in range(50)]
    probes, answered, most_threads = 0, 0, threads_before
    start = time.monotonic()
    for second in range(int(seconds)):
        for connection in trickling:
            try:
                connection.sendall(request[second % len(request): second % len(request) + 1])
            except OSError:
                pass  # closed by the server
        outcome, response = exchange(served.address, request, timeout=5)
        probes += 1
        answered += int(outcome == "ok" and status_of(response)[0] == 200)
        most_threads = max(most_threads, served.threads())
        time.sleep(max(0.0, start + second + 1 - time.monotonic()))
    held = 0
    for connection in idle + trickling:
        connection.setblocking(False)
        try:
            connection.recv(65536)  # b"" (closed) or an answer (408) before the close: not held
        except BlockingIOError:
            held += 1  # nothing to read and not closed: still held
        except OSError:
            pass
        connection.close()
    return {"page answered": f"{answered}/{probes}", "held after 15 s": f"{held}/100",
            "server threads": f"{threads_before} -> {most_threads}"}


def shutdown(src: Path, weights: Path, case: str, signum: int) -> float:
    served = Served(src, weights)
    held, stop = [], threading.Event()
    if case == "idle connection":
        held.append(socket.create_connection(served.address, timeout=5))
    elif case == "keep-alive connection":
        connection = socket.create_connection(served.address, timeout=5)
        connection.sendall(raw_request("GET", "/api/info", {"Connection": "keep-alive"}))
        connection.recv(65536)
        held.append(connection)
    elif case == "1 byte/s client":
        connection = socket.create_connection(served.address, timeout=5)
        held.append(connection)

        def trickle():
            request = raw_request("GET", "/")
            for i in range(int(KILL_AFTER_S) + 5):
                if stop.wait(1.0):
                    return
                try:
                    connection.sendall(request[i % len(request): i % len(request) + 1])
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(1.5)
    elif case == "stalled upload":
        connection = socket.create_connection(served.address, timeout=5)
        connection.sendall(raw_request("POST", "/api/predict", {"Content-Type": "image/png", "Content-Length": "100000"}) + b"\x89PNG")
        held.append(connection)
    time.sleep(0.5)
    seconds = served.stop(signum)
    stop.set()
    for connection in held:
        connection.close()
    return seconds


def bad_inputs(image: bytes) -> list[tuple[str, bytes, bytes, bool]]:
    """(case, request, more bytes sent after it, half-close) for each bad or hostile request."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\n%%EOF\n"
    boundary = "b0undary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    png = {"Content-Type": "image/png"}
    return [
        # ² in Latin-1, as HTTP headers are read: str.isdigit() is True for it, int() fails
        ("Content-Length: ²", raw_request("POST", "/api/predict", png).replace(b"\r\n\r\n", b"\r\nContent-Length: \xb2\r\n\r\n"), b"", False),
        ("whole image, Content-Length 1000 more, half-closed", raw_request("POST", "/api/predict", {**png, "Content-Length": str(len(image) + 1000)}), image, True),
        ("no Content-Length", raw_request("POST", "/api/predict", png), b"", False),
        ("HEAD /", raw_request("HEAD", "/"), b"", False),
        ("OPTIONS /", raw_request("OPTIONS", "/"), b"", False),
        ("20 kB header, sent in two parts", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 10_000, b"a" * 10_000 + b"\r\n\r\n", False),
        ("URL of 20 kB", raw_request("GET", "/" + "a" * 20_000), b"", False),
        ("cross-site text/plain POST", raw_request("POST", "/api/predict", {"Content-Type": "text/plain", "Origin": "http://evil.example"}, image), b"", False),
        ("text/plain POST, no Origin", raw_request("POST", "/api/predict", {"Content-Type": "text/plain"}, image), b"", False),
        ("Host: evil.example (DNS rebinding)", raw_request("GET", "/api/info", {"Host": "evil.example"}), b"", False),
        ("EPS file", raw_request("POST", "/api/predict", {"Content-Type": "application/octet-stream"}, eps), b"", False),
        ("not an image", raw_request("POST", "/api/predict", png, b"name,score\ncat,1\n"), b"", False),
        ("truncated PNG", raw_request("POST", "/api/predict", png, image[:300]), b"", False),
        ("/static/../server.py", raw_request("GET", "/static/../server.py"), b"", False),
        ("over the byte limit, Expect: 100-continue", raw_request("POST", "/api/predict", {**png, "Content-Length": str(10**9), "Expect": "100-continue"}), b"", False),
        ("multipart form upload (curl -F)", raw_request("POST", "/api/predict", {"Content-Type": f"multipart/form-data; boundary={boundary}"}, form), b"", False),
    ]


def run_bad_inputs(served: Served, image: bytes) -> dict[str, str]:
    rows = {}
    for case, request, then, half_close in bad_inputs(image):
        outcome, response = exchange(served.address, request, then=then, half_close=half_close, timeout=30)
        status, is_json = status_of(response)
        rows[case] = (f"{status} {'JSON' if is_json else 'not JSON'}" if status else f"no answer ({outcome})")
    outcome, response = exchange(served.address, raw_request("GET", "/api/info"))
    rows["still serving afterwards"] = "yes" if status_of(response)[0] == 200 else "no"
    return rows


def run_all(src: Path, weights: Path, image: bytes, seconds: float) -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    served = Served(src, weights)
    try:
        for clients in (1, 4, 16, 64):
            counts = load(served, clients, seconds, image)
            results[f"load, {clients} clients"] = {k: str(v) for k, v in counts.items()}
        for clients in (40, 256):
            results[f"burst of {clients}"] = {k: str(v) for k, v in burst(served, clients).items()}
        results["slow clients"] = slow_clients(served)
        results["bad input"] = run_bad_inputs(served, image)
    finally:
        served.stop(signal.SIGKILL)
    cases = ["no client", "idle connection", "keep-alive connection", "1 byte/s client", "stalled upload"]
    results["shutdown"] = {}
    for case, signum in [*((c, signal.SIGINT) for c in cases), ("1 byte/s client", signal.SIGTERM)]:
        seconds_to_exit = shutdown(src, weights, case, signum)
        shown = f"{seconds_to_exit:.1f} s" if seconds_to_exit != float("inf") else f"killed after {KILL_AFTER_S:g} s"
        results["shutdown"][f"{signal.Signals(signum).name}, {case}"] = shown
    return results


def cell(values: dict[str, str]) -> str:
    """One table cell for a case: its measures as 'value measure', zeros left out."""
    shown = [f"{value} {key}" for key, value in values.items() if value != "0"]
    return ", ".join(shown) or "-"


def print_table(columns: dict[str, dict[str, dict[str, str]]]) -> None:
    """One markdown table: a row per case, a column per source tree."""
    names = list(columns)
    last = columns[names[-1]]
    print("| case | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for section, rows in last.items():
        if section in ("bad input", "shutdown"):  # one row per request or per stop
            for key in rows:
                print(f"| {section}: {key} | " + " | ".join(columns[n][section].get(key, "") for n in names) + " |")
        else:
            print(f"| {section} | " + " | ".join(cell(columns[n][section]) for n in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="another source tree (its src/) to run the same cases against")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of GET /api/info per client and load level")
    args = parser.parse_args()
    image = png_bytes(240, 320)
    with tempfile.TemporaryDirectory() as folder:
        weights = make_weights(Path(folder))
        columns = {}
        if args.before is not None:
            columns["before"] = run_all(args.before.resolve(), weights, image, args.seconds)
        columns["after" if args.before is not None else "this tree"] = run_all(REPO / "src", weights, image, args.seconds)
    print_table(columns)


if __name__ == "__main__":
    main()
