"""What several benchmark scripts share: synthetic scenes and data sets, model settings, a run.

The scripts run as ``python benchmarks/X.py``, so this folder is on ``sys.path`` and they
import this module plainly (``from common import ...``); nothing here imports from ``tests/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

# the metrics the training benchmarks report, as (metric_key, name) pairs of evaluate_coco's dict
ROWS = (("segm", "AP"), ("boundary", "AP"), ("boundary@0.008", "AP"), ("bbox", "AP"))
CATEGORIES = ("cross", "crescent", "triangle", "arrow")


def _shape(draw, kind: str, cx: float, cy: float, r: float, angle: float, rng) -> None:
    """Draw one filled shape of radius ~r at (cx, cy) into a PIL ImageDraw of a mode-L mask."""
    def rotated(points):
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if kind == "cross":
        w = r * rng.uniform(0.18, 0.3)
        arm = [(-r, -w), (r, -w), (r, w), (-r, w)]
        draw.polygon(rotated(arm), fill=1)
        draw.polygon(rotated([(y, x) for x, y in arm]), fill=1)
    elif kind == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        shift = r * rng.uniform(0.35, 0.6)
        ox, oy = cx + shift * np.cos(angle), cy + shift * np.sin(angle)
        draw.ellipse([ox - r, oy - r, ox + r, oy + r], fill=0)
    elif kind == "triangle":
        draw.polygon(rotated([(r * np.cos(a), r * np.sin(a)) for a in (0, 2.1, 4.2)]), fill=1)
    else:  # arrow: a shaft and a head
        w = r * 0.15
        draw.polygon(rotated([(-r, -w), (0.3 * r, -w), (0.3 * r, -0.5 * r), (r, 0), (0.3 * r, 0.5 * r),
                              (0.3 * r, w), (-r, w)]), fill=1)


def make_transfer_set(root: Path, num_train: int, num_val: int, size: int, seed: int) -> tuple[Path, Path, Path]:
    """(train.json, val.json, images/) of the shapes above, 1-3 objects per image."""
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 11 + 10 * i, "name": name} for i, name in enumerate(CATEGORIES)]  # ids with gaps
    rng = np.random.default_rng(seed)
    paths = []
    for split, count in (("train", num_train), ("val", num_val)):
        images, annotations = [], []
        for index in range(count):
            background = rng.uniform(0.2, 0.8, 3)
            canvas = np.ones((size, size, 3)) * background + rng.normal(0, 0.04, (size, size, 3))
            owner = np.zeros((size, size), dtype=np.int32)
            kinds = []
            for n in range(int(rng.integers(1, 4))):
                kind = int(rng.integers(len(CATEGORIES)))
                mask_image = Image.new("L", (size, size), 0)
                r = size * rng.uniform(0.12, 0.28)
                _shape(ImageDraw.Draw(mask_image), CATEGORIES[kind], *rng.uniform(r, size - r, 2), r,
                       rng.uniform(0, 2 * np.pi), rng)
                mask = np.asarray(mask_image) > 0
                colour = (background + rng.choice([-1, 1], 3) * rng.uniform(0.25, 0.45, 3)).clip(0, 1)
                canvas[mask] = colour
                owner[mask] = n + 1
                kinds.append(kind)
            name = f"{split}_{index:05d}.png"
            Image.fromarray((canvas.clip(0, 1) * 255).astype(np.uint8)).save(images_dir / name)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for n, kind in enumerate(kinds):
                visible = np.asfortranarray((owner == n + 1).astype(np.uint8))
                if visible.sum() < 30:
                    continue
                rle = mask_utils.encode(visible)
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": categories[kind]["id"],
                    "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
                    "bbox": [x, y, w, h], "area": float(visible.sum()), "iscrowd": 0,
                })
        path = root / f"{split}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        paths.append(path)
    return paths[0], paths[1], images_dir


def run(config_name: str, out: Path, overrides: list[str]) -> dict:
    from refinemask.config import load_config
    from refinemask.engine.train import train

    config = load_config(config_name, [f"train.output_dir={out}", "train.progress_bar=false", *overrides])
    train(config)
    metrics = out / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def star_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, vertices: int) -> np.ndarray:
    """A flat [x0, y0, ...] star-shaped polygon around (cx, cy): radius varying by angle."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.35, 1.0, vertices)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).reshape(-1)


def scene_polygons(rng: np.random.Generator, height: int, width: int, instances: int) -> list[list[np.ndarray]]:
    """Per instance a list of polygons (one, or two parts for a quarter of them), inside the image."""
    out = []
    for _ in range(instances):
        radius = float(rng.uniform(min(12, min(height, width) / 4), min(200, min(height, width) / 2 - 1)))
        cx = float(rng.uniform(radius, width - radius))
        cy = float(rng.uniform(radius, height - radius))
        parts = [star_polygon(rng, cx, cy, radius, int(rng.integers(12, 61)))]
        if rng.random() < 0.25:
            parts.append(star_polygon(rng, cx + radius * 0.5, cy, radius * 0.4, int(rng.integers(12, 31))))
        out.append([np.clip(p, 0, [width, height] * (len(p) // 2)) for p in parts])
    return out


def positive_rois(boxes: torch.Tensor, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` jittered copies of the GT ``boxes`` (G, 4), each at IoU ≥ 0.5 with its GT.

    Returns (count, 4) boxes and (count,) their GT index, the shape of the sampler's positives.
    """
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(seed)
    gt_index = torch.arange(count) % boxes.shape[0]
    base = boxes[gt_index]
    wh = (base[:, 2:] - base[:, :2]).repeat(1, 2)
    out = base.clone()
    todo = torch.ones(count, dtype=torch.bool)
    while todo.any():
        jitter = (torch.rand(int(todo.sum()), 4, generator=g) - 0.5) * 0.3 * wh[todo]
        out[todo] = base[todo] + jitter
        iou = box_iou(out, base).diagonal()
        todo = iou < 0.5
    return out, gt_index


def model_options(backbone: str, detections: int, min_size: int, max_size: int, mask_positives: int = 0,
                  box_rois: int = 512) -> dict:
    """``build_model`` settings for a fixed number of detections (no score threshold, no NMS).

    ``box_rois`` is the number of proposals sampled per image to train the box head (512 in
    every official config); only a training step sees it.
    """
    return dict(
        num_classes=80, backbone=backbone, min_size=[min_size], max_size=max_size, box_score_thresh=0.0,
        detections_per_img=detections, box_nms_thresh=1.0, mask_positives_per_image=mask_positives,
        box_batch_size_per_image=box_rois,
    )
