"""CVAT for images 1.1 (``annotations.xml``, beside the ``images/`` folder of CVAT's zip).

Each ``<image name width height>`` holds its shapes, each with a ``label``:

* ``<polygon points="x0,y0;x1,y1;...">``: the region;
* ``<box xtl ytl xbr ybr>``: a box-only annotation;
* ``<mask rle left top width height>``: a brush mask, run lengths over its ``width x height``
  crop row by row, starting with a run of background;
* ``<ellipse cx cy rx ry>``: as a 32-gon;
* ``<polyline>``, ``<points>``, ``<tag>``, ``<skeleton>``: no region; left out and counted.

Shapes with the same ``group_id`` (and label) are one instance. Categories are the labels of
``<meta>`` in CVAT's order (then any others met), numbered 1, 2, ...
"""
from __future__ import annotations

import math
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from refinemask.data.importers.common import CocoBuilder, Imported
from refinemask.errors import RefineMaskError

ELLIPSE_POINTS = 32


def read(source: Path) -> Imported:
    if source.is_dir():
        source = source / "annotations.xml"
        if not source.is_file():
            raise RefineMaskError(f"{source.parent}: no annotations.xml; give the CVAT for images XML file")
    try:
        root = ElementTree.parse(source).getroot()
    except ElementTree.ParseError as err:
        raise RefineMaskError(f"{source} is not valid XML ({err})") from None
    if root.tag != "annotations":
        raise RefineMaskError(f"{source}: not a CVAT for images file (the root is <{root.tag}>, not <annotations>)")
    if root.find("track") is not None:
        raise RefineMaskError(f"{source} is CVAT for video (tracks); export the task as 'CVAT for images 1.1'")

    builder = CocoBuilder()
    for label in root.iter("label"):
        name = label.findtext("name")
        if name and label.findtext("type") not in ("tag", "skeleton"):
            builder.category(name)
    for image in root.iter("image"):
        try:
            width, height = int(image.get("width")), int(image.get("height"))
        except (TypeError, ValueError):
            raise RefineMaskError(f"{source}: image {image.get('name')!r} has no integer width and height") from None
        image_id = builder.add_image(str(image.get("name")), width, height)
        groups: dict[tuple[str, str], list[ElementTree.Element]] = {}
        alone: list[list[ElementTree.Element]] = []
        for shape in image:
            group = shape.get("group_id")
            if group and group != "0":
                groups.setdefault((str(shape.get("label")), group), []).append(shape)
            else:
                alone.append([shape])
        for shapes in alone + list(groups.values()):
            _add_instance(builder, image_id, shapes, width, height, source)
    images = source.parent / "images"
    return Imported(builder, {"annotations": {im["id"] for im in builder.images}},
                    images if images.is_dir() else source.parent)


def _add_instance(builder: CocoBuilder, image_id: int, shapes: list, width: int, height: int, source: Path) -> None:
    polygons: list[list[float]] = []
    mask = None
    box = None
    for shape in shapes:
        try:
            if shape.tag == "polygon":
                polygons.append([float(v) for point in shape.get("points", "").split(";") for v in point.split(",")])
            elif shape.tag == "box":
                box = tuple(float(shape.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
            elif shape.tag == "ellipse":
                cx, cy, rx, ry = (float(shape.get(k)) for k in ("cx", "cy", "rx", "ry"))
                polygons.append([
                    v for k in range(ELLIPSE_POINTS)
                    for v in (cx + rx * math.cos(2 * math.pi * k / ELLIPSE_POINTS),
                              cy + ry * math.sin(2 * math.pi * k / ELLIPSE_POINTS))
                ])
            elif shape.tag == "mask":
                crop = cvat_rle_to_mask(shape.get("rle", ""), int(shape.get("width")), int(shape.get("height")))
                full = np.zeros((height, width), dtype=bool)
                left, top = int(shape.get("left")), int(shape.get("top"))
                full[top:top + crop.shape[0], left:left + crop.shape[1]] = crop[: height - top, : width - left]
                mask = full if mask is None else mask | full
            else:
                builder.left_out[f"CVAT <{shape.tag}> (no region)"] += 1
        except (TypeError, ValueError) as err:
            raise RefineMaskError(
                f"{source}: a <{shape.tag}> of label {shape.get('label')!r} has malformed coordinates ({err})"
            ) from None
    if mask is None and not polygons and box is None:
        return
    category = builder.category(str(shapes[0].get("label")))
    if mask is not None:
        if polygons:
            from pycocotools import mask as mask_utils

            mask = mask | mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)
        builder.add_mask(image_id, category, mask)
    elif polygons:
        builder.add_polygons(image_id, category, polygons)
    else:
        builder.add_box(image_id, category, *box)


def cvat_rle_to_mask(rle: str, width: int, height: int) -> np.ndarray:
    """(height, width) bool mask of CVAT's run lengths (row-major, background first)."""
    runs = [int(v) for v in rle.split(",") if v.strip()]
    if sum(runs) != width * height:
        raise ValueError(f"the mask's runs cover {sum(runs)} pixels, not width x height = {width * height}")
    flat = np.zeros(width * height, dtype=bool)
    position = 0
    for k, run in enumerate(runs):
        if k % 2:
            flat[position:position + run] = True
        position += run
    return flat.reshape(height, width)
