"""What every importer shares: the COCO builder, image sizes, file names, the split."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refinemask.data.images import read_image_size
from refinemask.data.validation import annotation_area
from refinemask.errors import RefineMaskError


@dataclass
class CocoBuilder:
    """Collects images, categories and annotations; :meth:`to_dict` gives the COCO dict.

    Categories are added by name and numbered 1, 2, ... in the order given; an importer that
    knows the tool's class order (YOLO's names, CVAT's labels) adds them first.
    """

    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    left_out: Counter = field(default_factory=Counter)  # what was not imported, and how often

    def category(self, name: str) -> int:
        """The id of category ``name``, added when new."""
        if name not in self.categories:
            self.categories[name] = len(self.categories) + 1
        return self.categories[name]

    def add_image(self, file_name: str, width: int, height: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        return image_id

    def add_polygons(self, image_id: int, category_id: int, polygons: list[list[float]]) -> None:
        """One instance given as polygons ``[x0, y0, x1, y1, ...]`` in pixels."""
        polygons = [[float(v) for v in p] for p in polygons if len(p) >= 6]
        if not polygons:
            self.left_out["polygons of fewer than 3 points"] += 1
            return
        xs = [v for p in polygons for v in p[0::2]]
        ys = [v for p in polygons for v in p[1::2]]
        self._add(image_id, category_id, polygons, [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)])

    def add_box(self, image_id: int, category_id: int, x0: float, y0: float, x1: float, y1: float) -> None:
        """A box-only instance (XYXY pixels)."""
        if x1 <= x0 or y1 <= y0:
            self.left_out["boxes of zero area"] += 1
            return
        self._add(image_id, category_id, [], [float(x0), float(y0), float(x1 - x0), float(y1 - y0)])

    def add_mask(self, image_id: int, category_id: int, mask: np.ndarray) -> None:
        """One instance given as a (H, W) binary mask of the whole image, stored as RLE."""
        from pycocotools import mask as mask_utils

        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        if w <= 0 or h <= 0:
            self.left_out["empty masks"] += 1
            return
        rle = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        self._add(image_id, category_id, rle, [x, y, w, h])

    def _add(self, image_id: int, category_id: int, segmentation: Any, bbox: list[float]) -> None:
        image = self.images[image_id - 1]
        annotation = {
            "id": len(self.annotations) + 1,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": segmentation,
            "bbox": bbox,
            "iscrowd": 0,
        }
        annotation["area"] = annotation_area(annotation, image["height"], image["width"])
        self.annotations.append(annotation)

    def to_dict(self, image_ids: set[int] | None = None) -> dict[str, Any]:
        """The COCO dict, of all images or of ``image_ids`` only (ids are kept as they are)."""
        images = [im for im in self.images if image_ids is None or im["id"] in image_ids]
        annotations = [a for a in self.annotations if image_ids is None or a["image_id"] in image_ids]
        categories = [{"id": i, "name": name} for name, i in sorted(self.categories.items(), key=lambda kv: kv[1])]
        return {"images": images, "annotations": annotations, "categories": categories}


@dataclass
class Imported:
    """What an importer read: the builder, the images of each split, the image folder."""

    builder: CocoBuilder
    splits: dict[str, set[int]]  # split name -> image ids; one entry "annotations" when unsplit
    image_root: Path  # the folder every file_name is relative to


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file after EXIF orientation, or a one-line error naming it."""
    height, width = read_image_size(path, None)
    return width, height


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with forward slashes (the COCO ``file_name``)."""
    return path.resolve().relative_to(root.resolve()).as_posix()


def split_images(image_ids: list[int], val_fraction: float, seed: int = 0) -> dict[str, set[int]]:
    """A seeded random split of the images into ``train`` and ``val`` (at least one each)."""
    if not 0 < val_fraction < 1:
        raise RefineMaskError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if len(image_ids) < 2:
        raise RefineMaskError(f"--val-fraction needs at least 2 images to split, found {len(image_ids)}")
    shuffled = list(image_ids)
    random.Random(seed).shuffle(shuffled)
    count = min(len(shuffled) - 1, max(1, round(val_fraction * len(shuffled))))
    return {"train": set(shuffled[count:]), "val": set(shuffled[:count])}
