"""A browser demo: upload an image, see its masks (``refinemask serve --weights W``).

Shapes: N detections of one image; H x W the image size.

A plain ``http.server`` (:mod:`.server`) and one page of HTML, CSS and JavaScript (``page/``,
shipped as package data), so the demo needs nothing beyond the package's own dependencies.
The server runs the model once per upload (:class:`~refinemask.engine.predict.Predictor` with
``coarse=True``, see :mod:`.prediction`) and returns every detection above the model's own
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
    POST /api/predict  body: the image file's bytes -> detections (JSON, see
                       :func:`~refinemask.serve.prediction.encode_prediction`)
    GET  /example      the example image given with ``--example``

Every error is JSON ``{"error": "..."}``: 400 (empty body, not an image), 404, 411 (no
Content-Length), 413 (more than ``max_upload_bytes`` or ``max_pixels``).
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
