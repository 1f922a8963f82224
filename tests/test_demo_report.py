"""The demo report's mask pictures: drawn by the one overlay drawer, at the image's own size."""
from __future__ import annotations

import torch

from refinemask.demo_report import mask_panel
from refinemask.overlay import HALO, PALETTE


def test_a_panel_is_the_image_at_its_size_with_each_mask_outlined_in_its_class_colour():
    image = torch.full((3, 40, 50), 0.5)
    masks = torch.zeros(2, 40, 50, dtype=torch.bool)
    masks[0, 10:20, 10:20] = True
    masks[1, 25:35, 30:45] = True
    panel = mask_panel(image, torch.tensor([1, 2]), masks)
    assert panel.shape == (40, 50, 3) and panel.dtype.name == "uint8"  # not enlarged as predict's are
    assert tuple(panel[10, 15]) == PALETTE[0] and tuple(panel[25, 35]) == PALETTE[1]  # outlines, by class
    assert tuple(panel[9, 15]) == HALO  # the dark ring just outside
    assert tuple(panel[2, 2]) == (128, 128, 128)  # no mask, no box, no tag: the image itself
