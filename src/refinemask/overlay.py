"""The one overlay drawer: masks, boxes and labels on an image, for ``refinemask predict``
(also with ``--boxes``), the demo's report and the colours of ``refinemask serve``.

Shapes: N detections of one image; H x W the image size; s the whole enlargement factor.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refinemask.data.categories import label_name
from refinemask.modeling.box_masks import window_masks

# distinct, readable colours for the overlays (label l uses PALETTE[(l - 1) % len])
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
]


OVERLAY_MIN_SIDE = 768  # px: the long side small images are enlarged to, so that labels read
HALO = (20, 20, 20)  # the ring drawn just outside each mask's outline


def overlay_scale(height: int, width: int, min_side: int = OVERLAY_MIN_SIDE) -> int:
    """The whole factor that enlarges an image to a long side of at least ``min_side`` (1 if it has one)."""
    return max(1, math.ceil(min_side / max(height, width, 1)))


def mask_edges(mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bool (H, W) mask -> (outline, halo), bool (H, W) each.

    ``outline``: the mask's pixels within ``width`` pixels of a pixel outside it (square
    neighbourhood; beyond the image counts as outside). ``halo``: the pixels outside the
    mask within ``max(1, width // 2)`` of it.
    """
    halo_width = max(1, width // 2)
    outside = (~mask).float()[None, None]
    near_outside = F.max_pool2d(F.pad(outside, (width,) * 4, value=1.0), 2 * width + 1, stride=1)[0, 0] > 0
    near_mask = F.max_pool2d(mask.float()[None, None], 2 * halo_width + 1, stride=1, padding=halo_width)[0, 0] > 0
    return mask & near_outside, near_mask & ~mask


def _label_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def draw_overlay(
    image: torch.Tensor,
    prediction: dict,
    category_names: Sequence[str],
    alpha: float = 0.4,
    min_side: int = OVERLAY_MIN_SIDE,
    labels: bool = True,
    fill: bool = True,
) -> torch.Tensor:
    """uint8 (3, s*H, s*W): ``image`` (float in [0, 1] or uint8) with masks, boxes and labels drawn.

    Small images are enlarged by s = :func:`overlay_scale` (nearest neighbour: pixels and mask
    edges stay sharp), so that a 256 px image's labels can be read. Each mask is filled with
    its class colour at ``alpha`` and outlined in that colour at full strength over a dark
    halo (:func:`mask_edges`), so that a mask shows even on an object of its own colour.
    For dense images (hundreds of nuclei), ``labels=False`` leaves out the boxes and their name
    and score tags, and ``fill=False`` draws the outlines only, so the image shows through.

    ``prediction["masks"]``: bool (N, H, W) or :class:`MaskWindows`. Each mask is drawn over its
    own window (widened by the outline), so a large image costs its uint8 canvas plus the
    windows, never a float copy of the image or a full-image map per mask.
    """
    from PIL import Image, ImageDraw

    # one float temporary (clamp's copy) rather than three, for large images
    canvas = image if image.dtype == torch.uint8 else image.clamp(0, 1).mul_(255).round_().to(torch.uint8)
    height, width = canvas.shape[-2:]
    scale = overlay_scale(height, width, min_side)
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    classes = prediction["labels"].tolist()
    if not classes:
        return canvas
    colours = [PALETTE[(label - 1) % len(PALETTE)] for label in classes]
    windows = window_masks(prediction["masks"])
    line = max(2, round(max(canvas.shape[-2:]) / 384))  # 2 px at 768, 4 px at 1536
    big_h, big_w = canvas.shape[-2:]

    # each mask at the canvas's scale in its window widened by the outline: the edges of a
    # crop, not of the whole image (beyond the image counts as outside, as beyond the crop)
    crops = []
    for (top, left), mask, colour in zip(windows.origins, windows.masks, colours):
        if not mask.any():
            continue
        y0, x0 = max(top * scale - line, 0), max(left * scale - line, 0)
        y1 = min((top + mask.shape[0]) * scale + line, big_h)
        x1 = min((left + mask.shape[1]) * scale + line, big_w)
        crop = torch.zeros((y1 - y0, x1 - x0), dtype=torch.bool)
        big = mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        crop[top * scale - y0 : top * scale - y0 + big.shape[0], left * scale - x0 : left * scale - x0 + big.shape[1]] = big
        crops.append(((slice(y0, y1), slice(x0, x1)), crop, colour))
    for (rows, cols), crop, colour in crops if fill else ():
        region = canvas[:, rows, cols].float()
        tint = torch.tensor(colour, dtype=torch.float32)[:, None]
        region[:, crop] = region[:, crop] * (1 - alpha) + tint * alpha
        canvas[:, rows, cols] = region.round().clamp(0, 255).to(torch.uint8)
    # edges after every fill, and every halo before any outline, so that no mask hides another's outline
    edges = [(where, *mask_edges(crop, line), colour) for where, crop, colour in crops]
    for (rows, cols), _, halo, _ in edges:
        canvas[:, rows, cols][:, halo] = torch.tensor(HALO, dtype=torch.uint8)[:, None]
    for (rows, cols), outline, _, colour in edges:
        canvas[:, rows, cols][:, outline] = torch.tensor(colour, dtype=torch.uint8)[:, None]

    if not labels:
        return canvas
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    font = _label_font(max(12, round(max(picture.size) / 48)))  # 16 px at 768
    pad = max(2, line)
    for box, label, score, colour in zip(prediction["boxes"].tolist(), classes, prediction["scores"].tolist(), colours):
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=line)
        name = label_name(label, category_names)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_h = bottom - top + 2 * pad
        tag_y = y0 - tag_h if y0 >= tag_h else y0  # above the box, or inside it at the image's top
        draw.rectangle([x0, tag_y, x0 + right - left + 2 * pad, tag_y + tag_h - 1], fill=colour)
        dark_text = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140
        draw.text((x0 + pad - left, tag_y + pad - top), text, fill=(0, 0, 0) if dark_text else (255, 255, 255), font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def overlay_path(out_dir: Path, image_path: Path, used_names: set[str]) -> Path:
    """``out_dir/<image stem>.png``, or ``<stem>_2.png``, ... when an earlier input had that stem."""
    name = f"{image_path.stem}.png"
    suffix = 1
    while name in used_names:
        suffix += 1
        name = f"{image_path.stem}_{suffix}.png"
    used_names.add(name)
    return out_dir / name
