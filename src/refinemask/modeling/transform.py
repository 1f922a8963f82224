"""Image pre- and post-processing inside the detector.

Shapes: B images; N instances of one image; M the side of a square mask prediction.

The model takes torchvision's input (a list of CHW float images in 0-1 at any size) and does the
official mmdetection v2.3 pipeline itself (docs/design.md §6.1): normalise, rescale keeping the
aspect ratio with round-to-nearest sizes, pad to a multiple of 32. Outputs are mapped back to the
input size; masks are pasted with :func:`refinemask.modeling.ops.paste_masks`.
"""
from __future__ import annotations

import math


def rescale_size(height: int, width: int, short_side: int, max_long_side: int) -> tuple[int, int]:
    """New (height, width) by mmcv's ``imrescale`` rule (docs/design.md §6.1).

    The scale factor is ``min(max_long_side / long, short_side / short)`` and each side is
    rounded to the nearest integer (``int(x * sf + 0.5)``), where torchvision rounds down: a
    480×640 image becomes 800×1067 here and 800×1066 in torchvision.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = min(max_long_side / max(height, width), short_side / min(height, width))
    # at least one pixel: a 1 x 6000 strip would round to 0 rows (and the resize fail)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def padded_size(height: int, width: int, divisor: int = 32) -> tuple[int, int]:
    """Smallest (height, width) at least as large and divisible by ``divisor``."""
    return int(math.ceil(height / divisor) * divisor), int(math.ceil(width / divisor) * divisor)


import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402

from refinemask.modeling.box_masks import BoxMasks, check_mask_output  # noqa: E402

# mmdetection's ImageNet statistics on 0-255 pixels (docs/design.md §6.1)
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class DetectionTransform(nn.Module):
    """Normalise, resize (official rule), pad, and map outputs back to the input images.

    A drop-in for torchvision's ``GeneralizedRCNNTransform`` with mmdetection's conventions:
    round-to-nearest resized sizes, 0-255 normalisation statistics, padding to a multiple of
    32, polygons scaled with the image, and masks pasted at pixel centres.

    Args:
        min_size: the short side; a tuple picks one at random per batch in training
            (multi-scale 'value' mode).
        max_size: the largest long side.
        size_divisible: padding multiple.
    """

    def __init__(self, min_size=800, max_size: int = 1333, size_divisible: int = 32):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (int(min_size),)
        self.max_size = int(max_size)
        self.size_divisible = size_divisible
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(3, 1, 1), persistent=False)
        # "image": masks pasted into (N, 1, H, W) maps (torchvision's contract); "box": BoxMasks
        self.mask_output = "image"

    def _short_side(self) -> int:
        if self.training and len(self.min_size) > 1:
            return self.min_size[int(torch.randint(len(self.min_size), (1,)).item())]
        return self.min_size[-1]

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        images = list(images)
        targets = [dict(t) for t in targets] if targets is not None else None
        short = self._short_side()
        resized = []
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {i}: expected a 3×H×W tensor, got shape {tuple(image.shape)}")
            if not image.is_floating_point():
                # torchvision's contract, and its error type: a uint8 image scaled as 0-1 would be
                # normalised from 0-65025 and give confident garbage
                raise TypeError(
                    f"image {i}: expected a floating-point tensor with values in 0-1, got {image.dtype}; "
                    "convert it with image.float() / 255 (refinemask.Predictor takes uint8 arrays and files as they are)"
                )
            h, w = image.shape[-2:]
            nh, nw = rescale_size(h, w, short, self.max_size)
            # in the model's dtype (its statistics buffers follow .double()/.half()); autocast
            # casts later, per op. In place on one copy: the same arithmetic as
            # (x * 255 - mean) / std without two more image-sized temporaries (0.43 GB each at 36 MP)
            x = image.to(self.pixel_mean.dtype, copy=True).mul_(255.0).sub_(self.pixel_mean).div_(self.pixel_std)
            if (nh, nw) != (h, w):
                x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            resized.append(x)
            if targets is not None:
                targets[i] = _resize_target(targets[i], (h, w), (nh, nw))
        sizes = [tuple(x.shape[-2:]) for x in resized]
        ph = max(s[0] for s in sizes)
        pw = max(s[1] for s in sizes)
        ph, pw = padded_size(ph, pw, self.size_divisible)
        # zero padding out of place, so that an image that requires grad (saliency, attribution)
        # gets gradients back through the whole detector
        batch = torch.stack([F.pad(x, (0, pw - x.shape[-1], 0, ph - x.shape[-2])) for x in resized])
        return ImageList(batch, [(int(h), int(w)) for h, w in sizes]), targets

    def postprocess(
        self, results: list[dict], image_sizes, original_sizes, original_boxes=None, mask_output: str | None = None
    ) -> list[dict]:
        """Boxes back to the input image's pixels; mask predictions (and coarse ones) pasted into it.

        With ``mask_output == "box"`` (the call's, or ``self.mask_output`` when None) the masks
        stay the head's squares, in a :class:`~refinemask.modeling.box_masks.BoxMasks` with the
        boxes and the image's size.

        ``original_boxes``: per image, the boxes already in the input image's pixels (boxes
        given to the model), taken as they are: scaling them there and back would move them by
        float rounding.
        """
        form = check_mask_output(self.mask_output if mask_output is None else mask_output, "mask_output")
        for i, (r, (h, w), (oh, ow)) in enumerate(zip(results, image_sizes, original_sizes)):
            if original_boxes is not None:
                r["boxes"] = original_boxes[i].to(r["boxes"])
            else:
                scale = r["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
                r["boxes"] = r["boxes"] * scale
            for key in ("masks", "coarse_masks"):
                if key in r:
                    masks = BoxMasks(r[key], r["boxes"], (oh, ow))
                    r[key] = masks if form == "box" else masks.to_image()
        return results


def _resize_target(target: dict, old: tuple[int, int], new: tuple[int, int]) -> dict:
    (h, w), (nh, nw) = old, new
    if (h, w) == (nh, nw):
        return target
    sx, sy = nw / w, nh / h
    boxes = target["boxes"] * torch.as_tensor([sx, sy, sx, sy], dtype=torch.float32, device=target["boxes"].device)
    target["boxes"] = boxes
    for key in ("masks", "semantic"):
        if key in target:
            target[key] = _resize_bitmaps(target[key], (nh, nw))
    if target.get("polygons") is not None:
        scaled = []
        for polys in target["polygons"]:
            if polys is None:
                scaled.append(None)
                continue
            out = []
            for p in polys:
                q = np.array(p, dtype=np.float32)
                q[0::2] *= sx
                q[1::2] *= sy
                out.append(q)
            scaled.append(out)
        target["polygons"] = scaled
    return target


def _resize_bitmaps(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(G, H, W) or (H, W) bitmaps resized nearest, as mmcv rescales bitmap masks, in their own dtype
    (uint8 stays uint8: no float copy of G full-size maps on the device)."""
    if masks.numel() == 0:
        return masks.new_zeros((*masks.shape[:-2], *size))
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).as_subclass(torch.Tensor)
    resized = F.interpolate(flat.to(torch.uint8) if flat.dtype == torch.bool else flat, size=size, mode="nearest")
    return resized.to(masks.dtype).reshape(*masks.shape[:-2], *size)
