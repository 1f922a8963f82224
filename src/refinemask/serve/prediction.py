"""The model side of ``refinemask serve``: an uploaded file in, the page's JSON out.

Shapes: N detections of one image; H x W the image size.

:func:`decode_upload` checks and decodes the bytes, :func:`predict_image` runs the
:class:`~refinemask.engine.predict.Predictor` with ``coarse=True`` (RefineMask's coarse 28 x 28
stage beside the final masks) and box-local masks (memory: the image plus the boxes' windows,
not detections x pixels), and :func:`encode_prediction` turns its result into the JSON the page
draws (each mask the PNG of its tight crop).
"""
from __future__ import annotations

import base64
import io
import warnings
from http import HTTPStatus
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# torch is imported where it is used, so that `refinemask serve --help` answers at once

MAX_PIXELS = 40_000_000  # 40 megapixels
# the formats the page names; Pillow would otherwise try every plugin it has, EPS included
# (handed to Ghostscript where it is installed). JPEG covers phones' multi-picture (MPO) JPEGs.
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
FORMATS_SHOWN = "JPEG, PNG, WebP, BMP, TIFF or GIF"


class UploadError(Exception):
    """An upload the server refuses: an HTTP status and a message for the page."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS, scaling: dict | None = None) -> torch.Tensor:
    """Uploaded file bytes -> float32 (3, H, W) RGB in [0, 1], EXIF orientation applied.

    ``scaling``: how images of more than 8 bits are scaled (``scaling_options(model.config)``).

    Raises :class:`UploadError` 400 for anything that is not a readable image and 413 for an
    image of more than ``max_pixels`` (checked on the header, before decoding).
    """
    from PIL import Image, ImageOps

    from refinemask.data.images import as_image_tensor

    if not data:
        raise UploadError(HTTPStatus.BAD_REQUEST, "the upload is empty; choose an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    except Image.DecompressionBombError:
        raise UploadError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the image has more pixels than the limit of {max_pixels / 1e6:.3g} megapixels; shrink it first",
        ) from None
    except Exception:  # noqa: BLE001 - PIL raises many types for non-images
        raise UploadError(
            HTTPStatus.BAD_REQUEST, f"the upload is not an image this server reads ({FORMATS_SHOWN}); choose one of those"
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
        return as_image_tensor(ImageOps.exif_transpose(image), **(scaling or {}))
    except Exception as err:  # noqa: BLE001 - truncated or corrupt files fail while decoding
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UploadError(HTTPStatus.BAD_REQUEST, f"the image cannot be decoded ({reason}); is the file complete?") from None


def predict_image(predictor, image: torch.Tensor) -> dict:
    """The page's prediction of a decoded (3, H, W) upload: final and coarse masks as ``MaskWindows``."""
    return predictor(image, coarse=True, masks="box")


def _mask_png(mask: np.ndarray, origin: tuple[int, int], colour: tuple[int, int, int]) -> dict:
    """A bool (h, w) mask window at ``origin`` (top, left) of the image as the PNG of its tight
    crop: ``colour`` where set, transparent elsewhere."""
    from PIL import Image

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return {"x": 0, "y": 0, "area": 0, "png": None}
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = mask[y0:y1, x0:x1]
    y0, x0 = y0 + int(origin[0]), x0 + int(origin[1])
    rgba = np.zeros((*crop.shape, 4), dtype=np.uint8)
    rgba[crop] = (*colour, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", optimize=False)
    return {"x": x0, "y": y0, "area": int(crop.sum()), "png": base64.b64encode(buffer.getvalue()).decode("ascii")}


def encode_prediction(
    prediction: dict, category_names: list[str], seconds: float, label_to_category: dict[int, int] | None = None
) -> dict:
    """The JSON answer of ``POST /api/predict``.

    ``label_to_category``: the model's label -> data-set category id (``Predictor.label_to_category``);
    without it ``category_id`` is the label.

    ``{"width", "height", "seconds", "stages": ["final"] or ["final", "coarse"], "detections":
    [{"label", "category_id", "name", "score", "box": [x0, y0, x1, y1], "color": [r, g, b], "masks": {"final":
    {"x", "y", "area", "png"}, "coarse": {...}}}]}``: each mask is the base64 PNG of its tight
    crop at (x, y), coloured where the mask is set and transparent elsewhere (``png`` is null
    for an empty mask).

    The masks may be bool (N, H, W) or box-local ``MaskWindows`` (``predictor(image,
    coarse=True, masks="box")``, which keeps a large upload's memory to its boxes).
    """
    from refinemask.data.categories import label_name
    from refinemask.overlay import PALETTE
    from refinemask.modeling.box_masks import window_masks

    height, width = prediction["masks"].shape[-2:]
    stages = {"final": window_masks(prediction["masks"])}
    if prediction["coarse_masks"] is not None:
        stages["coarse"] = window_masks(prediction["coarse_masks"])
    detections = []
    for i, (box, label, score) in enumerate(zip(
        prediction["boxes"].tolist(), prediction["labels"].tolist(), prediction["scores"].tolist()
    )):
        colour = PALETTE[(label - 1) % len(PALETTE)]
        name = label_name(label, category_names)
        detections.append({
            "label": label,
            "category_id": int((label_to_category or {}).get(label, label)),
            "name": name,
            "score": score,
            "box": [round(v, 2) for v in box],
            "color": list(colour),
            "masks": {
                stage: _mask_png(masks.masks[i].numpy(), masks.origins[i], colour) for stage, masks in stages.items()
            },
        })
    return {
        "width": int(width),
        "height": int(height),
        "seconds": round(seconds, 3),
        "stages": list(stages),
        "detections": detections,
    }
