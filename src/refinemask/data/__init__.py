"""Data: COCO / LVIS / Cityscapes datasets, transforms, samplers, checks, synthetic data.

The contract with the model (torchvision's detection contract plus polygons):
``dataset[i] -> (image, target)`` with ``image`` float32 (3, H, W) RGB in [0, 1] and ``target``
a dict of ``boxes`` (N, 4) XYXY pixels, ``labels`` (N,) int64 in 1..C, ``masks`` (N, H, W)
uint8, ``polygons`` (N entries: a list of float32 ``[x0, y0, x1, y1, ...]`` arrays, or ``None``
for an RLE instance) and ``image_id``. Crowd regions are not in the target. Batches are collated
with :func:`collate` (tuples of images and targets). Datasets expose ``label_to_category`` and
``category_names``, which are saved with every checkpoint.

Where things live:

* :mod:`.images` reads image files robustly;
* :mod:`.validation` checks annotation files (also behind ``refinemask check-data``);
* :mod:`.coco`, :mod:`.lvis` are the datasets; :mod:`.cityscapes` converts Cityscapes to COCO;
* :mod:`.categories` maps labels to category ids and names (and the known data sets' tables);
* :mod:`.transforms` flips images with their targets (the model resizes them);
* :mod:`.samplers` has repeat-factor sampling and aspect-ratio-grouped batches.
* :mod:`.synthetic` generates the built-in thin-structure data set (``refinemask make-synthetic``).

The names below are importable from ``refinemask.data`` directly. They are loaded on first use
so that importing the light modules (``refinemask check-data`` uses PIL and json only) does not
import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> module under refinemask.data that defines it
_EXPORTS: dict[str, str] = {
    "CocoDetection": "coco",
    "LvisDetection": "lvis",
    "cityscapes_to_coco": "cityscapes",
    "load_image": "images",
    "read_image_size": "images",
    "DEFAULT_MAX_PIXELS": "images",
    "Problem": "validation",
    "iter_problems": "validation",
    "check_image_files": "validation",
    "load_annotation_json": "validation",
    "remove_problems": "validation",
    "Compose": "transforms",
    "RandomHorizontalFlip": "transforms",
    "horizontal_flip": "transforms",
    "repeat_factors": "samplers",
    "aspect_ratio_groups": "samplers",
    "RepeatFactorSampler": "samplers",
    "GroupedBatchSampler": "samplers",
}

__all__ = sorted([*_EXPORTS, "collate"])


def collate(batch: list[tuple[Any, Any]]) -> tuple[tuple[Any, ...], ...]:
    """``[(image, target), ...] -> ((image, ...), (target, ...))``: images keep their sizes."""
    return tuple(zip(*batch, strict=True))


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'refinemask.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"refinemask.data.{module_name}"), name)
