"""The numpy glue around an exported graph: the steps a trace cannot hold, in a few lines to
port to any runtime.

Shapes: D the rows a detector graph returns; K <= D detections kept; M the side of the mask
prediction; H x W the input image, h x w it resized and Hp x Wp it padded to a multiple of
:data:`SIZE_DIVISOR`.

* before the graph (:func:`preprocess`): the resize. Its output size comes from the input
  size by a rounding rule in Python integers (:func:`~refinemask.modeling.transform.rescale_size`),
  which a trace would freeze to the example's size. Normalising and padding go with it.
* after the graph (:func:`paste_masks_numpy`): masks pasted into the input image. In the graph
  that would produce D full-size masks per image (100 x H x W floats); the glue pastes only
  the detections that are kept.
"""
from __future__ import annotations

import numpy as np

from refinemask.modeling.transform import PIXEL_MEAN, PIXEL_STD, padded_size, rescale_size

SIZE_DIVISOR = 32


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right source index and right weight of each output position, half-pixel centres.

    ``F.interpolate(mode="bilinear", align_corners=False)`` given a size: the source of output
    i is (i + 0.5) * in/out - 0.5, clamped at 0 (no antialiasing).
    """
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    left = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    right = np.minimum(left + 1, in_size - 1)
    return left, right, (src - left).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) -> (C, h, w) float32, as the model resizes (bilinear, align_corners=False)."""
    image = np.asarray(image, dtype=np.float32)
    h, w = size
    if image.shape[1:] == (h, w):
        return image.copy()
    top, bottom, fy = _linear_taps(image.shape[1], h)
    left, right, fx = _linear_taps(image.shape[2], w)
    rows = image[:, top] * (1 - fy)[None, :, None] + image[:, bottom] * fy[None, :, None]
    return rows[:, :, left] * (1 - fx) + rows[:, :, right] * fx


def preprocess(
    image: np.ndarray, short_side: int, max_long_side: int, divisor: int = SIZE_DIVISOR
) -> tuple[np.ndarray, np.ndarray]:
    """The model's input transform in numpy: normalise, resize (official rule), zero-pad.

    Args:
        image: (H, W, 3) RGB float in [0, 1].

    Returns:
        the graph's inputs: images (1, 3, Hp, Wp) float32 and image_size (2,) int64 [h, w].
    """
    height, width = image.shape[:2]
    h, w = rescale_size(height, width, short_side, max_long_side)
    mean = np.asarray(PIXEL_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(PIXEL_STD, dtype=np.float32)[:, None, None]
    # normalise first, then resize: the order of DetectionTransform (zero padding is then the mean)
    chw = (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) * np.float32(255.0) - mean) / std
    chw = resize_bilinear(chw, (h, w))
    ph, pw = padded_size(h, w, divisor)
    batch = np.zeros((1, 3, ph, pw), dtype=np.float32)
    batch[0, :, :h, :w] = chw
    return batch, np.asarray([h, w], dtype=np.int64)


def _paste_taps(lo: np.ndarray, hi: np.ndarray, length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where pixel centres 0.5 .. length-0.5 of the image, mapped into [lo, hi], read a mask axis.

    The sampling of :func:`refinemask.modeling.ops.paste_masks` (grid_sample, align_corners=
    False, zero padding): returns (K, length) the left index into the axis padded with one zero
    on each side, and the weight of the right neighbour.
    """
    centres = np.arange(length, dtype=np.float32) + np.float32(0.5)
    lo = lo.astype(np.float32)[:, None]
    hi = hi.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (centres[None] - lo) / (hi - lo) * np.float32(2) - np.float32(1)
        u = ((g + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2)
        u0 = np.floor(u)
        frac = u - u0
    index = np.nan_to_num(u0 + 1, nan=0.0, posinf=size + 1, neginf=-1)
    frac = np.where(index < 0, np.float32(0), frac)
    frac = np.where(index > size, np.float32(1), frac)
    return np.clip(index, 0, size).astype(np.int64), np.nan_to_num(frac).astype(np.float32)


def paste_masks_numpy(masks: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, M, M) probabilities and (K, 4) boxes in image pixels -> (K, height, width) float32.

    The numpy twin of :func:`refinemask.modeling.ops.paste_masks`: bilinear reads at pixel
    centres, as two separable 1-D interpolations, each mask computed only over the window of
    pixels whose taps can reach it (everywhere else a full-image paste gives exact zeros).
    Memory is K * height * width floats; for large images read :func:`paste_windows_numpy`
    instead (as :class:`OnnxPredictor` does).
    """
    out = np.zeros((len(masks), height, width), dtype=np.float32)
    for i, top, left, window in paste_windows_numpy(masks, boxes, height, width):
        out[i, top : top + window.shape[0], left : left + window.shape[1]] = window
    return out


def paste_windows_numpy(masks: np.ndarray, boxes: np.ndarray, height: int, width: int):
    """``(i, top, left, window (h, w) float32)`` per mask whose box meets the image, in order.

    The numpy twin of :func:`refinemask.modeling.ops.paste_windows`: each mask's paste over its
    own window only, so that a large image costs its boxes' areas, not K x H x W floats.
    """
    k, mh, mw = masks.shape
    if k == 0:
        return
    padded = np.pad(masks.astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    x0, fx = _paste_taps(boxes[:, 0], boxes[:, 2], width, mw)  # (K, W)
    y0, fy = _paste_taps(boxes[:, 1], boxes[:, 3], height, mh)  # (K, H)
    for i in range(k):
        xs, xe = _reading_span(x0[i], fx[i], mw)
        ys, ye = _reading_span(y0[i], fy[i], mh)
        if xs >= xe or ys >= ye:
            continue
        cx, wx = x0[i, xs:xe], fx[i, xs:xe]
        cy, wy = y0[i, ys:ye], fy[i, ys:ye, None]
        rows = padded[i][:, cx] * (1 - wx) + padded[i][:, cx + 1] * wx  # (M + 2, w)
        yield i, ys, xs, rows[cy] * (1 - wy) + rows[cy + 1] * wy


def _reading_span(index: np.ndarray, frac: np.ndarray, size: int) -> tuple[int, int]:
    """[first, last + 1) of the pixels whose taps read the mask, not only its zero padding.

    As in :func:`refinemask.modeling.ops.paste_masks`: a pixel reads only padding when its left
    tap is the left padding with all the weight (index 0, frac 0) or its right tap the right
    padding with all the weight (index ``size``, frac 1).
    """
    reads = ~(((index == 0) & (frac == 0)) | ((index == size) & (frac == 1)))
    where = np.flatnonzero(reads)
    return (int(where[0]), int(where[-1]) + 1) if where.size else (0, 0)
