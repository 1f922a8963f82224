"""Training targets of the mask heads (spec §2 and §4.1).

Shapes: N positive RoIs of one image; G ground-truth instances; S a stage size; H, W the image
size (the resized, unpadded input); Hp, Wp the padded batch size; h, w = Hp/4, Wp/4.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torchvision.ops import roi_align


def rasterize_polygons_in_boxes(
    polygons: list[list[np.ndarray]], boxes: np.ndarray, size: int
) -> np.ndarray:
    """Exact S×S mask targets: each RoI's GT polygons cropped to the box and rasterised (spec §4.1).

    Each polygon is shifted by the box origin and scaled by S/max(w, 1), S/max(h, 1), then
    rasterised at S×S with pycocotools (frPyObjects → merge → decode), as the official COCO and
    LVIS configs do (``poly2mask=False``). Unlike resampling a bitmap, nothing is lost to the
    image grid, which matters at 112×112.

    Args:
        polygons: for each RoI, its GT instance's polygons as flat [x0, y0, x1, y1, ...] arrays.
        boxes: (N, 4) boxes x1, y1, x2, y2, already clipped to the image.
        size: S.

    Returns:
        (N, S, S) uint8 masks.
    """
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


def resample_masks_in_boxes(masks: torch.Tensor, boxes: torch.Tensor, gt_index: torch.Tensor, size: int) -> torch.Tensor:
    """S×S mask targets from bitmaps: RoIAlign (aligned, adaptive sampling), then ≥ 0.5.

    The official Cityscapes setting (``poly2mask=True``) and our fallback for RLE instances.

    Args:
        masks: (G, H, W) GT bitmaps.
        boxes: (N, 4) boxes in the same pixel frame.
        gt_index: (N,) the GT instance of each box.
        size: S.

    Returns:
        (N, S, S) float {0, 1} targets.
    """
    if boxes.shape[0] == 0:
        return masks.new_zeros((0, size, size), dtype=torch.float32)
    rois = torch.cat([gt_index.to(boxes.dtype)[:, None], boxes], dim=1)
    sampled = roi_align(masks[:, None].float(), rois, size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return (sampled[:, 0] >= 0.5).float()


def stage_mask_targets(
    boxes: torch.Tensor,
    gt_index: torch.Tensor,
    target: dict,
    sizes: tuple[int, ...],
    image_size: tuple[int, int],
) -> list[torch.Tensor]:
    """Mask targets of one image's positive RoIs at every stage size.

    Instances with polygons are rasterised per RoI (exact, the official COCO/LVIS way); the
    others (RLE or bitmap-only ground truth) are resampled from ``target["masks"]``.

    Args:
        boxes: (N, 4) positive proposals in the resized image's pixels.
        gt_index: (N,) matched GT instance of each proposal.
        target: the image's target dict (``masks`` (G, H, W) and optionally ``polygons``).
        sizes: stage sizes, e.g. (14, 28, 56, 112).
        image_size: (H, W) of the resized (unpadded) image; boxes are clipped to it.

    Returns:
        one (N, S, S) float {0, 1} tensor per size.
    """
    device = boxes.device
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
        out = torch.zeros((n, size, size), dtype=torch.float32, device=device)
        poly_rows = torch.nonzero(has_poly).squeeze(1)
        if poly_rows.numel():
            polys = [polygons[int(gt_index[i])] for i in poly_rows]
            raster = rasterize_polygons_in_boxes(polys, clipped[poly_rows].cpu().numpy(), size)
            out[poly_rows.to(device)] = torch.from_numpy(raster).to(device=device, dtype=torch.float32)
        bitmap_rows = torch.nonzero(~has_poly).squeeze(1).to(device)
        if bitmap_rows.numel():
            out[bitmap_rows] = resample_masks_in_boxes(
                target["masks"], clipped[bitmap_rows], gt_index[bitmap_rows], size
            )
        outputs.append(out)
    return outputs


def semantic_target(masks: list[torch.Tensor], padded_size: tuple[int, int], map_size: tuple[int, int]) -> torch.Tensor:
    """Foreground target of the semantic head for a batch (spec §2).

    The union of each image's GT instance masks (crowd regions are not instances), zero-padded
    to the batch size, resized bilinearly (align_corners=False) to the stride-4 map, ≥ 0.5.

    Args:
        masks: per image, (G_i, H_i, W_i) instance masks (G_i may be 0).
        padded_size: (Hp, Wp) of the padded batch.
        map_size: (h, w) of the semantic logits.

    Returns:
        (B, h, w) float {0, 1}.
    """
    hp, wp = padded_size
    union = torch.zeros((len(masks), 1, hp, wp), dtype=torch.float32, device=masks[0].device if masks else "cpu")
    for i, m in enumerate(masks):
        if m.shape[0]:
            union[i, 0, : m.shape[-2], : m.shape[-1]] = m.amax(dim=0).float()
    resized = F.interpolate(union, size=map_size, mode="bilinear", align_corners=False)
    return (resized[:, 0] >= 0.5).float()
