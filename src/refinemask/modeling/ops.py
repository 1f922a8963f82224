"""Pure tensor functions of RefineMask: boundary bands, stage assembly, mask paste, RoI levels.

Shapes: N RoIs (or detections); S the side of a square stage map (14, 28, 56, 112);
B images; C channels; H, W an image's height and width in pixels.

These functions hold no parameters, so the model, the loss, the trainer, the benchmarks and the
ONNX export all share one implementation, and each can be tested alone against hand-computed
cases (tests/modeling/test_ops.py).

Every RoIAlign and bilinear resize of the model goes through :func:`roi_align` and
:func:`resize_bilinear`: torchvision's and PyTorch's kernels, except with deterministic
algorithms on CUDA (``train.deterministic=true``), where their backward has no deterministic
kernel and :mod:`refinemask.modeling.separable_ops` computes the same values as products with
weight matrices instead.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
import torchvision

from refinemask.modeling.separable_ops import resize_by_matrices, separable_roi_align


def deterministic_kernels_needed(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s RoIAlign and resizes take :mod:`~refinemask.modeling.separable_ops`.

    On CUDA with ``torch.use_deterministic_algorithms(True)``: there torchvision's ``roi_align``
    falls back to a Python version whose backward, with adaptive sampling, needs K×C×P×Q×H×W
    values (out of memory at 256 px), and the bilinear ``F.interpolate`` backward has no
    deterministic kernel at all. Never while tracing (the export keeps the standard operators).
    """
    return tensor.is_cuda and torch.are_deterministic_algorithms_enabled() and not torch.jit.is_tracing()


def resize_bilinear(x: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) maps to (N, C, size, size), deterministic on CUDA when asked."""
    if deterministic_kernels_needed(x):
        return resize_by_matrices(x, (size, size), align_corners)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=align_corners)


def boundary_band(masks: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels near the foreground/background edge of binary masks (docs/design.md §3.3).

    A foreground pixel is in the band when more than 10% of the (2w+1)×(2w+1) window around it
    is background; a background pixel is in the band when more than 10% of its window is
    foreground. The window reads zeros beyond the map, so the RoI border counts as background:
    foreground that touches the border is always in the band. With w=1 that is "any
    opposite-class pixel among the 8 neighbours"; with w=2, "at least 3 in the 5×5 window".
    This is the official ``generate_block_target(mask, w) == 1``, written as a box count.

    Args:
        masks: (N, S, S) or (N, 1, S, S), bool or {0, 1} float.
        width: the band width w ≥ 1.

    Returns:
        bool tensor of the same shape as ``masks``.
    """
    squeeze = masks.dim() == 3
    fg = masks.float()
    if squeeze:
        fg = fg.unsqueeze(1)
    k = 2 * width + 1
    window = k * k
    # Sum of foreground in each window; zero padding makes the outside background.
    fg_count = F.avg_pool2d(fg, k, stride=1, padding=width, count_include_pad=True) * window
    fg_count = fg_count.round()  # counts are integers; remove avg_pool's rounding noise
    bg_count = window - fg_count
    threshold = 0.1 * window
    is_fg = fg > 0.5
    band = (is_fg & (bg_count > threshold)) | (~is_fg & (fg_count > threshold))
    return band.squeeze(1) if squeeze else band


def upsample_logits(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (N, 1, S, S) maps to (N, 1, size, size) with align_corners=True.

    align_corners=True here to match the official assembly and BAR loss, which differ from the
    SFM feature upsampling (align_corners=False)."""
    return resize_bilinear(logits, size, align_corners=True)


def assemble_stage_logits(stage_logits: list[torch.Tensor]) -> torch.Tensor:
    """Merge per-stage mask logits into the final map, as at official inference (docs/design.md §5.2).

    Starting from the second stage (28×28; the 14×14 output is never used at inference), each
    finer stage keeps its own logits only inside the width-1 boundary band of the current
    assembled prediction, and takes the upsampled current logits everywhere else. The merge is
    cumulative: the 112 map is built on the assembled 56 map.

    Args:
        stage_logits: list of (N, 1, S_k, S_k) logits for S_k = 14, 28, 56, 112.

    Returns:
        (N, 1, S_last, S_last) logits.
    """
    current = stage_logits[1]
    for finer in stage_logits[2:]:
        size = finer.shape[-1]
        # sigmoid ≥ 0.5 rather than logits ≥ 0: the official test, and not identical in float32
        band = boundary_band(current.sigmoid() >= 0.5, width=1)
        keep_coarse = upsample_logits((~band).float(), size) >= 0.5
        current = torch.where(keep_coarse, upsample_logits(current, size), finer)
    return current


def map_roi_levels(boxes: torch.Tensor, finest_scale: float = 56.0, num_levels: int = 4) -> torch.Tensor:
    """FPN level of each box by mmdetection v2.3's rule (docs/design.md §1.4).

    ``level = clamp(floor(log2(sqrt(w*h) / finest_scale + 1e-6)), 0, num_levels - 1)``, with w
    and h taken without +1. Level 0 is P2: boxes under 112 px go to P2, 112–224 to P3,
    224–448 to P4, the rest to P5.

    Args:
        boxes: (N, 4) boxes x1, y1, x2, y2.

    Returns:
        (N,) int64 level indices.
    """
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).to(torch.int64)


def boxes_to_rois(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-image (N_i, 4) boxes into (N, 5) rois [batch_index, x1, y1, x2, y2]."""
    # shape[0], not len(): a traced size under ONNX export, so the number of boxes stays dynamic
    rois = [torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1) for i, b in enumerate(boxes)]
    if not rois:
        return torch.zeros((0, 5))
    return torch.cat(rois, dim=0)


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> torch.Tensor:
    """torchvision's ``roi_align`` (same arguments), with the RoI coordinates and the sampling grid
    in float32 or wider, and deterministic on CUDA when asked (:func:`deterministic_kernels_needed`).

    Under autocast the features are fp16/bf16. RoIs in that dtype would be rounded before any
    sampling (bf16 keeps 8 significant bits: 2 px steps from 256 px, 8 px from 1024 px), so the
    pooled windows would no longer be the boxes the mask targets are cut from (those stay
    float32). Here the bilinear sampling runs in the coordinates' precision, as torchvision's own
    autocast kernel does (it casts the features up, not the boxes down), whatever device or
    autocast state; only the result takes the features' dtype.

    Args:
        features: (B, C, h, w) in any floating dtype.
        rois: (N, 5) [batch_index, x1, y1, x2, y2] in input-image pixels.

    Returns:
        (N, C, output_size, output_size) in the features' dtype.
    """
    wide = torch.promote_types(rois.dtype, torch.float32)
    # dtype checks in Python, not casts that are no-ops: an fp32 trace stays free of Cast nodes
    if rois.dtype != wide:
        rois = rois.to(wide)
    source = features if features.dtype == wide else features.to(wide)
    if deterministic_kernels_needed(source):
        pooled = separable_roi_align(source, rois, output_size, spatial_scale, sampling_ratio, aligned)
    else:
        pooled = torchvision.ops.roi_align(
            source, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned
        )
    return pooled if pooled.dtype == features.dtype else pooled.to(features.dtype)


def multilevel_roi_align(
    features: list[torch.Tensor],
    rois: torch.Tensor,
    output_size: int,
    strides: list[int],
    finest_scale: float = 56.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> torch.Tensor:
    """RoIAlign from the FPN level chosen for each RoI, as mmcv does it.

    By default aligned=True and sampling_ratio=0 (adaptive: ceil(bin size) points per bin
    axis), where torchvision's ``MultiScaleRoIAlign`` hard-codes aligned=False and samples 2
    points per bin: the official weights were trained with mmcv's settings (docs/design.md §1.4).
    Adaptive sampling reads more points on large boxes (a 7×7 pool of a 440 px box, on P4, takes
    4×4 points per bin, four times torchvision's); ``sampling_ratio=2, aligned=False`` give
    torchvision's settings.

    Args:
        features: one (B, C, H_l, W_l) map per level, finest first.
        rois: (N, 5) [batch_index, x1, y1, x2, y2] in input-image pixels.
        output_size: side of the pooled square.
        strides: the stride of each level.

    Returns:
        (N, C, output_size, output_size).
    """
    num_levels = len(features)
    # the level rule reads box areas: in fp16 w·h overflows above about 256×256 (such a box would
    # go to P5), in bf16 it is rounded; coordinates stay float32 or wider (see roi_align)
    levels = map_roi_levels(rois[:, 1:], finest_scale, num_levels)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], output_size, output_size))
    for level, (feature, stride) in enumerate(zip(features, strides)):
        index = torch.nonzero(levels == level).squeeze(1)
        # skipping an empty level saves a call, but a trace must keep every level: which levels
        # are empty depends on the image
        if index.numel() == 0 and not torch.jit.is_tracing():
            continue
        pooled = roi_align(feature, rois[index], output_size, 1.0 / stride, sampling_ratio, aligned)
        out.index_copy_(0, index, pooled.to(out.dtype))
    return out


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, chunk_pixels: int = 2**25
) -> torch.Tensor:
    """Paste square mask probabilities into the image, sampling at pixel centres (docs/design.md §5.3).

    Image pixel (i, j) has its centre at (j + 0.5, i + 0.5); that point is mapped into the box
    and read from the mask bilinearly with zero padding, as ``grid_sample(align_corners=False)``
    does in mmdetection's and detectron2's ``_do_paste_mask``. (torchvision's paste instead
    resizes each mask to integer box sizes and loses up to a pixel at every edge.)

    The values are those of :func:`paste_windows`, written into zero (N, 1, H, W) maps: N·H·W
    floats, which is what large images cannot afford (a 36 MP image with 24 detections is 3.5
    GB); callers that only need RLE, overlays or crops read the windows instead
    (:class:`refinemask.modeling.box_masks.BoxMasks`).

    Args:
        masks: (N, 1, M, M) or (N, M, M) probabilities.
        boxes: (N, 4) boxes x1, y1, x2, y2 in output-image pixels.
        height, width: output image size.
        chunk_pixels: bound on N·(H + W) sampling positions computed at once, to bound memory.

    Returns:
        (N, 1, height, width) float probabilities; threshold at 0.5 for binary masks.
    """
    n = masks.shape[0]
    out = masks.new_zeros((n, 1, height, width))
    for i, top, left, window in paste_windows(masks, boxes, height, width, chunk_pixels):
        out[i, 0, top : top + window.shape[0], left : left + window.shape[1]] = window
    return out


def paste_windows(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, chunk_pixels: int = 2**25
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Each mask's paste over its own window of the image: ``(i, top, left, window (h, w))``.

    The sampling of :func:`paste_masks`, computed only where it can be non-zero: the rows and
    columns whose sample falls within one mask cell of the mask, that is the box widened by half
    a cell and rounded out to pixels. Everywhere else both bilinear taps read the zero padding,
    so a full-image computation gives exact zeros there, and inside the window the same
    per-pixel arithmetic gives the same values (a 28×28 mask of a 100×100 box touches 1% of an
    800×1216 image). The sampling is separable (a column's x depends only on j, a row's y only
    on i), so the read is two 1-D interpolations with index lookups.

    Masks whose window is empty (boxes wholly outside the image) are skipped; the others come
    in order. Memory: one window at a time, plus N·(H + W) positions per chunk.

    Args: as :func:`paste_masks`.
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    n, mh, mw = masks.shape
    if n == 0:
        return
    # one zero row/column on each side stands for grid_sample's zero padding
    padded = F.pad(masks, (1, 1, 1, 1))
    per_chunk = max(1, chunk_pixels // max(1, height + width))
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        # positions for every pixel centre of the image (cheap: N·(H + W) values), so that the
        # window's positions are the very numbers a full-image paste computes
        x0, fx = _sample_positions(boxes[start:stop, 0], boxes[start:stop, 2], width, mw)  # (k, W)
        y0, fy = _sample_positions(boxes[start:stop, 1], boxes[start:stop, 3], height, mh)  # (k, H)
        xs, xe = _reading_span(x0, fx, mw)
        ys, ye = _reading_span(y0, fy, mh)
        fx, fy = fx.to(padded.dtype), fy.to(padded.dtype)
        for k, i in enumerate(range(start, stop)):
            if xs[k] >= xe[k] or ys[k] >= ye[k]:
                continue
            m = padded[i]
            cx, wx = x0[k, xs[k] : xe[k]], fx[k, xs[k] : xe[k]]
            cy, wy = y0[k, ys[k] : ye[k]], fy[k, ys[k] : ye[k], None]
            rows = m.index_select(1, cx) * (1 - wx) + m.index_select(1, cx + 1) * wx  # (M + 2, w)
            window = rows.index_select(0, cy) * (1 - wy) + rows.index_select(0, cy + 1) * wy  # (h, w)
            yield i, ys[k], xs[k], window


def _reading_span(index: torch.Tensor, frac: torch.Tensor, size: int) -> tuple[list[int], list[int]]:
    """Per mask, the [first, last + 1) pixels whose bilinear taps can read the mask itself.

    ``index``, ``frac`` as :func:`_sample_positions` returns them, (K, L). A pixel reads only
    padding zeros when its left tap is the left padding with weight 1 on it (index 0,
    frac 0) or its right tap is the right padding with weight 1 (index ``size``, frac 1); the
    positions grow with the pixel, so the others form one span. Empty spans give first = last.
    """
    reads = ~(((index == 0) & (frac == 0)) | ((index == size) & (frac == 1)))
    length = reads.shape[1]
    any_read = reads.any(dim=1)
    first = torch.where(any_read, reads.int().argmax(dim=1), torch.zeros_like(any_read, dtype=torch.int64))
    last = torch.where(any_read, length - reads.flip(1).int().argmax(dim=1), torch.zeros_like(first))
    return first.tolist(), last.tolist()


def _sample_positions(lo: torch.Tensor, hi: torch.Tensor, length: int, size: int):
    """Where pixel centres 0.5 … length-0.5, mapped into [lo, hi], fall on a size-long axis.

    grid_sample(align_corners=False) maps the normalised coordinate
    g = (p + 0.5 - lo) / (hi - lo) * 2 - 1 to the source position u = ((g + 1) * size - 1) / 2.

    Returns:
        (N, length) int64 index of the left neighbour in the zero-padded axis (clamped so that
        both neighbours stay inside it; out-of-range neighbours land on the zero padding), and
        (N, length) the fraction toward the right neighbour.
    """
    centres = torch.arange(length, device=lo.device, dtype=torch.float32) + 0.5
    lo = lo.float()[:, None]
    hi = hi.float()[:, None]
    g = (centres[None] - lo) / (hi - lo) * 2 - 1
    u = ((g + 1) * size - 1) / 2
    u0 = torch.floor(u)
    frac = u - u0
    # +1 for the padding; positions beyond the axis read only padding zeros
    index = u0 + 1
    # wholly left of the axis: read padding[0] with weight 1; wholly right: padding[size + 1]
    frac = torch.where(index < 0, torch.zeros_like(frac), frac)
    frac = torch.where(index > size, torch.ones_like(frac), frac)
    return index.clamp(0, size).to(torch.int64), frac
