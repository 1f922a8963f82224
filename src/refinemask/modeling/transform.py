"""Image pre- and post-processing inside the detector.

Shapes: B images; N instances of one image; M the side of a square mask prediction.

The model takes torchvision's input (a list of CHW float images in 0-1 at any size) and does the
official mmdetection v2.3 pipeline itself (spec §1.2): normalise, rescale keeping the aspect ratio
with round-to-nearest sizes, pad to a multiple of 32. Outputs are mapped back to the input size;
masks are pasted with :func:`refinemask.modeling.ops.paste_masks`.
"""
from __future__ import annotations

import math


def rescale_size(height: int, width: int, short_side: int, max_long_side: int) -> tuple[int, int]:
    """New (height, width) by mmcv's ``imrescale`` rule (spec §1.2).

    The scale factor is ``min(max_long_side / long, short_side / short)`` and each side is
    rounded to the nearest integer (``int(x * sf + 0.5)``), where torchvision rounds down: a
    480×640 image becomes 800×1067 here and 800×1066 in torchvision.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = min(max_long_side / max(height, width), short_side / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def padded_size(height: int, width: int, divisor: int = 32) -> tuple[int, int]:
    """Smallest (height, width) at least as large and divisible by ``divisor``."""
    return int(math.ceil(height / divisor) * divisor), int(math.ceil(width / divisor) * divisor)
