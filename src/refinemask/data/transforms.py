"""Dataset-level transforms of ``(image, target)`` pairs, polygons included.

Shapes: N instances; H, W the image size before, H', W' after a transform.

Every transform is a callable ``(image, target) -> (image, target)`` on the data contract of
:mod:`refinemask.data.coco`. The image, boxes and masks go through
``torchvision.transforms.v2.functional``; polygons are no tv_tensor, so they are moved here by
the same rule, which keeps the three consistent: a flipped or resized polygon rasterises to the
flipped or resized mask (up to pycocotools' rounding on slanted edges).

Photometric ``torchvision.transforms.v2`` transforms (``ColorJitter`` ...) can be mixed into
:class:`Compose`: they change the image and pass the target through. Do **not** mix in v2
*geometric* transforms (crops, affine): they would move boxes and masks but not the polygons.

Polygon coordinates are continuous: pixel column ``j`` spans ``[j, j + 1)``, so a horizontal flip
maps ``x`` to ``W - x`` while mask column ``j`` goes to ``W - 1 - j`` (the same convention as
pycocotools, mmdetection and detectron2).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from refinemask.modeling.transform import rescale_size

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


def resize(image: torch.Tensor, target: Target, size: tuple[int, int]) -> Pair:
    """Resize the image (3, H, W) to ``size`` = (H', W') and its target with it.

    The image is resampled bilinearly without antialiasing and masks (N, H', W') by nearest
    neighbour, as the official pipeline does with OpenCV. Boxes and polygons are scaled by
    ``W'/W`` in x and ``H'/H`` in y (mmdetection's ``scale_factor``).
    """
    height, width = image.shape[-2:]
    new_height, new_width = size
    resized = dict(target)
    if "boxes" in target:
        resized["boxes"] = F.resize(_as_boxes(target["boxes"], height, width), [new_height, new_width])
    if "masks" in target:
        resized["masks"] = F.resize(
            tv_tensors.Mask(target["masks"]), [new_height, new_width], interpolation=InterpolationMode.NEAREST
        )
    if "polygons" in target:
        scale = np.array([new_width / width, new_height / height], dtype=np.float32)
        resized["polygons"] = [
            None if parts is None else [_scale_polygon(p, scale) for p in parts] for parts in target["polygons"]
        ]
    image = F.resize(image, [new_height, new_width], interpolation=InterpolationMode.BILINEAR, antialias=False)
    return image, resized


def _scale_polygon(polygon: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (np.asarray(polygon, dtype=np.float32).reshape(-1, 2) * scale).reshape(-1)


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


class Resize:
    """The official resize rule, with the official multi-scale options.

    The new size is :func:`refinemask.modeling.transform.rescale_size`: keep the aspect ratio,
    short side ``short_side``, long side at most ``max_long_side``. ``short_sides`` gives the
    candidates:

    * ``mode="value"``: one of the listed sides, uniformly (LVIS: 640, 672, ..., 800);
    * ``mode="range"``: an integer drawn uniformly from ``[min, max]`` of the list (Cityscapes:
      800-1024 with long side 2048).

    A single side (the default, 800 / 1333) is the fixed COCO scale.
    """

    def __init__(
        self,
        short_sides: int | Sequence[int] = 800,
        max_long_side: int = 1333,
        mode: str = "value",
        generator: torch.Generator | None = None,
    ) -> None:
        sides = [short_sides] if isinstance(short_sides, int) else list(short_sides)
        if not sides or any(int(s) <= 0 for s in sides) or max_long_side <= 0:
            raise ValueError(f"resize sides must be positive, got short {short_sides} and long {max_long_side}")
        if mode not in ("value", "range"):
            raise ValueError(f"resize mode must be 'value' or 'range', got {mode!r}")
        self.short_sides = [int(s) for s in sides]
        self.max_long_side = int(max_long_side)
        self.mode = mode
        self.generator = generator

    def sample_short_side(self) -> int:
        if self.mode == "range":
            low, high = min(self.short_sides), max(self.short_sides)
            return int(torch.randint(low, high + 1, (), generator=self.generator))
        return self.short_sides[int(torch.randint(len(self.short_sides), (), generator=self.generator))]

    def __call__(self, image: torch.Tensor, target: Target) -> Pair:
        height, width = image.shape[-2:]
        size = rescale_size(height, width, self.sample_short_side(), self.max_long_side)
        if size == (height, width):
            return image, target
        return resize(image, target, size)

    def __repr__(self) -> str:
        return f"Resize(short_sides={self.short_sides}, max_long_side={self.max_long_side}, mode={self.mode!r})"
