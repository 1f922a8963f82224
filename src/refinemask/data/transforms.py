"""Dataset-level transforms of ``(image, target)`` pairs, polygons included.

Shapes: N instances; H, W the image size before, H', W' after a transform.

Every transform is a callable ``(image, target) -> (image, target)`` on the data contract of
:mod:`refinemask.data.coco`. The image, boxes and masks go through
``torchvision.transforms.v2.functional``; polygons are no tv_tensor, so they are moved here by
the same rule, which keeps the three consistent: a flipped polygon rasterises to the flipped
mask (up to pycocotools' rounding on slanted edges).

:func:`crop_window` and :func:`crop` cut a training window out of a large image
(``data.crop_size``), so that a few huge images train at the model's scale.

Resizing is not done here: the model resizes every image and its target itself, by the official
rule and with the multi-scale choice of ``model.min_size``
(:class:`refinemask.modeling.transform.DetectionTransform`), in training and at test time alike.

Photometric ``torchvision.transforms.v2`` transforms (``ColorJitter`` ...) can be mixed into
:class:`Compose`: they change the image and pass the target through. Do **not** mix in v2
*geometric* transforms (crops, affine): they would move boxes and masks but not the polygons.

Polygon coordinates are continuous: pixel column ``j`` spans ``[j, j + 1)``, so a horizontal flip
maps ``x`` to ``W - x`` while mask column ``j`` goes to ``W - 1 - j`` (the same convention as
pycocotools, mmdetection and detectron2).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

Target = dict[str, Any]
Pair = tuple[torch.Tensor, Target]


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms: Sequence[Callable[..., Pair]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> Pair:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


def _as_boxes(boxes: torch.Tensor, height: int, width: int) -> tv_tensors.BoundingBoxes:
    if isinstance(boxes, tv_tensors.BoundingBoxes):
        return boxes
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))


def horizontal_flip(image: torch.Tensor, target: Target) -> Pair:
    """Mirror the image (3, H, W) and its target left to right.

    Boxes (N, 4) XYXY become ``(W - x2, y1, W - x1, y2)``, masks (N, H, W) are mirrored,
    polygon x coordinates become ``W - x``.
    """
    height, width = image.shape[-2:]
    flipped = dict(target)
    if "boxes" in target:
        flipped["boxes"] = F.horizontal_flip(_as_boxes(target["boxes"], height, width))
    if "masks" in target:
        flipped["masks"] = tv_tensors.Mask(target["masks"].flip(-1))
    if "polygons" in target:
        flipped["polygons"] = [
            None if parts is None else [_flip_polygon(p, width) for p in parts]
            for parts in target["polygons"]
        ]
    return F.horizontal_flip(image), flipped


def _flip_polygon(polygon: np.ndarray, width: int) -> np.ndarray:
    out = np.array(polygon, dtype=np.float32, copy=True)
    out[0::2] = width - out[0::2]
    return out


class RandomHorizontalFlip:
    """Flip with probability ``p`` (0.5 in every official schedule).

    ``generator`` makes draws reproducible in tests; leave it ``None`` under DataLoader workers,
    which seed torch's global generator differently each, where a shared generator would be
    copied into every worker and flip the same images in all of them.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target) -> Pair:
        if torch.rand((), generator=self.generator).item() < self.p:
            return horizontal_flip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def crop_window(
    height: int, width: int, size: int, boxes: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random ``size`` x ``size`` window of an H x W image (the image's
    side where it is smaller), placed so that it holds the centre of one instance drawn at random.

    Centring on an instance (as mmdetection's ``RandomCrop`` with ``allow_negative_crop=False``
    retries until a crop holds one) keeps crops of a huge, sparsely annotated image from being
    mostly empty; an image without instances gets a uniform window.
    """
    h, w = min(size, height), min(size, width)

    def start(length: int, span: int, centre: float | None) -> int:
        lo, hi = 0, length - span
        if centre is not None:  # the window [s, s + span) must hold the centre
            lo, hi = max(lo, math.floor(centre) - span + 1), min(hi, math.floor(centre))
        return lo + int(torch.randint(hi - lo + 1, (), generator=generator)) if hi > lo else lo

    cx = cy = None
    if len(boxes):
        k = int(torch.randint(len(boxes), (), generator=generator))
        cx, cy = float(boxes[k, 0] + boxes[k, 2]) / 2, float(boxes[k, 1] + boxes[k, 3]) / 2
        cx, cy = min(max(cx, 0.0), width - 1e-3), min(max(cy, 0.0), height - 1e-3)
    top = start(height, h, cy)
    left = start(width, w, cx)
    return top, left, h, w


def crop(image: torch.Tensor, target: Target, window: tuple[int, int, int, int]) -> Pair:
    """The (top, left, h, w) window of the image (3, H, W) and its target.

    Boxes are clipped to the window and instances left with no mask pixel in it (or no box area)
    are dropped. Polygons are only shifted: parts outside the window lie outside every RoI,
    which is clipped to the image, so they never reach a per-RoI target.
    """
    top, left, h, w = window
    height, width = image.shape[-2:]
    if (top, left, h, w) == (0, 0, height, width):
        return image, target
    out = dict(target)
    keep = None
    if "boxes" in target:
        boxes = torch.as_tensor(target["boxes"]).float() - torch.tensor([left, top, left, top], dtype=torch.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if "masks" in target:
        masks = torch.as_tensor(target["masks"])[:, top : top + h, left : left + w]
        present = (masks.flatten(1) != 0).any(1) if masks.shape[0] else torch.zeros(0, dtype=torch.bool)
        keep = present if keep is None else keep & present
        out["masks"] = tv_tensors.Mask(masks[keep].clone())
    if "boxes" in target:
        out["boxes"] = tv_tensors.BoundingBoxes(boxes[keep], format="XYXY", canvas_size=(h, w))
    for key in ("labels", "iscrowd", "area"):
        if key in target and keep is not None:
            out[key] = target[key][keep]
    if target.get("polygons") is not None and keep is not None:
        shift = np.array([left, top], dtype=np.float32)
        out["polygons"] = [
            None if parts is None else [(np.asarray(p, np.float32).reshape(-1, 2) - shift).reshape(-1) for p in parts]
            for parts, kept in zip(target["polygons"], keep.tolist()) if kept
        ]
    cropped = image[..., top : top + h, left : left + w]
    return (tv_tensors.Image(cropped.clone()) if isinstance(image, tv_tensors.Image) else cropped.clone()), out


def drop_polygon_bitmaps(target: Target) -> Target:
    """The compact training target: bitmaps only where no polygon stands for them.

    With polygons the mask targets are rasterised per RoI from the polygons
    (:func:`refinemask.modeling.targets.stage_mask_targets`), so an instance's full-image bitmap
    is needed only in the union that the semantic head learns. Sending that union once instead
    of every instance's bitmap cuts what travels from the loader workers (shared memory) to the
    device from G·H·W bytes to H·W (7 COCO instances: 7x fewer mask bytes), and the model
    resizes one map instead of G. The last step of the training pipeline, after every
    geometric transform.

    Returns a copy of ``target`` with:

    * ``masks``: (G_b, H, W) uint8, the bitmaps of the G_b instances without polygons (RLE);
    * ``mask_rows``: (G,) int64, each instance's row in ``masks``, -1 for a polygon instance;
    * ``semantic``: (H, W) uint8, the union of all G instance masks.

    A target without polygons (none kept, or all RLE) is returned unchanged: its bitmaps are
    all needed.
    """
    polygons = target.get("polygons")
    if polygons is None or all(p is None for p in polygons):
        return target
    masks = target["masks"].as_subclass(torch.Tensor)
    bitmap = [i for i, p in enumerate(polygons) if p is None]
    rows = torch.full((len(polygons),), -1, dtype=torch.int64)
    rows[bitmap] = torch.arange(len(bitmap))
    compact = dict(target)
    compact["semantic"] = masks.amax(dim=0) if masks.shape[0] else masks.new_zeros(masks.shape[-2:])
    compact["masks"] = tv_tensors.Mask(masks[bitmap])
    compact["mask_rows"] = rows
    return compact
