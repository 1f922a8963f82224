"""labelme annotation folders: one ``.json`` per image.

Each file holds ``imagePath`` (relative to the json), ``imageWidth``, ``imageHeight`` and
``shapes``: ``{label, points, shape_type, group_id}``. Shape types:

* ``polygon``: the region;
* ``rectangle``: a box-only annotation (the two corners);
* ``circle``: centre and a point on the circle, as a 32-gon;
* ``mask`` (labelme 5.3+): a base64 PNG of the region between the two corner points;
* ``point``, ``line``, ``linestrip``: no region; left out and counted.

Shapes with the same label and the same ``group_id`` (not null) are one instance. Categories are
the labels, numbered 1, 2, ... in alphabetical order.
"""
from __future__ import annotations

import base64
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from refinemask.data.importers.common import CocoBuilder, Imported, image_size, relative_name
from refinemask.errors import RefineMaskError
from refinemask.jsonfile import read_json

CIRCLE_POINTS = 32


def read(source: Path) -> Imported:
    files = sorted(source.rglob("*.json")) if source.is_dir() else [source]
    documents = []
    for path in files:
        data = read_json(path, "labelme file")
        if not isinstance(data, dict) or "shapes" not in data or "imagePath" not in data:
            continue  # not a labelme file (a COCO json lying beside them, say)
        documents.append((path, data))
    if not documents:
        raise RefineMaskError(f"{source}: no labelme json (a file with 'shapes' and 'imagePath') found")

    images = [_image_path(path, data) for path, data in documents]
    image_root = Path(os.path.commonpath([str(p.resolve().parent) for p in images]))
    builder = CocoBuilder()
    labels = sorted({str(s.get("label")) for _, d in documents for s in d["shapes"] if isinstance(s, dict)})
    for label in labels:
        builder.category(label)
    for (path, data), image in zip(documents, images):
        width, height = data.get("imageWidth"), data.get("imageHeight")
        if not (isinstance(width, int) and isinstance(height, int)):
            width, height = image_size(image)
        image_id = builder.add_image(relative_name(image, image_root), width, height)
        for parts in _instances(data["shapes"], path):
            _add_instance(builder, image_id, parts, width, height, path)
    return Imported(builder, {"annotations": {im["id"] for im in builder.images}}, image_root)


def _image_path(path: Path, data: dict[str, Any]) -> Path:
    image = (path.parent / str(data["imagePath"]).replace("\\", "/")).resolve()
    if not image.is_file():
        candidate = path.parent / Path(str(data["imagePath"]).replace("\\", "/")).name
        if candidate.is_file():  # labelme keeps the path it was saved with; the image sits beside
            return candidate.resolve()
        raise RefineMaskError(
            f"{path}: image {data['imagePath']} not found; put the image where imagePath says "
            "(labelme's embedded imageData is not extracted)"
        )
    return image


def _instances(shapes: list[Any], path: Path) -> list[list[dict[str, Any]]]:
    """Shapes grouped into instances: one group per (label, group_id), a shape alone otherwise."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    alone: list[list[dict[str, Any]]] = []
    for number, shape in enumerate(shapes):
        if not isinstance(shape, dict) or "points" not in shape:
            raise RefineMaskError(f"{path}: shape {number} has no points")
        if shape.get("group_id") is None:
            alone.append([shape])
        else:
            groups.setdefault((str(shape.get("label")), shape["group_id"]), []).append(shape)
    return alone + list(groups.values())


def _add_instance(builder: CocoBuilder, image_id: int, shapes: list[dict], width: int, height: int, path: Path) -> None:
    category = builder.category(str(shapes[0].get("label")))
    polygons: list[list[float]] = []
    mask = None
    box = None
    for shape in shapes:
        kind = shape.get("shape_type") or "polygon"
        points = [(float(x), float(y)) for x, y in shape["points"]]
        if kind == "polygon":
            polygons.append([v for point in points for v in point])
        elif kind == "rectangle" and len(points) == 2:
            (x0, y0), (x1, y1) = points
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        elif kind == "circle" and len(points) == 2:
            (cx, cy), (px, py) = points
            radius = math.hypot(px - cx, py - cy)
            polygons.append([
                v for k in range(CIRCLE_POINTS)
                for v in (cx + radius * math.cos(2 * math.pi * k / CIRCLE_POINTS),
                          cy + radius * math.sin(2 * math.pi * k / CIRCLE_POINTS))
            ])
        elif kind == "mask" and shape.get("mask"):
            mask = _mask_shape(shape, points, width, height, path) | (mask if mask is not None else False)
        else:
            builder.left_out[f"labelme {kind} shapes (no region)"] += 1
    if mask is not None:
        if polygons:  # a mask and polygons in one group: rasterise the polygons into the mask
            from pycocotools import mask as mask_utils

            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            mask = mask | mask_utils.decode(rle).astype(bool)
        builder.add_mask(image_id, category, mask)
    elif polygons:
        builder.add_polygons(image_id, category, polygons)
    elif box is not None:
        builder.add_box(image_id, category, *box)


def _mask_shape(shape: dict, points: list[tuple[float, float]], width: int, height: int, path: Path) -> np.ndarray:
    from PIL import Image

    try:
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))) != 0
    except Exception as err:  # noqa: BLE001 - any decoding failure is the file's
        raise RefineMaskError(f"{path}: a mask shape's PNG cannot be decoded ({err})") from None
    if crop.ndim == 3:
        crop = crop.any(axis=2)
    x0, y0 = (int(round(v)) for v in points[0])
    full = np.zeros((height, width), dtype=bool)
    h, w = crop.shape
    y1, x1 = min(height, y0 + h), min(width, x0 + w)
    full[max(0, y0):y1, max(0, x0):x1] = crop[max(0, -y0):y1 - y0, max(0, -x0):x1 - x0]
    return full
