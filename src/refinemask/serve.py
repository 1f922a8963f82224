"""A browser demo: upload an image, see its masks (``refinemask serve --weights W``).

Shapes: N detections of one image; H x W the image size.

A plain ``http.server`` and one page of HTML and JavaScript, so the demo needs nothing beyond
the package's own dependencies. The server runs the model once per upload and returns every
detection above the model's own score threshold, with both mask stages of a RefineMask model:
the final 112 x 112 masks and the coarse 28 x 28 ones (the stage before the boundary
refinement), each pasted into the image. The page filters by score, shows either stage or both
side by side, and draws masks filled or as outlines (each mask's edge in its colour over a
dark halo, which shows a mask on an object of its own colour), all without asking the server
again.

Endpoints:
    GET  /             the page; ``/?example=1&threshold=0.3&mode=compare&draw=outline`` loads
                       the example image (when the server has one) with those settings
                       (mode: final, coarse or compare; draw: fill or outline)
    GET  /api/info     the model, its classes and the upload limits (JSON)
    POST /api/predict  body: the image file's bytes -> detections (JSON, see :func:`encode_prediction`)
    GET  /example      the example image given with ``--example``

Every error is JSON ``{"error": "..."}``: 400 (empty body, not an image), 404, 411 (no
Content-Length), 413 (more than ``max_upload_bytes`` or ``max_pixels``).
"""
from __future__ import annotations

import base64
import io
import ipaddress
import json
import threading
import time
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np

from refinemask.errors import RefineMaskError

if TYPE_CHECKING:
    import torch

# torch is imported where it is used, so that `refinemask serve --help` answers at once

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_BYTES = 20 * 2**20  # 20 MB
MAX_PIXELS = 40_000_000  # 40 megapixels
EXAMPLE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".bmp": "image/bmp", ".gif": "image/gif"}


def format_bytes(size: int) -> str:
    """'20 MB', '3.4 MB', '512 kB': file sizes as people read them (MB = 2**20 bytes)."""
    if size >= 2**20:
        return f"{size / 2**20:.3g} MB"
    return f"{size / 2**10:.3g} kB"


class UploadError(Exception):
    """An upload the server refuses: an HTTP status and a message for the page."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- model side ----------------------------------------------------------------------------------


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Uploaded file bytes -> float32 (3, H, W) RGB in [0, 1], EXIF orientation applied.

    Raises :class:`UploadError` 400 for anything that is not a readable image and 413 for an
    image of more than ``max_pixels`` (checked on the header, before decoding).
    """
    import torch
    from PIL import Image, ImageOps

    from refinemask.data.images import image_to_array

    if not data:
        raise UploadError(HTTPStatus.BAD_REQUEST, "the upload is empty; choose an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise UploadError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the image has more pixels than the limit of {max_pixels / 1e6:.3g} megapixels; shrink it first",
        ) from None
    except Exception:  # noqa: BLE001 - PIL raises many types for non-images
        raise UploadError(
            HTTPStatus.BAD_REQUEST, "the upload is not an image (JPEG, PNG, WebP, BMP, TIFF, ...); choose an image file"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise UploadError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the image is {width}x{height} = {width * height / 1e6:.3g} megapixels, more than the limit of "
            f"{max_pixels / 1e6:.3g}; shrink it first",
        )
    try:
        image.load()
        array = image_to_array(ImageOps.exif_transpose(image))
    except Exception as err:  # noqa: BLE001 - truncated or corrupt files fail while decoding
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UploadError(HTTPStatus.BAD_REQUEST, f"the image cannot be decoded ({reason}); is the file complete?") from None
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def predict_with_stages(model, image: torch.Tensor, mask_threshold: float = 0.5) -> dict:
    """One image through the model, keeping RefineMask's coarse stage as well.

    The steps of the model's own eval forward (transform, backbone, RPN, RoI heads, paste), plus
    :meth:`~refinemask.modeling.roi_heads.MaskRoIHeads.predict_masks` with ``coarse=True`` on
    the same detections.

    Args:
        image: float (3, H, W) in [0, 1].

    Returns:
        ``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,), ``masks`` bool (N, H, W) from the
        final stage, and ``coarse_masks`` bool (N, H, W) from the 28 x 28 stage, or None for a
        Mask R-CNN model.
    """
    import torch

    from refinemask.modeling.ops import paste_masks

    model.eval()
    height, width = image.shape[-2:]
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        coarse = None
        if model.roi_heads.is_refinemask:
            d = detections[0]
            coarse = model.roi_heads.predict_masks(features, [d["boxes"]], [d["labels"]], coarse=True)[0]
        result = model.transform.postprocess(detections, images.image_sizes, [(height, width)])[0]
    out = {
        "boxes": result["boxes"].cpu(),
        "labels": result["labels"].cpu(),
        "scores": result["scores"].cpu(),
        "masks": (result["masks"][:, 0] >= mask_threshold).cpu(),
        "coarse_masks": None,
    }
    if coarse is not None:
        with torch.no_grad():
            pasted = paste_masks(coarse, result["boxes"], int(height), int(width))
        out["coarse_masks"] = (pasted[:, 0] >= mask_threshold).cpu()
    return out


def _mask_png(mask: np.ndarray, colour: tuple[int, int, int]) -> dict:
    """A bool (H, W) mask as the PNG of its tight crop: ``colour`` where set, transparent elsewhere."""
    from PIL import Image

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return {"x": 0, "y": 0, "area": 0, "png": None}
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = mask[y0:y1, x0:x1]
    rgba = np.zeros((*crop.shape, 4), dtype=np.uint8)
    rgba[crop] = (*colour, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", optimize=False)
    return {"x": x0, "y": y0, "area": int(crop.sum()), "png": base64.b64encode(buffer.getvalue()).decode("ascii")}


def encode_prediction(prediction: dict, category_names: list[str], seconds: float) -> dict:
    """The JSON answer of ``POST /api/predict``.

    ``{"width", "height", "seconds", "stages": ["final"] or ["final", "coarse"], "detections":
    [{"label", "name", "score", "box": [x0, y0, x1, y1], "color": [r, g, b], "masks": {"final":
    {"x", "y", "area", "png"}, "coarse": {...}}}]}``: each mask is the base64 PNG of its tight
    crop at (x, y), coloured where the mask is set and transparent elsewhere (``png`` is null
    for an empty mask).
    """
    from refinemask.engine.predict import PALETTE

    height, width = prediction["masks"].shape[-2:]
    stages = {"final": prediction["masks"].numpy()}
    if prediction["coarse_masks"] is not None:
        stages["coarse"] = prediction["coarse_masks"].numpy()
    detections = []
    for i, (box, label, score) in enumerate(zip(
        prediction["boxes"].tolist(), prediction["labels"].tolist(), prediction["scores"].tolist()
    )):
        colour = PALETTE[(label - 1) % len(PALETTE)]
        name = category_names[label - 1] if 0 < label <= len(category_names) else str(label)
        detections.append({
            "label": label,
            "name": name,
            "score": score,
            "box": [round(v, 2) for v in box],
            "color": list(colour),
            "masks": {stage: _mask_png(masks[i], colour) for stage, masks in stages.items()},
        })
    return {
        "width": int(width),
        "height": int(height),
        "seconds": round(seconds, 3),
        "stages": list(stages),
        "detections": detections,
    }


# --- HTTP side ------------------------------------------------------------------------------------


class DemoServer(ThreadingHTTPServer):
    """The HTTP server; holds the model, the limits and the optional example image.

    Use :func:`make_server` to build one.
    """

    daemon_threads = True

    def __init__(self, address, model, example: Path | None, max_upload_bytes: int, max_pixels: int, quiet: bool):
        super().__init__(address, DemoHandler)
        self.model = model
        self.example = example
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.quiet = quiet
        self.category_names = list(getattr(model, "category_names", None) or [
            str(i) for i in range(1, model.config.num_classes + 1)
        ])
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
        image = decode_upload(data, self.max_pixels)
        with self.model_lock:
            start = time.perf_counter()
            prediction = predict_with_stages(self.model, image)
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
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode("utf-8"), "text/html; charset=utf-8")
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


# --- the page -------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>RefineMask demo</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
  h1 { margin-bottom: 0.2rem; }
  #model { color: #555; margin-top: 0; }
  #controls { display: flex; flex-wrap: wrap; gap: 1rem 2rem; align-items: center; margin: 1rem 0; }
  fieldset { border: 1px solid #ccc; padding: 0.2rem 0.8rem; }
  #error { color: #b00020; font-weight: 600; min-height: 1.2em; }
  #status { color: #555; min-height: 1.2em; }
  canvas { max-width: 100%; height: auto; border: 1px solid #ccc; display: block; }
  canvas.enlarged { image-rendering: pixelated; }
  #views { display: grid; gap: 1rem; }
  #views.compare { grid-template-columns: 1fr 1fr; }
  #views.compare canvas.enlarged { width: 100%; }
  figure { margin: 0; }
  figcaption { font-weight: 600; margin-bottom: 0.3rem; }
  #detections { columns: 3 14rem; font-size: 0.9rem; }
  .swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; vertical-align: -0.05em; }
</style>
</head>
<body data-state="idle">
<h1>RefineMask</h1>
<p id="model">loading the model description...</p>
<div id="controls">
  <label>Image <input type="file" id="file" accept="image/*"></label>
  <button id="example" type="button" hidden>Try the example image</button>
  <label>Score &ge; <input type="range" id="threshold" min="0" max="1" step="0.01" value="0.5">
    <output id="threshold-value">0.50</output></label>
  <fieldset id="stage">
    <legend>Masks</legend>
    <label><input type="radio" name="stage" value="final" checked> final <span id="final-size"></span></label>
    <label><input type="radio" name="stage" value="coarse"> coarse <span id="coarse-size"></span></label>
    <label><input type="radio" name="stage" value="compare"> side by side</label>
  </fieldset>
  <fieldset id="draw">
    <legend>Draw</legend>
    <label><input type="radio" name="draw" value="fill" checked> filled</label>
    <label><input type="radio" name="draw" value="outline"> outlines</label>
  </fieldset>
</div>
<p id="error" role="alert"></p>
<p id="status"></p>
<p id="summary"></p>
<div id="views">
  <figure id="figure-final"><figcaption id="caption-final" hidden></figcaption><canvas id="view-final" width="0" height="0"></canvas></figure>
  <figure id="figure-coarse" hidden><figcaption id="caption-coarse" hidden></figcaption><canvas id="view-coarse" width="0" height="0"></canvas></figure>
</div>
<ol id="detections"></ol>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const state = { info: null, result: null, image: null, masks: {}, outlines: {} };
const HALO = [20, 20, 20];  // the ring just outside each outline, as in `refinemask predict`'s overlays

function showError(message) {
  $("error").textContent = message;
  $("status").textContent = "";
  document.body.dataset.state = "error";
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("cannot decode"));
    image.src = url;
  });
}

async function decodeMasks(result, stage) {
  return Promise.all(result.detections.map(async (d) => {
    const mask = d.masks[stage];
    if (!mask || !mask.png) return null;
    return { x: mask.x, y: mask.y, image: await loadImage("data:image/png;base64," + mask.png) };
  }));
}

// max over a (2r+1) x (2r+1) square of a W x H 0/1 map, `beyond` for pixels past its edges
function dilate(map, W, H, r, beyond) {
  const rows = new Uint8Array(W * H), out = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    let v = 0;
    for (let d = -r; d <= r && !v; d++) v = (x + d < 0 || x + d >= W) ? beyond : map[y * W + x + d];
    rows[y * W + x] = v;
  }
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    let v = 0;
    for (let d = -r; d <= r && !v; d++) v = (y + d < 0 || y + d >= H) ? beyond : rows[(y + d) * W + x];
    out[y * W + x] = v;
  }
  return out;
}

// a mask's outline (its pixels within `width` of the outside, in its colour) and halo (the
// pixels outside it within max(1, width / 2)), the same pixels as
// refinemask.engine.predict.mask_edges
function outlineOf(mask, colour, width) {
  if (!mask) return null;
  const pad = Math.max(1, Math.floor(width / 2));
  const W = mask.image.width + 2 * pad, H = mask.image.height + 2 * pad;
  const canvas = document.createElement("canvas");
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(mask.image, pad, pad);
  const pixels = ctx.getImageData(0, 0, W, H);
  const px = pixels.data;
  const inside = new Uint8Array(W * H), outside = new Uint8Array(W * H);
  for (let k = 0; k < W * H; k++) { inside[k] = px[4 * k + 3] > 0 ? 1 : 0; outside[k] = 1 - inside[k]; }
  const nearOutside = dilate(outside, W, H, width, 1), nearInside = dilate(inside, W, H, pad, 0);
  for (let k = 0; k < W * H; k++) {
    const rgb = inside[k] && nearOutside[k] ? colour : (!inside[k] && nearInside[k] ? HALO : null);
    px[4 * k] = rgb ? rgb[0] : 0;
    px[4 * k + 1] = rgb ? rgb[1] : 0;
    px[4 * k + 2] = rgb ? rgb[2] : 0;
    px[4 * k + 3] = rgb ? 255 : 0;
  }
  ctx.putImageData(pixels, 0, 0);
  return { x: mask.x - pad, y: mask.y - pad, image: canvas };
}

function lineWidth(result) {
  return Math.max(1, Math.round(Math.max(result.width, result.height) / 400));
}

function currentView() {
  const chosen = document.querySelector("input[name=stage]:checked").value;
  return state.result && (chosen === "final" || state.result.stages.includes("coarse")) ? chosen : "final";
}

function currentDraw() {
  return document.querySelector("input[name=draw]:checked").value;
}

// the image and the shown detections' masks of one stage on `canvas`; returns the number of
// mask pixels on it, read back from the canvas (what the user actually sees), or -1 when too big
function drawStage(canvas, stage, shown, draw) {
  const result = state.result;
  canvas.width = result.width;
  canvas.height = result.height;
  const ctx = canvas.getContext("2d");
  if (state.image) {
    ctx.drawImage(state.image, 0, 0, result.width, result.height);
  } else {
    ctx.fillStyle = "#888";
    ctx.fillRect(0, 0, result.width, result.height);
  }
  const overlay = document.createElement("canvas");
  overlay.width = result.width;
  overlay.height = result.height;
  const octx = overlay.getContext("2d");
  const layers = draw === "outline" ? state.outlines[stage] : state.masks[stage];
  for (const [, i] of shown) {
    const layer = layers[i];
    if (layer) octx.drawImage(layer.image, layer.x, layer.y);
  }
  // fills are see-through so the object stays visible; outlines are drawn solid
  ctx.globalAlpha = draw === "outline" ? 1 : 0.55;
  ctx.drawImage(overlay, 0, 0);
  ctx.globalAlpha = 1;
  const line = lineWidth(result);
  ctx.lineWidth = line;
  ctx.font = `${6 * line + 4}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const [d] of shown) {
    const colour = `rgb(${d.color.join(",")})`;
    const [x0, y0, x1, y1] = d.box;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    // the label on a tag of the class colour, above the box (inside it at the image's top), as
    // in `refinemask predict`'s overlays: readable on any background
    const text = `${d.name} ${d.score.toFixed(2)}`;
    const tagHeight = 6 * line + 6;
    const tagY = y0 >= tagHeight ? y0 - tagHeight : y0;
    ctx.fillStyle = colour;
    ctx.fillRect(x0, tagY, ctx.measureText(text).width + 2 * line, tagHeight);
    const [r, g, b] = d.color;
    ctx.fillStyle = 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff";
    ctx.fillText(text, x0 + line, tagY + tagHeight - 1);
  }
  if (result.width * result.height > 16e6) return -1;
  const alpha = octx.getImageData(0, 0, result.width, result.height).data;
  let painted = 0;
  for (let k = 3; k < alpha.length; k += 4) if (alpha[k] > 0) painted++;
  return painted;
}

function render() {
  const result = state.result;
  if (!result) return;
  const threshold = parseFloat($("threshold").value);
  const view = currentView();
  const draw = currentDraw();
  const stages = view === "compare" ? ["final", "coarse"] : [view];
  const shown = result.detections.map((d, i) => [d, i]).filter(([d]) => d.score >= threshold);
  // small images are shown enlarged, pixels kept sharp, so that mask edges can be compared
  const enlarged = result.width < 480;
  $("views").classList.toggle("compare", view === "compare");
  const painted = {};
  for (const stage of ["final", "coarse"]) {
    const visible = stages.includes(stage);
    $(`figure-${stage}`).hidden = !visible;
    const canvas = $(`view-${stage}`);
    if (!visible) { canvas.width = 0; canvas.height = 0; continue; }
    canvas.classList.toggle("enlarged", enlarged);
    canvas.style.width = enlarged && view !== "compare" ? "480px" : "";
    const size = state.info ? state.info.mask_sizes[stage] : "";
    const caption = $(`caption-${stage}`);
    caption.textContent = `${stage} ${size}x${size} masks`;
    caption.hidden = view !== "compare";
    painted[stage] = drawStage(canvas, stage, shown, draw);
  }
  const list = $("detections");
  list.replaceChildren();
  for (const [d] of shown) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${d.color.join(",")})`;
    item.append(swatch, `${d.name} ${d.score.toFixed(2)}`);
    list.append(item);
  }
  const sizes = stages.map((stage) => {
    const size = state.info ? state.info.mask_sizes[stage] : "";
    return `${stage} ${size}x${size}`;
  }).join(" beside ");
  const summary = $("summary");
  summary.textContent = `${shown.length} of ${result.detections.length} detections with score >= ` +
    `${threshold.toFixed(2)}; ${sizes} masks${draw === "outline" ? ", outlined" : ""}; ` +
    `${result.width}x${result.height} image, ${result.seconds.toFixed(2)} s`;
  Object.assign(summary.dataset, {
    shown: shown.length, total: result.detections.length, stage: view, draw: draw,
    threshold: threshold.toFixed(2), painted: stages.length === 1 ? painted[view] : "",
    paintedFinal: painted.final === undefined ? "" : painted.final,
    paintedCoarse: painted.coarse === undefined ? "" : painted.coarse,
  });
  document.body.dataset.state = "done";
}

async function upload(blob, name) {
  $("error").textContent = "";
  if (state.info && blob.size > state.info.max_upload_bytes) {
    showError(`${name} is ${(blob.size / 2 ** 20).toFixed(1)} MB, more than the limit of ` +
      `${state.info.max_upload_bytes / 2 ** 20} MB; shrink it first`);
    return;
  }
  document.body.dataset.state = "busy";
  $("status").textContent = `segmenting ${name}...`;
  let response;
  try {
    response = await fetch("/api/predict", {
      method: "POST",
      headers: { "Content-Type": blob.type || "application/octet-stream" },
      body: blob,
    });
  } catch (err) {
    showError(`the upload failed: ${err.message}`);
    return;
  }
  const answer = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) {
    showError(answer.error || `the server answered ${response.status}`);
    return;
  }
  const url = URL.createObjectURL(blob);
  try {
    state.image = await loadImage(url);
  } catch (err) {
    state.image = null;  // e.g. TIFF: the server reads it, the browser cannot show it
  }
  state.masks = {};
  state.outlines = {};
  const width = lineWidth(answer);
  for (const stage of answer.stages) {
    state.masks[stage] = await decodeMasks(answer, stage);
    state.outlines[stage] = state.masks[stage].map((mask, i) => outlineOf(mask, answer.detections[i].color, width));
  }
  state.result = answer;
  $("status").textContent = state.image ? name : `${name} (the browser cannot show this format; masks on grey)`;
  render();
}

async function start() {
  const params = new URLSearchParams(window.location.search);
  if (params.has("threshold")) $("threshold").value = params.get("threshold");
  $("threshold-value").textContent = parseFloat($("threshold").value).toFixed(2);
  const mode = params.get("mode");
  if (mode === "coarse" || mode === "compare") document.querySelector(`input[name=stage][value=${mode}]`).checked = true;
  if (params.get("draw") === "outline") document.querySelector("input[name=draw][value=outline]").checked = true;
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = parseFloat($("threshold").value).toFixed(2);
    render();
  });
  for (const radio of document.querySelectorAll("input[name=stage], input[name=draw]")) radio.addEventListener("change", render);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) upload(file, file.name);
  });
  const loadExample = async () => {
    const response = await fetch("/example");
    if (!response.ok) { showError("the server has no example image"); return; }
    await upload(await response.blob(), "the example image");
  };
  $("example").addEventListener("click", loadExample);
  try {
    state.info = await (await fetch("/api/info")).json();
  } catch (err) {
    showError(`cannot reach the server: ${err.message}`);
    return;
  }
  const m = state.info.model;
  $("model").textContent = `${m.mask_head === "refinemask" ? "RefineMask" : "Mask R-CNN"}, ${m.backbone}, ` +
    `${m.num_classes} classes; test size ${m.test_size[0]} (long side <= ${m.test_size[1]}); ` +
    `uploads up to ${state.info.max_upload_bytes / 2 ** 20} MB and ${state.info.max_pixels / 1e6} megapixels`;
  $("final-size").textContent = `${state.info.mask_sizes.final}x${state.info.mask_sizes.final}`;
  if (state.info.mask_sizes.coarse) {
    $("coarse-size").textContent = `${state.info.mask_sizes.coarse}x${state.info.mask_sizes.coarse}`;
  } else {
    document.querySelector("input[value=coarse]").disabled = true;
    document.querySelector("input[value=compare]").disabled = true;
    $("coarse-size").textContent = "(RefineMask models only)";
  }
  $("example").hidden = !state.info.example;
  if (params.has("example")) await loadExample();
}

start();
</script>
</body>
</html>
"""
