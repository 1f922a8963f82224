"""Fixtures writing tiny COCO datasets (json + images) into tmp_path."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils


def rle_of(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    """COCO RLE of a (H, W) binary mask, compressed (string counts) or uncompressed (list)."""
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).flatten(order="F")  # COCO runs go down columns
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def write_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def box_mask(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def tiny_coco_dict() -> dict[str, Any]:
    """Three images (landscape, portrait, empty), every segmentation kind, non-contiguous ids.

    image 1 (40x30): ann 10 polygon (cat 5), ann 11 uncompressed RLE (cat 1), ann 12 compressed
    RLE (cat 5), ann 13 crowd uncompressed RLE (cat 1)
    image 2 (20x36): ann 20 two-part polygon (cat 9)
    image 3 (24x24): nothing
    """
    rle_box = box_mask(30, 40, 2, 3, 10, 12)
    compressed_box = box_mask(30, 40, 30, 20, 38, 28)
    crowd_box = box_mask(30, 40, 12, 14, 26, 29)
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "sub/b.png", "width": 20, "height": 36},
            {"id": 3, "file_name": "c.png", "width": 24, "height": 24},
        ],
        "categories": [
            {"id": 9, "name": "bird"},
            {"id": 1, "name": "cat"},
            {"id": 5, "name": "dog"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [14.0, 2.0, 12.0, 8.0],
             "segmentation": [[14.0, 2.0, 26.0, 2.0, 26.0, 10.0, 14.0, 10.0]], "area": 96.0},
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [2.0, 3.0, 8.0, 9.0],
             "segmentation": rle_of(rle_box, compressed=False), "area": 72.0},
            {"id": 12, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [30.0, 20.0, 8.0, 8.0],
             "segmentation": rle_of(compressed_box), "area": 64.0},
            {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [12.0, 14.0, 14.0, 15.0],
             "segmentation": rle_of(crowd_box, compressed=False), "area": 210.0},
            {"id": 20, "image_id": 2, "category_id": 9, "iscrowd": 0, "bbox": [2.0, 2.0, 16.0, 30.0],
             "segmentation": [[2.0, 2.0, 8.0, 2.0, 8.0, 12.0, 2.0, 12.0],
                              [10.0, 20.0, 18.0, 20.0, 14.0, 32.0]], "area": 108.0},
        ],
    }


CocoFactory = Callable[..., tuple[Path, Path]]


@pytest.fixture
def make_coco(tmp_path: Path) -> CocoFactory:
    """``make_coco(data=None, skip_files=(), name="ann.json") -> (ann_file, image_dir)``.

    Writes ``data`` (default: :func:`tiny_coco_dict`) as json and an image of the declared size
    for every image entry with a usable file name and size, except the names in ``skip_files``.
    """

    def factory(data: dict[str, Any] | None = None, skip_files: tuple[str, ...] = (), name: str = "ann.json"):
        data = tiny_coco_dict() if data is None else data
        image_dir = tmp_path / "images"
        image_dir.mkdir(exist_ok=True)
        for seed, image in enumerate(data.get("images", [])):
            file_name = image.get("file_name") if isinstance(image, dict) else None
            width, height = (image.get("width"), image.get("height")) if isinstance(image, dict) else (None, None)
            if not isinstance(file_name, str) or file_name in skip_files:
                continue
            if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
                write_image(image_dir / file_name, width, height, seed)
        ann_file = tmp_path / name
        ann_file.write_text(json.dumps(data))
        return ann_file, image_dir

    return factory


@pytest.fixture
def tiny_coco(make_coco: CocoFactory) -> tuple[Path, Path]:
    """(ann_file, image_dir) of :func:`tiny_coco_dict`."""
    return make_coco()


@pytest.fixture
def coco_dict() -> dict[str, Any]:
    """A fresh :func:`tiny_coco_dict` to modify before writing it with ``make_coco``."""
    return tiny_coco_dict()


@pytest.fixture
def encode_rle() -> Callable[..., dict[str, Any]]:
    """:func:`rle_of`: ``encode_rle(mask, compressed=True)``."""
    return rle_of
