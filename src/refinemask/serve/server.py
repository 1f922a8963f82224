"""The HTTP side of ``refinemask serve``: a plain ``http.server`` answering the page and the API.

The endpoints and error statuses are listed in :mod:`refinemask.serve`. The page's files
(``page/index.html``, ``style.css``, ``app.js``) are package data, read once when the server
is made.
"""
from __future__ import annotations

import ipaddress
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from refinemask.errors import RefineMaskError
from refinemask.serve.prediction import MAX_PIXELS, UploadError, decode_upload, encode_prediction

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_BYTES = 20 * 2**20  # 20 MB
EXAMPLE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".bmp": "image/bmp", ".gif": "image/gif"}
# URL path -> (file in page/, content type); nothing else is served from the package
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
}


def format_bytes(size: int) -> str:
    """'20 MB', '3.4 MB', '512 kB': file sizes as people read them (MB = 2**20 bytes)."""
    if size >= 2**20:
        return f"{size / 2**20:.3g} MB"
    return f"{size / 2**10:.3g} kB"


def read_page_files() -> dict[str, bytes]:
    """The page's files from the package data, by file name."""
    page = resources.files("refinemask.serve") / "page"
    return {name: (page / name).read_bytes() for name, _ in PAGE_FILES.values()}


class DemoServer(ThreadingHTTPServer):
    """The HTTP server; holds the model, the limits and the optional example image.

    Use :func:`make_server` to build one.
    """

    # request threads are joined by server_close(): a daemon thread still finishing a request
    # while the interpreter shuts down after Ctrl-C could abort the process (SIGABRT, "terminate
    # called without an active exception"; seen under load in the serve command's test)
    daemon_threads = False

    def __init__(self, address, model, example: Path | None, max_upload_bytes: int, max_pixels: int, quiet: bool):
        super().__init__(address, DemoHandler)
        self.model = model
        self.example = example
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.quiet = quiet
        self.page_files = read_page_files()
        from refinemask.engine.predict import Predictor

        # the model's own score threshold: the page's slider filters above it
        self.predictor = Predictor(model, device=next(model.parameters()).device)
        self.category_names = self.predictor.category_names
        # one prediction at a time: bounds memory, and torch already uses every core
        self.model_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def info(self) -> dict:
        cfg = self.model.config
        heads = self.model.roi_heads
        stages = {"final": int(heads.mask_head.stage_sizes[-1]) if heads.is_refinemask else 28}
        if heads.is_refinemask:
            stages["coarse"] = int(heads.mask_head.stage_sizes[1])
        return {
            "model": {
                "mask_head": cfg.mask_head,
                "backbone": cfg.backbone,
                "num_classes": cfg.num_classes,
                "test_size": [int(cfg.min_size[-1]), int(cfg.max_size)],
                "score_thresh": float(heads.score_thresh),
            },
            "category_names": self.category_names,
            "mask_sizes": stages,
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "example": self.example is not None,
        }

    def predict(self, data: bytes) -> dict:
        image = decode_upload(data, self.max_pixels, self.predictor.scaling)  # >8-bit images as in training
        with self.model_lock:
            start = time.perf_counter()
            prediction = self.predictor(image, coarse=True)
            seconds = time.perf_counter() - start
        return encode_prediction(prediction, self.category_names, seconds)


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "refinemask-serve"
    timeout = 120  # seconds a client may take to send its request

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in PAGE_FILES:
            name, kind = PAGE_FILES[path]
            self._send(HTTPStatus.OK, self.server.page_files[name], kind)
        elif path == "/api/info":
            self._json(HTTPStatus.OK, self.server.info())
        elif path == "/example" and self.server.example is not None:
            example = self.server.example
            kind = EXAMPLE_TYPES.get(example.suffix.lower(), "application/octet-stream")
            self._send(HTTPStatus.OK, example.read_bytes(), kind)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path != "/api/predict":
            self.close_connection = True
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}; upload to /api/predict")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, "the upload needs a Content-Length header")
            return
        size = int(length)
        limit = self.server.max_upload_bytes
        if size > limit:
            # answered without reading the body; the connection is closed after the answer
            self.close_connection = True
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the file is {format_bytes(size)}, more than the limit of {format_bytes(limit)}; shrink it first",
            )
            return
        data = self.rfile.read(size)
        try:
            self._json(HTTPStatus.OK, self.server.predict(data))
        except UploadError as err:
            self._error(err.status, err.message)
        except Exception as err:  # noqa: BLE001 - keep serving; tell the page what happened
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the model failed on this image: {type(err).__name__}: {err}")


def make_server(
    model,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    example: str | Path | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    quiet: bool = False,
) -> DemoServer:
    """A :class:`DemoServer` bound to ``host:port`` (port 0: any free port), not yet serving.

    Call ``serve_forever()`` on it (in a thread for tests), ``shutdown()`` and
    ``server_close()`` to stop.
    """
    if example is not None:
        example = Path(example)
        if not example.is_file():
            raise RefineMaskError(f"example image not found: {example}")
        decode_upload(example.read_bytes(), max_pixels)  # refuse a bad example now, not on the page
    model.eval()
    try:
        return DemoServer((host, port), model, example, max_upload_bytes, max_pixels, quiet)
    except OSError as err:
        raise RefineMaskError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port") from None


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
