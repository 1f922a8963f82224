"""Small scenes whose scores are known by construction.

Two images (128x128 and 96x128) with rectangles, a thin bar, an L shape and a ring, in three
categories whose COCO ids (5, 7, 9) differ from the contiguous labels (1, 2, 3), so a mix-up of
the two shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from refinemask.evaluation.coco import encode_masks

LABEL_TO_CATEGORY = {1: 5, 2: 7, 3: 9}


def rectangle(height: int, width: int, top: int, left: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top : top + h, left : left + w] = 1
    return mask


def grow_one_pixel(mask: np.ndarray) -> np.ndarray:
    """Dilate by one pixel (4-neighbourhood plus diagonals: a 3x3 square)."""
    padded = np.pad(mask, 1)
    grown = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return grown


def box_of(mask: np.ndarray) -> list[float]:
    """XYXY box enclosing the mask's pixels (right/bottom edges exclusive)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@dataclass
class Scene:
    """Ground truth as a COCO dict plus the masks it was made from."""

    sizes: dict[int, tuple[int, int]]  # image id -> (H, W)
    instances: dict[int, list[tuple[np.ndarray, int]]] = field(
        default_factory=dict
    )  # (mask, label)

    def ground_truth(self) -> dict:
        images = [
            {"id": i, "height": h, "width": w, "file_name": f"{i}.png"}
            for i, (h, w) in self.sizes.items()
        ]
        annotations = []
        for image_id, instances in self.instances.items():
            for mask, label in instances:
                x0, y0, x1, y1 = box_of(mask)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": LABEL_TO_CATEGORY[label],
                        "segmentation": encode_masks(mask[None])[0],
                        "area": float(mask.sum()),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "iscrowd": 0,
                    }
                )
        categories = [{"id": c, "name": f"class{c}"} for c in LABEL_TO_CATEGORY.values()]
        return {"images": images, "annotations": annotations, "categories": categories}

    def outputs(self, transform=lambda mask: mask, scores=None) -> tuple[list[dict], list[int]]:
        """torchvision-style outputs predicting every instance, masks passed through ``transform``.

        Masks are float probabilities (0.9 inside, 0.1 outside) of shape (N, 1, H, W).
        """
        outputs, image_ids = [], []
        for image_id, instances in self.instances.items():
            masks = [transform(mask) for mask, _ in instances]
            n = len(masks)
            outputs.append(
                {
                    "boxes": torch.tensor([box_of(m) for m in masks], dtype=torch.float32),
                    "labels": torch.tensor([label for _, label in instances], dtype=torch.int64),
                    "scores": torch.tensor(
                        scores if scores is not None else [0.9] * n, dtype=torch.float32
                    ),
                    "masks": torch.from_numpy(
                        np.stack(masks)[:, None].astype(np.float32) * 0.8 + 0.1
                    ),
                }
            )
            image_ids.append(image_id)
        return outputs, image_ids


def build_scene() -> Scene:
    scene = Scene(sizes={1: (128, 128), 2: (96, 128)})
    l_shape = rectangle(128, 128, 60, 80, 50, 10) | rectangle(128, 128, 100, 80, 10, 40)
    ring = rectangle(96, 128, 40, 20, 40, 50) & (1 - rectangle(96, 128, 48, 28, 24, 34))
    scene.instances[1] = [
        (rectangle(128, 128, 20, 30, 30, 40), 1),  # 1200 px: medium
        (rectangle(128, 128, 80, 10, 6, 100), 2),  # thin bar, 600 px: small
        (l_shape, 1),
    ]
    scene.instances[2] = [
        (rectangle(96, 128, 10, 10, 30, 30), 2),  # 900 px: small
        (ring, 3),
        (rectangle(96, 128, 8, 70, 24, 50), 3),
    ]
    return scene


# --- a fake Cityscapes ground truth: one image of gtFine instance ids --------------------------

CITYSCAPES_SIZE = (96, 128)
CITYSCAPES_STEM = "fakecity_000000_000019"
# instance id = label id * 1000 + k (person 24, car 26); a plain label id below 1000 is stuff
# (road 7), void (0) or a group of objects
CITYSCAPES_PEOPLE = {
    24000: rectangle(96, 128, 10, 10, 40, 12),
    24001: rectangle(96, 128, 10, 40, 40, 12),
}
CITYSCAPES_CARS = {26001: rectangle(96, 128, 60, 10, 20, 40)}
CITYSCAPES_CAR_GROUP = rectangle(96, 128, 60, 70, 20, 30)  # several cars labelled as one region
CITYSCAPES_VOID_AREA = rectangle(96, 128, 0, 100, 40, 28)


def write_fake_cityscapes(root: Path) -> Path:
    """Write ``gtFine/val/fakecity/<stem>_gtFine_instanceIds.png``; returns ``gtFine/val``."""
    ids = np.full(CITYSCAPES_SIZE, 7, dtype=np.uint16)  # road
    ids[CITYSCAPES_VOID_AREA == 1] = 0
    ids[CITYSCAPES_CAR_GROUP == 1] = 26
    for instance_id, mask in {**CITYSCAPES_PEOPLE, **CITYSCAPES_CARS}.items():
        ids[mask == 1] = instance_id
    folder = root / "gtFine" / "val" / "fakecity"
    folder.mkdir(parents=True)
    Image.fromarray(ids).save(folder / f"{CITYSCAPES_STEM}_gtFine_instanceIds.png")
    return root / "gtFine" / "val"
