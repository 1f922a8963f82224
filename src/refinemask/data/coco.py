"""COCO-format instance segmentation datasets.

Shapes: N instances of one image; H, W the image size.

``CocoDetection(ann_file, image_dir)[i]`` gives ``(image, target)`` in the torchvision detection
contract plus polygons (see the package docstring of :mod:`refinemask.data`):

* ``image``: :class:`tv_tensors.Image`, float32 (3, H, W) RGB in [0, 1];
* ``target["boxes"]``: :class:`tv_tensors.BoundingBoxes` float32 (N, 4) XYXY pixels, clipped to
  the image;
* ``target["labels"]``: int64 (N,), contiguous 1..C in category-id order (0 is background);
* ``target["masks"]``: :class:`tv_tensors.Mask` uint8 (N, H, W);
* ``target["polygons"]``: N entries, each a list of float32 arrays ``[x0, y0, x1, y1, ...]`` in
  pixels, or ``None`` for an instance given as RLE (or for all with ``keep_polygons=False``);
* ``target["has_mask"]``: bool (N,), False for a box-only annotation (no segmentation, as CVAT
  rectangles): a box target whose (empty) mask the mask losses ignore
  (:func:`~refinemask.data.validation.is_box_only`);
* ``target["image_id"]``: the COCO image id.

Crowd annotations (``iscrowd=1``) are left out of the target and kept in :attr:`coco`, the
pycocotools ground truth an evaluator scores against. Masks come from pycocotools (polygons:
frPyObjects, merge, decode), so they agree with both the evaluator and the polygon targets the
model rasterises per RoI.

The annotation file is checked as it loads (:mod:`refinemask.data.validation`). By default
broken entries are skipped: one warning line says how many, debug lines list them, and
:attr:`problems` keeps them. ``strict=True`` raises :class:`RefineMaskError` at the first one.
Image files are read only when an item is asked for; `refinemask check-data` checks them all.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors

from refinemask.data.categories import categories_from_entries
from refinemask.data.images import DEFAULT_MAX_PIXELS, load_image
from refinemask.data.transforms import crop
from refinemask.data.validation import (
    Problem,
    box_only_note,
    fill_image_sizes,
    is_box_only,
    iter_problems,
    load_annotation_json,
    remove_problems,
    segmentation_to_rle,
)
from refinemask.errors import RefineMaskError

logger = logging.getLogger(__name__)

Target = dict[str, Any]
Transforms = Callable[[tv_tensors.Image, Target], tuple[tv_tensors.Image, Target]]


class CocoDetection(torch.utils.data.Dataset):
    """Images and instance targets of a COCO-format json (polygons, RLE, crowd regions).

    Args:
        ann_file: the COCO json.
        image_dir: the directory the images' ``file_name`` entries are relative to.
        transforms: ``(image, target) -> (image, target)``, e.g. :class:`transforms.Compose`.
        strict: raise at the first annotation problem instead of skipping broken entries.
        keep_polygons: put polygons in ``target["polygons"]``; ``False`` gives ``None`` for
            every instance, so the model cuts mask targets from the bitmaps (the official
            Cityscapes setting).
        remove_empty: leave out images with no (non-crowd) instance, as training usually does.
        max_pixels: refuse images larger than this (see :mod:`refinemask.data.images`).
        scaling: how images of more than 8 bits are scaled, as keyword arguments of
            :func:`~refinemask.data.images.load_image` (``scaling_options(config.model)``).

    Attributes:
        coco: pycocotools ``COCO`` of the checked annotations, crowd regions included.
        ids: the COCO image id of every index (sorted ids).
        label_to_category: contiguous label (1..C) -> COCO category id; saved with checkpoints.
        category_names: name of label ``l`` at ``category_names[l - 1]``; saved with checkpoints.
        problems: what was wrong with the annotation file (the skipped entries).
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        transforms: Transforms | None = None,
        strict: bool = False,
        keep_polygons: bool = True,
        remove_empty: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        scaling: dict | None = None,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.transforms = transforms
        self.keep_polygons = keep_polygons
        self.max_pixels = max_pixels
        self.scaling = dict(scaling or {})

        data = self._read_json()
        filled = fill_image_sizes(data, self.image_dir, max_pixels)
        if filled:
            logger.info("%s: %d images have no width/height; read from their files", self.ann_file, filled)
        self.problems = _find_problems(data, self.ann_file, strict)
        self.coco = _pycocotools_index(remove_problems(data, self.problems))
        if not self.coco.cats:
            raise RefineMaskError(f"{self.ann_file}: no usable category; fix the 'categories' list")

        # labels 1..C in category-id order: the mapping saved with every checkpoint
        self.label_to_category, self.category_names = categories_from_entries(self.coco.cats.values())
        self.category_to_label: dict[int, int] = {cat: label for label, cat in self.label_to_category.items()}

        box_only = sum(1 for a in self.coco.anns.values() if is_box_only(a))
        if box_only:
            logger.warning("%s: %s", self.ann_file, box_only_note(box_only, len(self.coco.anns)))

        ids = sorted(self.coco.imgs)
        if remove_empty:
            ids = [i for i in ids if any(not a["iscrowd"] for a in self.coco.imgToAnns.get(i, []))]
        self.ids: list[int] = ids

    def _read_json(self) -> dict[str, Any]:
        """The annotation json as a dict; subclasses adapt other layouts here (see LVIS)."""
        return load_annotation_json(self.ann_file)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, Target]:
        return self.load_sample(index)

    def load_sample(
        self, index: int, window: tuple[int, int, int, int] | None = None, image: torch.Tensor | None = None
    ) -> tuple[tv_tensors.Image, Target]:
        """``self[index]``, or with ``window`` (top, left, h, w) that window of it
        (:func:`refinemask.data.transforms.crop`): only the instances whose box meets the window
        have their masks decoded, which is what makes crops of huge scenes with hundreds of
        objects cheap (each full-image mask is H x W bytes). ``image``: the image of ``index``
        as :meth:`load_image` gives it, already in hand (a cache of decoded huge images)."""
        image = self.load_image(index) if image is None else image
        target = self.load_target(index, window=window)
        if window is not None:
            image, target = crop(image, target, window)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def load_image(self, index: int) -> tv_tensors.Image:
        """The image of ``index``, checked against the json's size."""
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        try:
            image = load_image(path, self.max_pixels, **self.scaling)
        except RefineMaskError as err:
            raise RefineMaskError(f"image {image_id} of {self.ann_file.name}: {err}") from err
        if tuple(image.shape[-2:]) != (info["height"], info["width"]):
            raise RefineMaskError(
                f"image {image_id} ({path}) is {image.shape[-1]}x{image.shape[-2]} (after EXIF "
                f"orientation) but {self.ann_file.name} says {info['width']}x{info['height']}; "
                "fix width/height in the json or the file"
            )
        return tv_tensors.Image(image)

    def instance_boxes(self, index: int) -> torch.Tensor:
        """(N, 4) XYXY boxes of the target's instances, from the json (nothing is decoded)."""
        boxes = [a["bbox"] for a in self._instances(index)]
        out = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        out[:, 2:] += out[:, :2]
        return out

    def _instances(self, index: int) -> list[dict]:
        return [a for a in self.coco.imgToAnns.get(self.ids[index], []) if not a["iscrowd"]]

    def load_target(self, index: int, masks: bool = True, window: tuple[int, int, int, int] | None = None) -> Target:
        """The target of ``index`` without reading the image (see the module docstring).

        ``masks=False`` leaves out ``masks`` (no decoding), for what needs boxes and labels only:
        evaluation scores against :attr:`coco`, not against these bitmaps. ``window`` (top,
        left, h, w): only the instances whose box meets it (still at the image's size;
        :func:`refinemask.data.transforms.crop` cuts them).
        """
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        height, width = info["height"], info["width"]
        annotations = self._instances(index)
        if window is not None:
            top, left, h, w = window
            annotations = [
                a for a in annotations
                if a["bbox"][0] < left + w and a["bbox"][0] + a["bbox"][2] > left
                and a["bbox"][1] < top + h and a["bbox"][1] + a["bbox"][3] > top
            ]

        boxes = torch.zeros((len(annotations), 4), dtype=torch.float32)
        bitmaps = torch.zeros((len(annotations), height, width) if masks else (0,), dtype=torch.uint8)
        labels = torch.zeros((len(annotations),), dtype=torch.int64)
        has_mask = torch.ones((len(annotations),), dtype=torch.bool)
        polygons: list[list[np.ndarray] | None] = []
        for n, annotation in enumerate(annotations):
            x, y, w, h = annotation["bbox"]
            boxes[n] = torch.tensor([x, y, x + w, y + h])
            labels[n] = self.category_to_label[annotation["category_id"]]
            if is_box_only(annotation):
                has_mask[n] = False  # an empty mask, ignored by the mask losses
                polygons.append(None)
                continue
            segmentation = annotation["segmentation"]
            if masks:
                bitmaps[n] = torch.from_numpy(mask_utils.decode(segmentation_to_rle(segmentation, height, width)))
            if self.keep_polygons and isinstance(segmentation, list):
                polygons.append([np.asarray(p, dtype=np.float32) for p in segmentation])
            else:
                polygons.append(None)
        # boxes may overshoot by the validation tolerance: keep them on the image
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": labels,
            "masks": tv_tensors.Mask(bitmaps),
            "polygons": polygons,
            "has_mask": has_mask,
            "image_id": image_id,
        }
        if not masks:
            del target["masks"]
        return target

    def aspect_ratios(self) -> list[float]:
        """Width / height of every index, from the json (no image is opened)."""
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]

    def labels_per_image(self) -> list[set[int]]:
        """The contiguous labels of the (non-crowd) instances of every index, from the json."""
        return [
            {self.category_to_label[a["category_id"]] for a in self.coco.imgToAnns.get(i, []) if not a["iscrowd"]}
            for i in self.ids
        ]


def _find_problems(data: dict[str, Any], ann_file: Path, strict: bool) -> list[Problem]:
    """All problems of ``data``; logs them, or raises at the first one when ``strict``."""
    problems: list[Problem] = []
    for problem in iter_problems(data):
        if strict:
            raise RefineMaskError(
                f"{ann_file}: {problem.message} (strict loading stops at the first problem; "
                f"`refinemask check-data {ann_file}` lists them all)"
            )
        problems.append(problem)
    if problems:
        skipped = {
            ("image", "images"): len({p.image_index for p in problems if p.image_index is not None}),
            ("annotation", "annotations"): len(
                {p.annotation_index for p in problems if p.annotation_index is not None}
            ),
            ("category", "categories"): len({p.category_index for p in problems if p.category_index is not None}),
        }
        counts = ", ".join(f"{n} {one if n == 1 else many}" for (one, many), n in skipped.items() if n)
        logger.warning(
            "%s: skipped %s with problems (%d problems; first: %s); "
            "`refinemask check-data %s` lists them all",
            ann_file, counts, len(problems), problems[0].message, ann_file,
        )
        for problem in problems:
            logger.debug("%s: skipped: %s", ann_file, problem.message)
    return problems


def _pycocotools_index(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` over an already loaded dict (it prints while indexing)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
