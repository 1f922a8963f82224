"""The per-RoI polygon targets as first written (one pycocotools call per RoI and size).

Kept as the reference the batched :func:`refinemask.modeling.targets.stage_mask_targets` must
equal exactly: it is the obvious reading of docs/design.md §3.1, one RoI at a time. The tests
(tests/modeling/test_targets.py) hold the two equal and ``benchmarks/pipeline.py --reference``
times them side by side; the model never calls it (it is many times slower).
"""
from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from refinemask.modeling.targets import resample_masks_in_boxes


def rasterize_one_roi_at_a_time(polygons: list[list[np.ndarray]], boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S) uint8: each RoI's polygons shifted, scaled and rasterised on their own."""
    out = np.zeros((len(boxes), size, size), dtype=np.uint8)
    for i, (polys, box) in enumerate(zip(polygons, boxes)):
        x1, y1, x2, y2 = (float(v) for v in box)
        sx = size / max(x2 - x1, 1.0)
        sy = size / max(y2 - y1, 1.0)
        scaled = []
        for p in polys:
            q = np.asarray(p, dtype=np.float64).copy()
            q[0::2] = (q[0::2] - x1) * sx
            q[1::2] = (q[1::2] - y1) * sy
            if len(q) >= 6:
                scaled.append(q.tolist())
        if not scaled:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(scaled, size, size))
        out[i] = mask_utils.decode(rle)
    return out


def stage_mask_targets_reference(boxes, gt_index, target, sizes, image_size) -> list[torch.Tensor]:
    """The stage targets as first written, on :func:`rasterize_one_roi_at_a_time`."""
    h, w = image_size
    clipped = boxes.detach().clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, h)
    n = boxes.shape[0]
    polygons = target.get("polygons")
    if polygons is not None:
        has_poly = torch.tensor([polygons[int(g)] is not None for g in gt_index], dtype=torch.bool)
    else:
        has_poly = torch.zeros(n, dtype=torch.bool)
    outputs = []
    for size in sizes:
        out = torch.zeros((n, size, size), dtype=torch.float32)
        poly_rows = torch.nonzero(has_poly).squeeze(1)
        if poly_rows.numel():
            polys = [polygons[int(gt_index[i])] for i in poly_rows]
            out[poly_rows] = torch.from_numpy(rasterize_one_roi_at_a_time(polys, clipped[poly_rows].numpy(), size)).float()
        bitmap_rows = torch.nonzero(~has_poly).squeeze(1)
        if bitmap_rows.numel():
            out[bitmap_rows] = resample_masks_in_boxes(target["masks"], clipped[bitmap_rows], gt_index[bitmap_rows], size)
        outputs.append(out)
    return outputs
