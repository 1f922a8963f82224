"""The HTTP side of ``refinemask serve``: a Starlette app on uvicorn, answering the page and the API.

The endpoints and error statuses are listed in :mod:`refinemask.serve`. The page's files
(``page/index.html``, ``style.css``, ``app.js``) are package data, read once when the server
is made.

uvicorn does the transport: a listen backlog, keep-alive and its timeout, HEAD, ``100
Continue``, Content-Length checks, a graceful shutdown with a deadline. Three things it does
not do are added here, each small:

* :class:`GuardedHttp` (uvicorn's h11 protocol, extended): a deadline for a request's headers
  (uvicorn has none, so a client sending a byte a second would hold its connection for
  ever), a cap on open connections, and JSON instead of text for the errors it answers
  itself (malformed requests, headers too large);
* :func:`guard` (before any route): the ``Host`` check against DNS rebinding, the ``Origin``
  check against cross-site posts, the optional bearer token;
* :class:`~refinemask.serve.jobs.PredictionQueue`: a bounded queue that answers 503 with
  ``Retry-After`` when full.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import socket
import threading
from http import HTTPStatus
from importlib import resources
from pathlib import Path

from refinemask.errors import RefineMaskError
from refinemask.serve.jobs import PredictionQueue, QueueClosed
from refinemask.serve.prediction import (
    MAX_PIXELS,
    UploadError,
    decode_upload,
    encode_prediction,
    predict_image,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_BYTES = 20 * 2**20  # 20 MB
DEFAULT_QUEUE = 8  # uploads held at once: being received, waiting or running
BACKLOG = 1024  # connections the kernel queues before accept(); Python's default of 5 reset bursts
MAX_CONNECTIONS = 1000  # open connections; more are answered 503 and closed
HEADER_TIMEOUT_S = 10.0  # a request's line and headers must arrive within this
BODY_TIMEOUT_S = 60.0  # an upload's body must arrive within this (20 MB at 350 kB/s)
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
GRACEFUL_S = 4  # on SIGINT/SIGTERM, requests in flight get this long...
ABANDON_S = 3.0  # ...then the running prediction this long: the command exits within about 7 s
MULTIPART_ALLOWANCE = 64 * 2**10  # a form's boundaries and part headers around a file at the limit
EXAMPLE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".bmp": "image/bmp", ".gif": "image/gif", ".tif": "image/tiff", ".tiff": "image/tiff"}
# request Content-Types /api/predict takes: the image types the page names, raw bytes, and forms
UPLOAD_TYPES = (
    "image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif",
    "application/octet-stream", "multipart/form-data",
)
# URL path -> (file in page/, content type); nothing else is served from the package
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
}
# on every answer, errors included. The page draws masks from data: URLs and the upload from a
# blob: URL; nothing may frame it (clickjacking) or load it as another type
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
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


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


def raw_json_error(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error response, for the answers sent below the ASGI app (connection closed after)."""
    body = error_body(message)
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in {**SECURITY_HEADERS, **(headers or {})}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def discard_body(receive, headers, limit: int) -> None:
    """Read and drop a request's body before its refusal is sent.

    A client still sending its upload when the server closes the connection gets a reset (a
    socket closed with unread data answers RST), and loses the answer: a 503 or 403 must be
    read to be useful. A body over ``limit`` is not read (413 and close, as asked), nor one
    the client holds back until it hears from us (``Expect: 100-continue``).
    """
    length = headers.get("content-length", "")
    if "100-continue" in headers.get("expect", "").lower() or not length.isdigit() or int(length) > limit:
        return

    async def drain():
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(drain(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        pass


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port: 'localhost:7860' -> 'localhost', '[::1]:80' -> '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str, extra_names: frozenset[str]) -> bool:
    """Whether a ``Host`` header names this server, not a name rebound to it.

    DNS rebinding needs a domain name: an attacker's page at evil.example, re-resolved to
    127.0.0.1, sends ``Host: evil.example``. So an IP address and ``localhost`` are accepted,
    and other names only when given with ``--allow-host``.
    """
    name = host_name(host_header)
    if name == "localhost" or name in extra_names:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


# --- the transport: uvicorn's h11 protocol with a header deadline, a connection cap, JSON errors


def _guarded_http_class():
    """:class:`GuardedHttp`, built on first use so that importing this module does not import uvicorn."""
    import h11
    from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # 16 kB; uvicorn takes it from here too
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RecordingConnection(h11.Connection):
        """h11's connection, keeping the protocol error it raised (uvicorn drops it)."""

        refused: h11.RemoteProtocolError | None = None

        def next_event(self):
            try:
                return super().next_event()
            except h11.RemoteProtocolError as err:
                self.refused = err
                raise

    class GuardedHttp(H11Protocol):
        """uvicorn's HTTP/1.1 protocol plus a deadline for each request's headers, a connection cap
        and JSON for the errors answered here (400 malformed or cut short, 431 headers too large, 408, 503)."""

        header_timeout = HEADER_TIMEOUT_S
        max_connections = MAX_CONNECTIONS

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.max_header_bytes = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
            self.conn = RecordingConnection(h11.SERVER, self.max_header_bytes)
            self._header_deadline: asyncio.TimerHandle | None = None
            self._received = False
            self._head_bytes = 0  # bytes of the current request's line and headers so far
            self._head_tail = b""  # the last 3 of them, to find a terminator split between reads

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > self.max_connections:
                self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "the server has too many open connections; try again shortly",
                             {"Retry-After": "5"})
                return
            self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            self._received = True
            if self.conn.their_state is h11.IDLE and self._head_too_large(data):
                self._refuse_large_head()
                return
            super().data_received(data)
            # the headers are complete once the client has left IDLE (SEND_BODY, DONE or ERROR)
            if self.conn.their_state is not h11.IDLE:
                self._disarm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._received = False
                self._head_bytes, self._head_tail = 0, b""
                self._arm_header_deadline()

        def _head_too_large(self, data: bytes) -> bool:
            """Whether the request's head passes the limit with ``data``. h11 checks its limit only
            while a head is incomplete, so one that arrives whole in a single read would pass."""
            seen = self._head_tail + data
            end = seen.find(b"\r\n\r\n")
            head = len(data) if end < 0 else end + 4 - len(self._head_tail)
            self._head_bytes += head
            self._head_tail = seen[-3:] if end < 0 else b""
            return self._head_bytes > self.max_header_bytes

        def connection_lost(self, exc) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def eof_received(self) -> bool | None:
            # a client that half-closes before its body is complete can still read: tell it so,
            # instead of the reset uvicorn would leave it (the app sees a disconnect, runs nothing)
            if self.cycle is not None and not self.cycle.response_started and self.conn.their_state is h11.SEND_BODY:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
                self._refuse(400, "the connection was closed before the body reached its Content-Length; "
                                  "send the whole file")
                return True
            return super().eof_received()

        def send_400_response(self, msg: str) -> None:
            err = self.conn.refused
            if err is not None and err.error_status_hint == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
                self._refuse_large_head()
            else:
                reason = f" ({err})" if err is not None and str(err) else ""
                self._refuse(400, f"malformed HTTP request{reason}; check the request line and headers")

        def _refuse_large_head(self) -> None:
            limit = format_bytes(self.max_header_bytes)
            self._refuse(431, f"the request line and headers are larger than {limit}; send a shorter request")

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if self.transport.is_closing():
                return
            if not self._received:  # an idle connection (a browser's spare one): just close it
                self.transport.close()
                return
            self._refuse(408, f"the request headers took more than {self.header_timeout:g} s to arrive")

        def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            self._disarm_header_deadline()
            if not self.transport.is_closing():
                self.transport.write(raw_json_error(status, message, headers))
                self.transport.close()

    return GuardedHttp


# --- the app


class DemoServer:
    """The model, the limits, the Starlette app and the uvicorn server on one listening socket.

    Use :func:`make_server` to build one; :meth:`serve_forever` serves (in a thread for
    tests), :meth:`shutdown` stops serving, :meth:`server_close` releases the socket and the
    prediction thread.
    """

    def __init__(
        self, sock: socket.socket, model, example: Path | None, max_upload_bytes: int, max_pixels: int, quiet: bool,
        token: str | None = None, queue_size: int = DEFAULT_QUEUE, allowed_hosts=(),
        header_timeout: float = HEADER_TIMEOUT_S,
    ):
        self.socket = sock
        self.server_address = sock.getsockname()
        self.model = model
        self.example = example
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.quiet = quiet
        self.token = token
        self.allowed_hosts = frozenset(name.lower() for name in allowed_hosts)
        self.page_files = read_page_files()
        from refinemask.engine.predict import Predictor

        # the model's own score threshold: the page's slider filters above it
        self.predictor = Predictor(model, device=next(model.parameters()).device)
        self.category_names = self.predictor.category_names
        self.jobs = PredictionQueue(lambda data: self.predict(data), queue_size)
        self.app = self._make_app()
        self._uvicorn = self._make_uvicorn(header_timeout)
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def info(self) -> dict:
        cfg = self.model.config
        heads = self.model.roi_heads
        stages = {"final": heads.mask_head.output_size}
        if heads.mask_head.coarse_size is not None:
            stages["coarse"] = heads.mask_head.coarse_size
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
            "queue": self.jobs.slots,
            "example": self.example is not None,
        }

    def predict(self, data: bytes) -> dict:
        """Upload bytes -> the JSON answer. Runs on the queue's one worker thread (decoding included,
        so one float image exists at a time), or directly in tests."""
        import time

        image = decode_upload(data, self.max_pixels, self.predictor.scaling)  # >8-bit images as in training
        start = time.perf_counter()
        prediction = predict_image(self.predictor, image)  # box-local masks: memory bounded by the boxes
        seconds = time.perf_counter() - start
        return encode_prediction(prediction, self.category_names, seconds, self.predictor.label_to_category)

    # serving

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, or SIGINT/SIGTERM when called on the main thread."""
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def request_stop(self, *_) -> None:
        """Begin a graceful stop (usable as a signal handler); a second call forces it."""
        if self._uvicorn.should_exit:
            self._uvicorn.force_exit = True
        self._uvicorn.should_exit = True

    def shutdown(self) -> None:
        """Stop serving and wait (at most the shutdown deadline) until :meth:`serve_forever` returns."""
        self.request_stop()
        self._stopped.wait(GRACEFUL_S + 2)

    def server_close(self) -> bool:
        """Close the socket and the prediction queue; False when a running prediction was abandoned."""
        self.socket.close()
        return self.jobs.close(ABANDON_S)

    def _make_uvicorn(self, header_timeout: float):
        import uvicorn

        http = type("GuardedHttp", (_guarded_http_class(),), {"header_timeout": header_timeout})
        config = uvicorn.Config(
            self.app, http=http, loop="asyncio", ws="none", lifespan="off", interface="asgi3",
            backlog=BACKLOG, timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=GRACEFUL_S,
            server_header=False, proxy_headers=False, log_level="error" if self.quiet else "info",
            access_log=not self.quiet,
        )
        return uvicorn.Server(config)

    def _make_app(self):
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.middleware import Middleware
        from starlette.routing import Route

        routes = [Route(path, self._page) for path in PAGE_FILES]
        routes += [
            Route("/api/info", self._info),
            Route("/api/predict", self._predict, methods=["POST"]),
            Route("/example", self._example),
        ]
        handlers = {HTTPException: self._http_exception, Exception: self._crash}
        return Starlette(routes=routes, exception_handlers=handlers, middleware=[Middleware(_Guard, server=self)])

    # endpoints (async: they run on the event loop; the model runs on the queue's thread)

    async def _page(self, request):
        name, kind = PAGE_FILES[request.url.path]
        return respond(self.page_files[name], kind)

    async def _info(self, request):
        return json_response(HTTPStatus.OK, self.info())

    async def _example(self, request):
        if self.example is None:
            return json_error(HTTPStatus.NOT_FOUND, "this server has no example image; start it with --example IMAGE")
        kind = EXAMPLE_TYPES.get(self.example.suffix.lower(), "application/octet-stream")
        return respond(self.example.read_bytes(), kind)

    async def _predict(self, request):
        from starlette.requests import ClientDisconnect

        try:
            self._check_upload_headers(request.headers)
        except UploadError as err:
            await discard_body(request.receive, request.headers, self.max_upload_bytes + MULTIPART_ALLOWANCE)
            return json_error(err.status, err.message)
        if not self.jobs.admit():
            seconds = self.jobs.retry_after()
            await discard_body(request.receive, request.headers, self.max_upload_bytes + MULTIPART_ALLOWANCE)
            return json_error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the server is busy ({self.jobs.slots} uploads in hand); try again in {seconds} s",
                {"Retry-After": str(seconds)},
            )
        try:
            try:
                body = await asyncio.wait_for(request.body(), BODY_TIMEOUT_S)
            except asyncio.TimeoutError:
                return json_error(HTTPStatus.REQUEST_TIMEOUT, f"the upload took more than {BODY_TIMEOUT_S:g} s to arrive",
                                  {"Connection": "close"})
            except ClientDisconnect:
                return json_error(HTTPStatus.BAD_REQUEST, "the client closed the connection before the upload was complete")
            data = await self._file_in(request, body)
            return json_response(HTTPStatus.OK, await self.jobs.run(data))
        except UploadError as err:
            return json_error(err.status, err.message)
        except QueueClosed:
            return json_error(HTTPStatus.SERVICE_UNAVAILABLE, "the server is stopping", {"Connection": "close"})
        except Exception as err:  # noqa: BLE001 - keep serving; tell the page what happened
            return json_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the model failed on this image: {type(err).__name__}: {err}")
        finally:
            self.jobs.release()

    def _check_upload_headers(self, headers) -> None:
        """Content-Type and Content-Length of an upload, before its body is read (raises UploadError)."""
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind not in UPLOAD_TYPES:
            shown = f"Content-Type {kind}" if kind else "no Content-Type"
            raise UploadError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"the upload has {shown}; send the file as a form (curl -F file=@image.jpg) "
                "or its bytes as image/jpeg, image/png, image/webp, image/bmp, image/tiff, image/gif "
                "or application/octet-stream",
            )
        length = headers.get("content-length")
        if length is None:
            raise UploadError(HTTPStatus.LENGTH_REQUIRED, "the upload needs a Content-Length header")
        size = int(length)  # uvicorn (h11) has refused one that is not a number
        limit = self.max_upload_bytes
        if size > limit + (MULTIPART_ALLOWANCE if kind == "multipart/form-data" else 0):
            # answered before the body is read (and before any 100 Continue)
            raise UploadError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the file is {format_bytes(size)}, more than the limit of {format_bytes(limit)}; shrink it first",
            )

    async def _file_in(self, request, body: bytes) -> bytes:
        """The image bytes of an upload: the body itself, or a form's ``file`` field (else its one file)."""
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return body
        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        async def replay():  # the body is read already (under the deadline); parse it from memory
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
        try:
            files = [value for key, value in form.multi_items() if isinstance(value, UploadFile)]
            named = form.get("file")
            upload = named if isinstance(named, UploadFile) else (files[0] if files else None)
            if upload is None:
                raise UploadError(HTTPStatus.BAD_REQUEST, "the form has no file; send the image as its 'file' field "
                                  "(curl -F file=@image.jpg)")
            if upload.size is not None and upload.size > self.max_upload_bytes:
                raise UploadError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the file is {format_bytes(upload.size)}, more than the limit of "
                    f"{format_bytes(self.max_upload_bytes)}; shrink it first",
                )
            return await upload.read()
        finally:
            await form.close()

    async def _http_exception(self, request, exc):
        if exc.status_code == HTTPStatus.NOT_FOUND:
            path = request.url.path
            if request.method == "POST":
                return json_error(exc.status_code, f"no such endpoint: {path}; upload to /api/predict")
            return json_error(exc.status_code, f"no such page: {path}")
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = (exc.headers or {}).get("Allow", "GET, HEAD")
            return json_error(exc.status_code, f"{request.method} is not allowed on {request.url.path}; use {allowed}",
                              exc.headers)
        return json_error(exc.status_code, str(exc.detail), exc.headers)

    async def _crash(self, request, exc):
        return json_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the server failed: {type(exc).__name__}: {exc}")


class _Guard:
    """ASGI middleware before every route: Host, then Origin on posts, then the token on the API."""

    def __init__(self, app, server: DemoServer):
        self.app = app
        self.server = server

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = guard(scope, self.server.allowed_hosts, self.server.token)
            if refusal is not None:
                status, message, headers = refusal
                request_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                limit = self.server.max_upload_bytes + MULTIPART_ALLOWANCE
                await discard_body(receive, request_headers, limit)
                await json_error(status, message, headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard(scope: dict, allowed_hosts: frozenset[str], token: str | None) -> tuple[int, str, dict] | None:
    """(status, message, headers) of the refusal of a request, or None to serve it."""
    headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
    host = headers.get("host", "")
    if not host_allowed(host, allowed_hosts):
        return (HTTPStatus.BAD_REQUEST,
                f"Host {host!r} is not a name of this server; open it by its address (http://127.0.0.1:PORT/), "
                "or start it with --allow-host NAME", {})
    if scope["method"] not in ("GET", "HEAD"):
        # browsers send Origin with every cross-origin and every form POST: only the page's own may post
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"{scope.get('scheme', 'http')}://{host}".lower():
            return HTTPStatus.FORBIDDEN, f"posts from {origin} are refused; use the page this server serves", {}
        if headers.get("sec-fetch-site") == "cross-site":
            return HTTPStatus.FORBIDDEN, "cross-site posts are refused; use the page this server serves", {}
    if token is not None and (scope["path"].startswith("/api/") or scope["path"] == "/example"):
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return (HTTPStatus.UNAUTHORIZED,
                    "this server needs its token: open the address it printed (…/#token=…), "
                    "or send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})
    return None


def respond(body: bytes, content_type: str, status: int = HTTPStatus.OK, headers: dict | None = None):
    from starlette.responses import Response

    return Response(body, status_code=int(status), media_type=content_type,
                    headers={**SECURITY_HEADERS, **(headers or {})})


def json_response(status: int, payload: dict, headers: dict | None = None):
    return respond(json.dumps(payload).encode("utf-8"), "application/json", status, headers)


def json_error(status: int, message: str, headers: dict | None = None):
    return respond(error_body(message), "application/json", status, headers)


def make_server(
    model,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    example: str | Path | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    quiet: bool = False,
    token: str | None = None,
    queue_size: int = DEFAULT_QUEUE,
    allowed_hosts=(),
    header_timeout: float = HEADER_TIMEOUT_S,
) -> DemoServer:
    """A :class:`DemoServer` listening on ``host:port`` (port 0: any free port), not yet serving.

    Call ``serve_forever()`` on it (in a thread for tests), ``shutdown()`` and
    ``server_close()`` to stop.
    """
    if example is not None:
        example = Path(example)
        if not example.is_file():
            raise RefineMaskError(f"example image not found: {example}")
        decode_upload(example.read_bytes(), max_pixels)  # refuse a bad example now, not on the page
    if queue_size < 1:
        raise RefineMaskError(f"--queue must be at least 1, got {queue_size}")
    model.eval()
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as err:
        raise RefineMaskError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port") from None
    try:
        return DemoServer(sock, model, example, max_upload_bytes, max_pixels, quiet, token, queue_size,
                          allowed_hosts, header_timeout)
    except BaseException:
        sock.close()
        raise
