"""Cityscapes fine annotations to a COCO json, with ``cityscapesscripts``' label table.

The official layout::

    ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png

In ``*_gtFine_instanceIds.png`` a pixel value ``v >= 1000`` is instance ``v % 1000`` of label id
``v // 1000``; a value ``v < 1000`` is the label id alone: for a class with instances that marks
a *group* of objects not separated (e.g. a crowd of people). Instance segmentation uses the
classes that have instances and are evaluated (``hasInstances and not ignoreInEval``): person,
rider, car, truck, bus, train, motorcycle, bicycle (caravan and trailer are left out, as in the
official benchmark).

The json uses the Cityscapes label ids as COCO category ids (24, 25, 26, 27, 28, 31, 32, 33),
so the contiguous labels 1..8 follow the order above. Instances are written as compressed RLE
(bitmaps, as the official Cityscapes config trains on); group regions as ``iscrowd=1`` RLE, which
training leaves out and COCO evaluation treats as "ignore". Image ``file_name`` is
``<city>/<name>_leftImg8bit.png``, relative to ``ROOT/leftImg8bit/<split>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from refinemask.data.images import read_image_size
from refinemask.errors import RefineMaskError

# value // INSTANCE_OFFSET is the label id of an instance pixel (cityscapesscripts convention)
INSTANCE_OFFSET = 1000

# the classes instance_labels() selects, in label-id order (for code that needs only names)
INSTANCE_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")

_IMAGE_SUFFIX = "_leftImg8bit.png"
_INSTANCE_SUFFIX = "_gtFine_instanceIds.png"


def instance_labels() -> list[Any]:
    """cityscapesscripts ``Label`` tuples of the evaluated instance classes, in id order."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as err:
        raise RefineMaskError(
            "converting Cityscapes needs cityscapesscripts: pip install 'refinemask[cityscapes]'"
        ) from err
    return [label for label in labels if label.hasInstances and not label.ignoreInEval]


def _read_instance_ids(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.int64)
    except Exception as err:  # PIL raises many types for a broken file
        raise RefineMaskError(f"cannot read Cityscapes instance ids {path}: {err}") from err


def _instance_annotations(ids: np.ndarray, include_crowd: bool, by_id: dict[int, Any]) -> list[dict[str, Any]]:
    """COCO annotations (without id / image_id) of one (H, W) instance-id map.

    ``by_id``: label id -> cityscapesscripts label of the classes to keep.
    """
    annotations = []
    for value in np.unique(ids).tolist():
        label = by_id.get(value // INSTANCE_OFFSET if value >= INSTANCE_OFFSET else value)
        if label is None:
            continue
        crowd = value < INSTANCE_OFFSET
        if crowd and not include_crowd:
            continue
        rle = mask_utils.encode(np.asfortranarray(ids == value, dtype=np.uint8))
        annotations.append({
            "category_id": label.id,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": float(mask_utils.area(rle)),
            "iscrowd": int(crowd),
        })
    return annotations


def cityscapes_to_coco(
    root: str | Path, split: str, out_json: str | Path | None = None, include_crowd: bool = True
) -> dict[str, Any]:
    """Convert the ``split`` ("train", "val") of a Cityscapes tree to a COCO dict.

    Writes it to ``out_json`` when given and returns it. Raises :class:`RefineMaskError` when
    the layout is not the official one (missing folder or annotation file) or a file is broken.
    """
    kept_labels = instance_labels()
    by_id = {label.id: label for label in kept_labels}
    root = Path(root)
    image_root = root / "leftImg8bit" / split
    gt_root = root / "gtFine" / split
    for folder, package in ((image_root, "leftImg8bit_trainvaltest.zip"), (gt_root, "gtFine_trainvaltest.zip")):
        if not folder.is_dir():
            raise RefineMaskError(f"Cityscapes folder not found: {folder}; unpack {package} into {root}")
    image_paths = sorted(image_root.glob(f"*/*{_IMAGE_SUFFIX}"))
    if not image_paths:
        raise RefineMaskError(f"no *{_IMAGE_SUFFIX} images under {image_root}/<city>/")

    images, annotations = [], []
    for image_id, image_path in enumerate(image_paths, start=1):
        city = image_path.parent.name
        core = image_path.name[: -len(_IMAGE_SUFFIX)]
        ids_path = gt_root / city / f"{core}{_INSTANCE_SUFFIX}"
        if not ids_path.is_file():
            raise RefineMaskError(f"Cityscapes annotation not found: {ids_path} (for {image_path})")
        height, width = read_image_size(image_path)
        ids = _read_instance_ids(ids_path)
        if ids.shape != (height, width):
            raise RefineMaskError(
                f"{ids_path} is {ids.shape[1]}x{ids.shape[0]} but its image {image_path} is {width}x{height}"
            )
        images.append({"id": image_id, "file_name": f"{city}/{image_path.name}", "width": width, "height": height})
        for annotation in _instance_annotations(ids, include_crowd, by_id):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})

    data = {
        "info": {"description": f"Cityscapes gtFine {split}, instance classes, converted by refinemask"},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": label.id, "name": label.name, "supercategory": label.category} for label in kept_labels
        ],
    }
    if out_json is not None:
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(data))
    return data
