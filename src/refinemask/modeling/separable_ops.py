"""RoIAlign and fixed-size bilinear resizes as products with 1-D weight matrices.

What ``train.deterministic=true`` runs on CUDA instead of the kernels that have no deterministic
backward there (torchvision's ``roi_align`` and ``F.interpolate(mode="bilinear")``); the
dispatch is :func:`refinemask.modeling.ops.roi_align` and :func:`~refinemask.modeling.ops.resize_bilinear`.
Their backward is made of matrix products and ``index_select`` only, which PyTorch runs
deterministically on CUDA (sums in a fixed order, no atomic adds).

Why this works: a bilinear read at (y, x) weights row i by a function of y alone and column j
by a function of x alone, and the reads outside the map that return 0 are those with y or x out
of range; so a RoIAlign bin, the mean of gh×gw such reads, is ``Ay @ F @ Ax^T`` with ``Ay`` the
mean over the gh sample rows of their row weights (PH×H) and ``Ax`` likewise (PW×W). Adaptive
sampling (``sampling_ratio=0``: ceil(bin size) samples per axis, different for every RoI) only
changes which 1-D weights are summed. Only the window of rows and columns a RoI reads is
gathered, in chunks of RoIs of at most ``max_elements`` values, so memory stays bounded where
torchvision's Python fallback materialises K×C×PH×PW×gh×gw (×4).

Shapes: K RoIs; B images; C channels; H, W the map's height and width; P, Q the pooled height
and width; G the most samples per bin axis in a chunk; L the window (rows or columns) a RoI reads.
"""
from __future__ import annotations

import torch

# the largest gathered window (RoIs × rows × columns × channels) a chunk holds: 2^26 float32
# values are 256 MB, a small part of a training GPU's memory
DEFAULT_MAX_ELEMENTS = 2**26


def interpolation_matrix(
    in_size: int, out_size: int, align_corners: bool, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """(out_size, in_size) weights of 1-D linear interpolation, as ``F.interpolate`` computes them.

    ``align_corners=False``: source position (o + 0.5)·in/out - 0.5, clamped below at 0 (the
    rule of ``F.interpolate`` given a size, or a scale factor that gives exactly that size);
    ``align_corners=True``: o·(in - 1)/(out - 1). Each row has weight 1 - f on the floor of the
    position and f on the next index (the last index at the edge).
    """
    out = torch.arange(out_size, dtype=torch.float64)
    if align_corners:
        source = out * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(out)
    else:
        source = ((out + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    low = source.floor().to(torch.int64).clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    frac = source - low
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(dtype=dtype, device=device)


def resize_by_matrices(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=...)`` as ``My @ x @ Mx^T``.

    Args:
        x: (N, C, h, w).
        size: (H, W) of the output.

    Returns:
        (N, C, H, W) in ``x``'s dtype, computed in float32 (float64 for float64 ``x``), as a
        bilinear kernel accumulates.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = interpolation_matrix(x.shape[-2], size[0], align_corners, compute, x.device)
    cols = interpolation_matrix(x.shape[-1], size[1], align_corners, compute, x.device)
    with torch.autocast(x.device.type, enabled=False):  # autocast would round the weights to half
        out = torch.matmul(torch.matmul(rows, x.to(compute)), cols.T)
    return out.to(x.dtype)


def _axis_samples(
    lo: torch.Tensor, hi: torch.Tensor, bins: int, length: int, scale: float, sampling_ratio: int, aligned: bool
):
    """Where each RoI's samples fall on one axis, and their averaged bilinear weights.

    Follows torchvision's RoIAlign kernel: the RoI spans [lo·scale - o, hi·scale - o] (o = 0.5
    when ``aligned``, else the span is at least 1); bin p's g-th of n samples sits at
    start + p·bin + (g + 0.5)·bin/n, n = ``sampling_ratio`` or ceil(bin size); a sample
    beyond [-1, length] reads 0, one in [-1, 0) reads index 0, one past length - 1 reads the last.

    Args:
        lo, hi: (K,) RoI bounds on this axis, in input pixels.

    Returns:
        low, high: (K, bins, G) int64 indices of the two taps of every sample (0 where unused);
        w_low, w_high: (K, bins, G) their weights, divided by n (0 for samples out of range or
        beyond the RoI's n); n: (K,) int64 samples per bin.
    """
    offset = 0.5 if aligned else 0.0
    start = lo * scale - offset
    extent = hi * scale - offset - start
    if not aligned:
        extent = extent.clamp(min=1.0)
    bin_size = extent / bins
    if sampling_ratio > 0:
        n = torch.full_like(lo, sampling_ratio, dtype=torch.int64)
    else:
        n = torch.ceil(extent / bins).to(torch.int64)
    n = n.clamp(min=0)  # a reversed RoI (hi < lo) takes no samples: torchvision's zeros
    most = max(1, int(n.max())) if n.numel() else 1
    p = torch.arange(bins, dtype=lo.dtype, device=lo.device)[None, :, None]
    g = torch.arange(most, dtype=lo.dtype, device=lo.device)[None, None, :]
    used = torch.arange(most, device=lo.device)[None, None, :] < n[:, None, None]
    # the kernel's own order of operations, so that positions agree to the last bit
    position = start[:, None, None] + p * bin_size[:, None, None] + (g + 0.5) * bin_size[:, None, None] / n.clamp(min=1).to(lo.dtype)[:, None, None]
    inside = used & (position >= -1.0) & (position <= length)
    position = position.clamp(min=0)
    low = position.to(torch.int64)
    at_edge = low >= length - 1
    low = torch.where(at_edge, torch.full_like(low, length - 1), low)
    high = torch.where(at_edge, low, low + 1)
    position = torch.where(at_edge, low.to(position.dtype), position)
    frac = position - low
    share = inside.to(lo.dtype) / n.clamp(min=1).to(lo.dtype)[:, None, None]
    zero = torch.zeros_like(low)
    return torch.where(inside, low, zero), torch.where(inside, high, zero), (1 - frac) * share, frac * share, n


def _windows(low: torch.Tensor, high: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First index and length (K,) of the indices each RoI reads with a non-zero weight (length ≥ 1)."""
    reads = weight != 0
    big = torch.iinfo(torch.int64).max
    first = torch.where(reads, low, torch.full_like(low, big)).flatten(1).amin(dim=1)
    last = torch.where(reads, high, torch.full_like(high, -1)).flatten(1).amax(dim=1)
    any_read = reads.flatten(1).any(dim=1)
    first = torch.where(any_read, first, torch.zeros_like(first))
    length = torch.where(any_read, last - first + 1, torch.ones_like(first))
    return first, length


def _local_weights(low, high, w_low, w_high, first, window: int) -> torch.Tensor:
    """(K, bins, window) matrix: each bin's summed tap weights on the indices first … first + window - 1."""
    k, bins, _ = low.shape
    weights = w_low.new_zeros((k, bins, window))
    weights.scatter_add_(2, (low - first[:, None, None]).clamp(0, window - 1), w_low)
    weights.scatter_add_(2, (high - first[:, None, None]).clamp(0, window - 1), w_high)
    return weights


def plan_chunks(spans: list[list[int]], channels: int, max_elements: int) -> list[tuple[int, int, int, int]]:
    """Consecutive chunks ``(begin, end, L_y, L_x)`` of RoIs with windows ``spans`` [(L_y, L_x), ...].

    A chunk pads its RoIs' windows to the largest of each axis and grows while
    (end - begin)·L_y·L_x·``channels`` stays within ``max_elements``; a RoI whose window alone
    exceeds the bound is a chunk of its own.
    """
    chunks = []
    begin = 0
    while begin < len(spans):
        end = begin + 1
        window_h, window_w = spans[begin]
        while end < len(spans):
            h, w = max(window_h, spans[end][0]), max(window_w, spans[end][1])
            if (end - begin + 1) * h * w * channels > max_elements:
                break
            window_h, window_w = h, w
            end += 1
        chunks.append((begin, end, window_h, window_w))
        begin = end
    return chunks


def separable_roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """torchvision's ``roi_align`` (same arguments, same values to float rounding) as weight products.

    Args:
        input: (B, C, H, W) features.
        rois: (K, 5) [batch_index, x1, y1, x2, y2] in input pixels (before ``spatial_scale``).
        max_elements: bound on the values of one chunk's gathered windows (K_chunk·L_y·L_x·C).

    Returns:
        (K, C, P, Q) in ``input``'s dtype (computed in float32, or float64 for float64 input).
    """
    pooled_h, pooled_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    batch, channels, height, width = input.shape
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    if rois.shape[0] == 0:
        return input.new_zeros((0, channels, pooled_h, pooled_w))
    with torch.no_grad():  # the weights depend on the boxes only; RoIAlign gives boxes no gradient
        boxes = rois.detach().to(compute)
        ys = _axis_samples(boxes[:, 2], boxes[:, 4], pooled_h, height, spatial_scale, sampling_ratio, aligned)
        xs = _axis_samples(boxes[:, 1], boxes[:, 3], pooled_w, width, spatial_scale, sampling_ratio, aligned)
        first_y, rows = _windows(ys[0], ys[1], ys[2] + ys[3])
        first_x, cols = _windows(xs[0], xs[1], xs[2] + xs[3])
        image = boxes[:, 0].to(torch.int64)
        # similar windows share a chunk, so a chunk pads few RoIs to its largest window
        order = torch.argsort(rows * cols)
        spans = torch.stack([rows, cols], 1)[order].tolist()
    # channels last, so that one index_select gathers a RoI's window of all channels
    flat = input.to(compute).permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    pieces = []
    with torch.autocast(input.device.type, enabled=False):
        for begin, end, window_h, window_w in plan_chunks(spans, channels, max_elements):
            chunk = order[begin:end]
            with torch.no_grad():
                y_weights = _local_weights(ys[0][chunk], ys[1][chunk], ys[2][chunk], ys[3][chunk], first_y[chunk], window_h)
                x_weights = _local_weights(xs[0][chunk], xs[1][chunk], xs[2][chunk], xs[3][chunk], first_x[chunk], window_w)
                row_index = (first_y[chunk, None] + torch.arange(window_h, device=input.device)).clamp(max=height - 1)
                col_index = (first_x[chunk, None] + torch.arange(window_w, device=input.device)).clamp(max=width - 1)
                index = ((image[chunk, None, None] * height + row_index[:, :, None]) * width + col_index[:, None, :])
            window = flat.index_select(0, index.reshape(-1)).view(len(chunk), window_h, window_w, channels)
            across = torch.einsum("kqm,klmc->klqc", x_weights, window)  # (k, L_y, Q, C)
            pieces.append(torch.einsum("kpl,klqc->kcpq", y_weights, across))
    inverse = torch.argsort(order)
    return torch.cat(pieces).index_select(0, inverse).to(input.dtype)
