"""Masks that cost what their boxes cost: each detection's mask kept over its own window.

Shapes: N detections of one image; H x W the image size; M the side of the head's square mask
prediction (28 or 112); h_i x w_i the window of detection i.

torchvision's contract pastes every mask into a full (N, 1, H, W) float map: 4·N·H·W bytes,
3.5 GB for 24 detections on a 36 MP image, which the RLE, the overlay and the page only crop
again. Two containers avoid it:

* :class:`BoxMasks`: what the mask head predicts, the (N, M, M) probabilities and their boxes
  in the image's pixels. ``model.mask_output = "box"`` makes the model return it as
  ``masks``; :meth:`BoxMasks.windows` computes the paste of each mask over its window only
  (the same values as :func:`~refinemask.modeling.ops.paste_masks`, one window at a time).
* :class:`MaskWindows`: N binary masks, each a bool (h_i, w_i) window at (top_i, left_i) of the
  H x W image. What ``Predictor(...)(image, masks="box")`` returns, what overlays, RLE
  (:func:`refinemask.evaluation.coco.encode_mask_windows`), the serve page and tiled inference
  read.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from refinemask.modeling.ops import paste_masks, paste_windows

MASK_OUTPUTS = ("image", "box")


@dataclass
class MaskWindows:
    """N binary masks of one ``image_size`` (H, W) image, mask i set only inside its window.

    ``origins[i]`` is (top, left) of ``masks[i]``, a bool (h_i, w_i) tensor on the CPU with
    top + h_i <= H and left + w_i <= W; an empty mask may have a 0 x 0 window.
    """

    image_size: tuple[int, int]
    origins: list[tuple[int, int]] = field(default_factory=list)
    masks: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self):
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if len(self.origins) != len(self.masks):
            raise ValueError(f"{len(self.origins)} origins for {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, H, W): the shape of :meth:`to_image`, which this stands for."""
        return (len(self), *self.image_size)

    def __getitem__(self, index) -> MaskWindows:
        """The masks at ``index``: a bool (N,) tensor, a sequence or a tensor of indices."""
        if isinstance(index, torch.Tensor):
            index = index.nonzero().flatten().tolist() if index.dtype == torch.bool else index.flatten().tolist()
        elif isinstance(index, slice):
            index = range(len(self))[index]
        return MaskWindows(self.image_size, [self.origins[i] for i in index], [self.masks[i] for i in index])

    def areas(self) -> list[int]:
        return [int(m.sum()) for m in self.masks]

    def to_image(self) -> torch.Tensor:
        """bool (N, H, W): every mask in a full-image map (N·H·W bytes: for small images)."""
        out = torch.zeros((len(self), *self.image_size), dtype=torch.bool)
        for i, ((top, left), mask) in enumerate(zip(self.origins, self.masks)):
            out[i, top : top + mask.shape[0], left : left + mask.shape[1]] = mask
        return out

    @classmethod
    def from_image(cls, masks: torch.Tensor) -> MaskWindows:
        """bool (N, H, W) or (N, 1, H, W) full-image masks -> each cropped to its set pixels."""
        if masks.dim() == 4:
            masks = masks[:, 0]
        masks = masks.bool().cpu()
        origins, crops = [], []
        for mask in masks:
            rows = torch.nonzero(mask.any(1)).flatten()
            cols = torch.nonzero(mask.any(0)).flatten()
            if rows.numel() == 0:
                origins.append((0, 0))
                crops.append(mask[:0, :0])
                continue
            top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            origins.append((top, left))
            crops.append(mask[top:bottom, left:right].clone())
        return cls(tuple(masks.shape[-2:]), origins, crops)


@dataclass
class BoxMasks:
    """The mask head's (N, M, M) probabilities with their (N, 4) XYXY boxes in ``image_size``'s pixels."""

    probs: torch.Tensor
    boxes: torch.Tensor
    image_size: tuple[int, int]

    def __post_init__(self):
        if self.probs.dim() == 4:
            self.probs = self.probs[:, 0]
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.probs.shape[0] != self.boxes.shape[0]:
            raise ValueError(f"{self.probs.shape[0]} masks for {self.boxes.shape[0]} boxes")

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, 1, H, W): the shape of :meth:`to_image`, torchvision's ``masks``."""
        return (len(self), 1, *self.image_size)

    def __getitem__(self, index) -> BoxMasks:
        return BoxMasks(self.probs[index], self.boxes[index], self.image_size)

    def windows(self) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        """``(i, top, left, probabilities (h, w))`` per mask whose box meets the image, in order."""
        height, width = self.image_size
        return paste_windows(self.probs, self.boxes, height, width)

    def binarize(self, threshold: float = 0.5) -> MaskWindows:
        """The masks ``>= threshold`` as :class:`MaskWindows` on the CPU (one window at a time)."""
        origins: list[tuple[int, int]] = [(0, 0)] * len(self)
        masks = [torch.zeros((0, 0), dtype=torch.bool)] * len(self)
        for i, top, left, window in self.windows():
            origins[i] = (top, left)
            masks[i] = (window >= threshold).cpu()
        return MaskWindows(self.image_size, origins, masks)

    def to_image(self) -> torch.Tensor:
        """(N, 1, H, W) probabilities: torchvision's ``masks`` (what ``mask_output="image"`` returns)."""
        return paste_masks(self.probs, self.boxes, *self.image_size)


def check_mask_output(value: str, where: str = "mask_output") -> str:
    if value not in MASK_OUTPUTS:
        from refinemask.errors import RefineMaskError

        raise RefineMaskError(f"{where} must be one of {', '.join(MASK_OUTPUTS)}, got {value!r}")
    return value


def window_masks(masks: BoxMasks | MaskWindows | torch.Tensor, threshold: float = 0.5) -> MaskWindows:
    """Any of the model's or the Predictor's mask forms -> :class:`MaskWindows`.

    ``BoxMasks`` are binarised at ``threshold``; (N, 1, H, W) or (N, H, W) tensors too when they
    are floating point (bool and integer tensors are binary already, non-zero = object).
    """
    if isinstance(masks, MaskWindows):
        return masks
    if isinstance(masks, BoxMasks):
        return masks.binarize(threshold)
    masks = torch.as_tensor(masks)
    if masks.is_floating_point():
        masks = masks >= threshold
    return MaskWindows.from_image(masks != 0)

