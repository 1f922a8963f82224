"""Training targets of the mask heads (docs/design.md §3).

Shapes: N positive RoIs of one image; G ground-truth instances; S a stage size; H, W the image
size (the resized, unpadded input); Hp, Wp the padded batch size; h, w = Hp/4, Wp/4.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from refinemask.modeling.ops import roi_align


def rasterize_polygons_in_boxes(
    polygons: list[list[np.ndarray]], boxes: np.ndarray, size: int
) -> np.ndarray:
    """Exact S×S mask targets: each RoI's GT polygons cropped to the box and rasterised (docs/design.md §3.1).

    Each polygon is shifted by the box origin and scaled by S/max(w, 1), S/max(h, 1), then
    rasterised at S×S with pycocotools (frPyObjects, union of the parts, decode), as the official
    COCO and LVIS configs do (``poly2mask=False``). Unlike resampling a bitmap, nothing is lost to
    the image grid, which matters at 112×112. Polygons of fewer than 3 points are ignored.

    Args:
        polygons: for each RoI, its GT instance's polygons as flat [x0, y0, x1, y1, ...] arrays.
        boxes: (N, 4) boxes x1, y1, x2, y2, already clipped to the image.
        size: S.

    Returns:
        (N, S, S) uint8 masks.
    """
    return rasterize_polygons_at_sizes(polygons, boxes, (size,))[0]


def rasterize_polygons_at_sizes(
    polygons: list[list[np.ndarray]], boxes: np.ndarray, sizes: tuple[int, ...]
) -> list[np.ndarray]:
    """:func:`rasterize_polygons_in_boxes` at several sizes at once, batched per image.

    The same arithmetic and the same pycocotools calls as one RoI at a time (frPyObjects, merge,
    decode), so the masks are identical; but the RoIs of one GT instance (they share its polygon
    list) are shifted and scaled in one numpy expression, and every polygon of every RoI goes
    through one ``frPyObjects`` and one ``decode`` call per size: with 512 RoIs a few Python calls
    instead of thousands. Only the RoIs of multi-part instances need a ``merge``.

    Args:
        polygons: for each RoI, its GT instance's polygons; RoIs of the same instance should pass
            the same list object (that is what groups them).
        boxes: (N, 4) clipped boxes.
        sizes: the S of each output.

    Returns:
        one (N, S, S) uint8 array per size (a transposed view of pycocotools' (S, S, N) output).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    groups = _instance_groups(polygons)
    if not groups:
        return [np.zeros((len(boxes), s, s), dtype=np.uint8) for s in sizes]
    outputs = []
    for size in sizes:
        scaled: list[np.ndarray] = []
        bounds: list[tuple[int, int]] = [(0, 0)] * len(boxes)  # each RoI's polygons in `scaled`
        for layout, members in groups:
            b = boxes[members]
            # float64 throughout, in the order (p - x1) * (S / max(w, 1)): the same roundings as
            # the per-RoI formulation, hence the same rasterised pixels
            scale_x = size / np.maximum(b[:, 2] - b[:, 0], 1.0)
            scale_y = size / np.maximum(b[:, 3] - b[:, 1], 1.0)
            origin = np.where(layout.is_x, b[:, 0:1], b[:, 1:2])
            scale = np.where(layout.is_x, scale_x[:, None], scale_y[:, None])
            coords = (layout.flat - origin) * scale  # (n, L)
            for roi, row in zip(members.tolist(), coords):
                bounds[roi] = (len(scaled), len(scaled) + len(layout.bounds))
                scaled.extend(row[a:z] for a, z in layout.bounds)
        parts = mask_utils.frPyObjects(scaled, size, size)
        empty = None
        rles = []
        for a, z in bounds:
            if z - a == 1:
                rles.append(parts[a])
            elif z > a:
                rles.append(mask_utils.merge(parts[a:z]))
            else:  # nothing drawable (no polygon of 3 points): an empty target
                empty = empty or mask_utils.encode(np.zeros((size, size, 1), dtype=np.uint8, order="F"))[0]
                rles.append(empty)
        # pycocotools decodes to (S, S, N) in Fortran order: the transpose is a view, no copy
        outputs.append(mask_utils.decode(rles).transpose(2, 0, 1))
    return outputs


class _PolygonLayout:
    """One instance's polygons of ≥ 3 points, concatenated in float64 (RoI-independent work).

    ``flat`` (L,) holds every coordinate, ``is_x`` (L,) marks the x ones (each polygon's even
    positions), ``bounds`` the [start, end) of each polygon in ``flat``.
    """

    def __init__(self, polys: list[np.ndarray]):
        kept = [np.asarray(p, dtype=np.float64).reshape(-1) for p in polys]
        kept = [p for p in kept if len(p) >= 6]
        ends = np.cumsum([len(p) for p in kept]).tolist()
        self.bounds = list(zip([0] + ends[:-1], ends))
        self.flat = np.concatenate(kept) if kept else np.zeros(0)
        self.is_x = np.concatenate([np.arange(len(p)) % 2 == 0 for p in kept]) if kept else np.zeros(0, bool)


def _instance_groups(polygons: list[list[np.ndarray]]) -> list[tuple[_PolygonLayout, np.ndarray]]:
    """RoIs grouped by their instance's polygon list: [(layout, RoI indices)], empty ones left out."""
    by_list: dict[int, list[int]] = {}
    lists: dict[int, list[np.ndarray]] = {}
    for i, polys in enumerate(polygons):
        by_list.setdefault(id(polys), []).append(i)
        lists[id(polys)] = polys
    groups = []
    for key, members in by_list.items():
        layout = _PolygonLayout(lists[key])
        if layout.bounds:
            groups.append((layout, np.asarray(members, dtype=np.int64)))
    return groups


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
    sampled = roi_align(masks[:, None].float(), rois, size, 1.0, sampling_ratio=0, aligned=True)
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
    others (RLE or bitmap-only ground truth) are resampled from ``target["masks"]``: row
    ``target["mask_rows"][g]`` for instance g when the target is compact
    (:func:`refinemask.data.transforms.drop_polygon_bitmaps`), row g otherwise.

    Args:
        boxes: (N, 4) positive proposals in the resized image's pixels.
        gt_index: (N,) matched GT instance of each proposal.
        target: the image's target dict (``masks`` (G, H, W) or (G_b, H, W) with ``mask_rows``,
            and optionally ``polygons``).
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
    if n == 0:
        return [torch.zeros((0, size, size), dtype=torch.float32, device=device) for size in sizes]
    # one device -> host copy for the whole image, not one per RoI
    instances = gt_index.tolist()
    polygons = target.get("polygons")
    poly_rows = [i for i, g in enumerate(instances) if polygons is not None and polygons[g] is not None]
    bitmap_rows = [i for i, g in enumerate(instances) if polygons is None or polygons[g] is None]
    rasters = None
    if poly_rows:
        polys = [polygons[instances[i]] for i in poly_rows]
        rasters = rasterize_polygons_at_sizes(polys, clipped[poly_rows].cpu().numpy(), tuple(sizes))
    if len(poly_rows) == n:
        # uint8 to the device (a quarter of the bytes), made float there
        return [torch.from_numpy(r).to(device).float() for r in rasters]
    masks = target["masks"]
    rows = torch.as_tensor(bitmap_rows, dtype=torch.int64, device=device)
    bitmap_gt = gt_index[rows]
    if "mask_rows" in target:
        bitmap_gt = target["mask_rows"].to(device)[bitmap_gt]
    # only the bitmaps these RoIs read, made float once for all stages
    used, local = torch.unique(bitmap_gt, return_inverse=True)
    bitmaps = masks[used].float()
    poly_index = torch.as_tensor(poly_rows, dtype=torch.int64, device=device)
    outputs = []
    for k, size in enumerate(sizes):
        out = torch.zeros((n, size, size), dtype=torch.float32, device=device)
        if rasters is not None:
            out[poly_index] = torch.from_numpy(rasters[k]).to(device).float()
        out[rows] = resample_masks_in_boxes(bitmaps, clipped[rows], local, size)
        outputs.append(out)
    return outputs


def instance_union(target: dict) -> torch.Tensor:
    """(H, W) union of an image's instance masks: ``target["semantic"]`` when the data pipeline
    built it (compact targets), else the maximum over ``target["masks"]`` (G, H, W)."""
    if "semantic" in target:
        return target["semantic"]
    masks = target["masks"]
    if masks.shape[0] == 0:
        return masks.new_zeros(masks.shape[-2:])
    return masks.amax(dim=0)


def semantic_target(unions: list[torch.Tensor], padded_size: tuple[int, int], map_size: tuple[int, int]) -> torch.Tensor:
    """Foreground target of the semantic head for a batch (docs/design.md §3.2).

    The union of each image's GT instance masks (crowd regions are not instances), zero-padded
    to the batch size, resized bilinearly (align_corners=False) to the stride-4 map, ≥ 0.5.

    Args:
        unions: per image, the (H_i, W_i) union of its instance masks (:func:`instance_union`).
        padded_size: (Hp, Wp) of the padded batch.
        map_size: (h, w) of the semantic logits.

    Returns:
        (B, h, w) float {0, 1}.
    """
    hp, wp = padded_size
    union = torch.zeros((len(unions), 1, hp, wp), dtype=torch.float32, device=unions[0].device if unions else "cpu")
    for i, m in enumerate(unions):
        union[i, 0, : m.shape[-2], : m.shape[-1]] = m.float()
    resized = F.interpolate(union, size=map_size, mode="bilinear", align_corners=False)
    return (resized[:, 0] >= 0.5).float()
