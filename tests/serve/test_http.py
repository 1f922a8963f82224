"""The demo server's HTTP endpoints, without a browser."""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from refinemask.commands import serve as serve_command
from refinemask.engine.predict import Predictor
from refinemask.errors import RefineMaskError
from refinemask.serve import is_loopback, make_server
from tests.tiny_models import confident_tiny_model
from tests.serve.running import Running


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def post(url: str, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    request = urllib.request.Request(url + "api/predict", data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def full_mask(entry: dict, height: int, width: int) -> np.ndarray:
    """A mask of the JSON answer back to a bool (H, W) array."""
    mask = np.zeros((height, width), dtype=bool)
    if entry["png"]:
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["png"]))))
        h, w = crop.shape[:2]
        mask[entry["y"] : entry["y"] + h, entry["x"] : entry["x"] + w] = crop[:, :, 3] > 0
    return mask


def test_the_page_is_served_as_html(running):
    status, kind, body = get(running.url)
    assert status == 200 and kind.startswith("text/html")
    assert b'id="threshold"' in body and b'value="coarse"' in body and b'src="/static/app.js"' in body


def test_the_pages_style_and_script_are_served_from_the_package(running):
    status, kind, script = get(running.url + "static/app.js")
    assert status == 200 and kind.startswith("text/javascript") and b'fetch("/api/predict"' in script
    status, kind, style = get(running.url + "static/style.css")
    assert status == 200 and kind.startswith("text/css") and b"#views" in style
    status, kind, body = get(running.url + "static/../server.py")
    assert status == 404 and kind == "application/json"


def test_info_describes_the_model_the_mask_stages_and_the_limits(running):
    status, kind, body = get(running.url + "api/info")
    info = json.loads(body)
    assert status == 200 and kind == "application/json"
    assert info["category_names"] == ["cat", "dog", "bird"]
    assert info["mask_sizes"] == {"final": 112, "coarse": 28}
    assert info["max_upload_bytes"] == 20 * 2**20 and info["max_pixels"] == 40_000_000
    assert info["example"] is True


def test_prediction_returns_the_predictors_final_masks_and_the_coarse_ones(running, model, example):
    status, answer = post(running.url, example.read_bytes())
    assert status == 200
    assert (answer["width"], answer["height"]) == (160, 120) and answer["stages"] == ["final", "coarse"]
    expected = Predictor(model)(str(example))
    detections = answer["detections"]
    assert len(detections) == len(expected["scores"]) > 0
    differs = 0
    for d, box, score, mask in zip(detections, expected["boxes"], expected["scores"], expected["masks"]):
        assert d["name"] == "cat" and d["score"] == pytest.approx(float(score))
        np.testing.assert_allclose(d["box"], box.numpy(), atol=0.01)
        final = full_mask(d["masks"]["final"], 120, 160)
        coarse = full_mask(d["masks"]["coarse"], 120, 160)
        assert np.array_equal(final, mask.numpy()) and final.sum() == d["masks"]["final"]["area"]
        assert coarse.any()
        differs += int(not np.array_equal(final, coarse))
    assert differs > 0  # the refinement changes masks


def test_the_example_image_is_served(running, example):
    status, kind, body = get(running.url + "example")
    assert status == 200 and kind == "image/png" and body == example.read_bytes()


def test_a_file_that_is_not_an_image_is_refused_with_400(running):
    status, answer = post(running.url, b"name,score\ncat,1\n", "application/octet-stream")
    assert status == 400 and "not an image" in answer["error"]


def test_an_upload_of_a_type_the_page_does_not_list_is_refused_with_415(running, example):
    # text/plain is what a cross-site form may post without a preflight
    for kind in ("text/plain", "text/csv", "application/x-www-form-urlencoded"):
        status, answer = post(running.url, example.read_bytes(), kind)
        assert status == 415 and "curl -F file=@image.jpg" in answer["error"], kind


def test_an_image_format_the_page_does_not_name_is_not_decoded(running):
    # Pillow would hand an EPS file to Ghostscript; only the listed formats are tried
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\n%%EOF\n"
    status, answer = post(running.url, eps, "application/octet-stream")
    assert status == 400 and answer["error"].startswith("the upload is not an image this server reads (JPEG, PNG")


def multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request: name -> (file name, bytes, type)."""
    boundary = "refinemask-test-boundary"
    body = b""
    for name, (filename, data, kind) in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: {kind}\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_a_form_upload_gets_the_same_detections_as_the_raw_file(running, example):
    # curl -F file=@x.jpg, and every HTML form, send multipart/form-data
    body, kind = multipart({"file": ("example.png", example.read_bytes(), "image/png")})
    status, answer = post(running.url, body, kind)
    status_raw, raw = post(running.url, example.read_bytes())
    assert status == status_raw == 200
    assert answer["detections"] == raw["detections"] and answer["detections"]


def test_a_form_without_a_file_is_refused_with_400(running):
    body = b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--b--\r\n"
    status, answer = post(running.url, body, "multipart/form-data; boundary=b")
    assert status == 400 and "the form has no file" in answer["error"]


def test_each_detection_carries_its_data_sets_category_id(model, example):
    server = make_server(model, "127.0.0.1", 0, quiet=True)
    try:
        server.predictor.label_to_category = {1: 17, 2: 18, 3: 21}  # as a COCO model's cat, dog, bird
        answer = server.predict(example.read_bytes())
    finally:
        server.server_close()
    assert answer["detections"]
    assert all(d["category_id"] == {1: 17, 2: 18, 3: 21}[d["label"]] for d in answer["detections"])


@pytest.mark.parametrize("size", [(6000, 3), (3, 6000)])
def test_an_image_too_thin_for_the_test_resize_gets_a_result(running, tmp_path, size):
    # a 3x6000 strip would be 0 pixels tall at the model's test size: a 500 before
    Image.new("RGB", size, (90, 40, 40)).save(tmp_path / "strip.png")
    status, answer = post(running.url, (tmp_path / "strip.png").read_bytes())
    assert status == 200 and (answer["width"], answer["height"]) == size
    assert post(running.url, (tmp_path / "strip.png").read_bytes()[:0])[0] == 400  # still serving


def test_an_empty_upload_is_refused_with_400(running):
    status, answer = post(running.url, b"")
    assert status == 400 and "empty" in answer["error"]


def test_a_truncated_image_is_refused_with_400(running, example):
    status, answer = post(running.url, example.read_bytes()[:300])
    assert status == 400 and "error" in answer


def test_an_unknown_path_is_404_json(running):
    status, kind, body = get(running.url + "nothing-here")
    assert status == 404 and kind == "application/json" and "no such page" in json.loads(body)["error"]


def test_an_upload_without_content_length_is_refused_with_411(running):
    parts = urlsplit(running.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n\r\n")
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]


@pytest.fixture(scope="module")
def strict(model):
    """A server with tiny limits: 10 kB and 10,000 pixels."""
    running = Running(make_server(model, "127.0.0.1", 0, max_upload_bytes=10_000, max_pixels=10_000, quiet=True))
    yield running
    running.stop()


def test_an_upload_over_the_byte_limit_is_refused_with_413(strict):
    status, answer = post(strict.url, b"\x89PNG" + bytes(20_000))
    assert status == 413 and answer["error"].startswith("the file is 19.5 kB, more than the limit of 9.77 kB")


def test_an_image_over_the_pixel_limit_is_refused_with_413(strict, tmp_path):
    Image.new("RGB", (120, 100), (200, 30, 30)).save(tmp_path / "big.png")  # 12,000 pixels in < 1 kB
    status, answer = post(strict.url, (tmp_path / "big.png").read_bytes())
    assert status == 413 and answer["error"].startswith("the image is 120x100 = 0.012 megapixels, more than the limit of 0.01")


def test_a_maskrcnn_model_has_no_coarse_stage(example):
    server = make_server(confident_tiny_model("maskrcnn"), "127.0.0.1", 0, quiet=True)
    try:
        assert server.info()["mask_sizes"] == {"final": 28}
        answer = server.predict(example.read_bytes())
    finally:
        server.server_close()
    assert answer["stages"] == ["final"] and answer["detections"]
    assert set(answer["detections"][0]["masks"]) == {"final"}


def test_a_faster_better_model_serves_its_112_masks_and_the_coarse_28_stage(example):
    model = confident_tiny_model("simple_refinemask")
    server = make_server(model, "127.0.0.1", 0, quiet=True)
    try:
        info = server.info()
        answer = server.predict(example.read_bytes())
    finally:
        server.server_close()
    assert info["model"]["mask_head"] == "simple_refinemask"
    assert info["mask_sizes"] == {"final": 112, "coarse": 28}
    assert answer["detections"] and set(answer["detections"][0]["masks"]) == {"final", "coarse"}
    # the served final masks are the predictor's
    expected = Predictor(model)(str(example))
    assert len(answer["detections"]) == len(expected["scores"])
    for entry, mask in zip(answer["detections"], expected["masks"].numpy()):
        assert np.array_equal(full_mask(entry["masks"]["final"], 120, 160), mask)


def test_a_missing_example_image_is_a_user_error(model, tmp_path):
    with pytest.raises(RefineMaskError, match="example image not found"):
        make_server(model, "127.0.0.1", 0, example=tmp_path / "missing.png")


def test_the_command_listens_on_loopback_by_default():
    parser = argparse.ArgumentParser()
    serve_command.add_arguments(parser)
    args = parser.parse_args(["--weights", "w.safetensors"])
    assert args.host == "127.0.0.1" and args.port == 7860
    assert is_loopback(args.host) and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_the_server_answers_on_the_address_it_reports(running):
    parts = urlsplit(running.url)
    assert parts.hostname == "127.0.0.1" and parts.port > 0
    assert running.server.server_address[:2] == ("127.0.0.1", parts.port)


def test_a_port_in_use_is_a_user_error(model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RefineMaskError, match="cannot listen on 127.0.0.1"):
            make_server(model, "127.0.0.1", taken.getsockname()[1])


def test_an_uploaded_faint_16_bit_image_is_scaled_as_the_model_says():
    from refinemask.serve import decode_upload

    values = np.linspace(0, 235, 64).astype(np.uint16).reshape(8, 8)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    default = decode_upload(buffer.getvalue())  # percentiles: stretched to 0-1
    full = decode_upload(buffer.getvalue(), scaling={"scaling": "full", "percentiles": (1.0, 99.8)})
    assert default.max() == 1.0 and default.min() == 0.0
    assert 0.0035 < full.max() < 0.0036  # 235 / 65535
