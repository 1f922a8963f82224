"""A browser demo: upload an image, see its masks (``refinemask serve --weights W``).

Shapes: N detections of one image; H x W the image size.

A Starlette app on uvicorn (:mod:`.server`) and one page of HTML, CSS and JavaScript
(``page/``, shipped as package data). Uploads go through a bounded queue to one worker thread
(:mod:`.jobs`), which decodes each and runs the model once
(:class:`~refinemask.engine.predict.Predictor` with ``coarse=True``, see :mod:`.prediction`);
it returns every detection above the model's own
score threshold, with both mask stages of a RefineMask model: the final 112 x 112 masks and the
coarse 28 x 28 ones (the stage before the boundary refinement), each pasted into the image. The
page filters by score, shows either stage or both side by side, and draws masks filled or as
outlines (each mask's edge in its colour over a dark halo, which shows a mask on an object of
its own colour), all without asking the server again.

Endpoints:
    GET  /             the page; ``/?example=1&threshold=0.3&mode=compare&draw=outline`` loads
                       the example image (when the server has one) with those settings
                       (mode: final, coarse or compare; draw: fill or outline)
    GET  /static/style.css, /static/app.js   the page's style and script
    GET  /api/info     the model, its classes and the upload limits (JSON)
    POST /api/predict  body: a multipart form with the image as its ``file`` field, or the
                       file's bytes (Content-Type image/jpeg, png, webp, bmp, tiff, gif or
                       application/octet-stream) -> detections (JSON, see
                       :func:`~refinemask.serve.prediction.encode_prediction`)
    GET  /example      the example image given with ``--example``

GET routes answer HEAD too. Every error is JSON ``{"error": "..."}``, those of the transport
included: 400 (malformed request, empty body, not an image, a ``Host`` that is not an address,
localhost or an ``--allow-host`` name), 401 (``--token`` set, no bearer token), 403 (a post
from another origin), 404, 405, 408 (headers or body too slow), 411 (no Content-Length), 413
(more than ``max_upload_bytes`` or ``max_pixels``), 415 (a content type not listed above), 422
(an image too thin for the test resize), 431 (headers over 16 kB), 503 with ``Retry-After``
(the queue is full, or too many connections). Every answer carries a Content-Security-Policy
with ``frame-ancestors 'none'``, ``X-Frame-Options: DENY`` and ``nosniff``.
"""
from refinemask.serve.prediction import MAX_PIXELS, UploadError, decode_upload, encode_prediction
from refinemask.serve.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_QUEUE,
    MAX_UPLOAD_BYTES,
    DemoServer,
    format_bytes,
    is_loopback,
    make_server,
)

__all__ = [
    "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_QUEUE", "MAX_PIXELS", "MAX_UPLOAD_BYTES", "DemoServer", "UploadError",
    "decode_upload", "encode_prediction", "format_bytes", "is_loopback", "make_server",
]
