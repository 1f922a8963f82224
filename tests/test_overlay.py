"""Prediction overlays: small images enlarged, every mask filled and outlined, labels on tags."""
from __future__ import annotations

from pathlib import Path

import torch

from refinemask.overlay import HALO, PALETTE, draw_overlay, mask_edges, overlay_path, overlay_scale

GREY = 128


def one_detection(height: int, width: int) -> tuple[torch.Tensor, dict]:
    """A grey image and one detection: a 16 x 20 mask inside a larger box, label 1."""
    image = torch.full((3, height, width), GREY, dtype=torch.uint8)
    masks = torch.zeros(1, height, width, dtype=torch.bool)
    masks[0, 8:24, 10:30] = True
    prediction = {
        "boxes": torch.tensor([[4.0, 4.0, 44.0, 28.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.87]),
        "masks": masks,
    }
    return image, prediction


def test_small_images_are_enlarged_by_a_whole_factor_to_the_minimum_side():
    assert overlay_scale(256, 256) == 3 and overlay_scale(64, 48) == 12
    assert overlay_scale(800, 1333) == 1 and overlay_scale(768, 500) == 1
    image, prediction = one_detection(32, 48)
    drawn = draw_overlay(image, prediction, ["thing"])
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 32 * 16, 48 * 16)
    empty = {key: value[:0] for key, value in prediction.items()}
    assert torch.equal(draw_overlay(image, empty, ["thing"]), image.repeat_interleave(16, 1).repeat_interleave(16, 2))


def test_each_mask_is_filled_and_outlined_in_its_colour_over_a_dark_halo():
    image, prediction = one_detection(32, 48)
    drawn = draw_overlay(image, prediction, ["thing"], alpha=0.4)
    colour = torch.tensor(PALETTE[0], dtype=torch.uint8)
    s, line = 16, 2  # 512 x 768: the long side is 768, outlines 2 px wide
    top, left, bottom, right = 8 * s, 10 * s, 24 * s, 30 * s  # the mask in enlarged pixels
    middle = (left + right) // 2
    fill = (GREY * 0.6 + colour.float() * 0.4).round().to(torch.uint8)
    assert torch.equal(drawn[:, (top + bottom) // 2, middle], fill)  # inside: blended
    for row in (top, top + line - 1, bottom - 1):  # the outline, inside the mask
        assert torch.equal(drawn[:, row, middle], colour)
    assert torch.equal(drawn[:, top + line, middle], fill)
    assert torch.equal(drawn[:, top - 1, middle], torch.tensor(HALO, dtype=torch.uint8))  # just outside
    assert torch.equal(drawn[:, top - 2, middle], torch.full((3,), GREY, dtype=torch.uint8))
    assert torch.equal(drawn[:, (top + bottom) // 2, right], torch.tensor(HALO, dtype=torch.uint8))


def test_the_box_and_its_label_tag_are_drawn_in_the_class_colour():
    image, prediction = one_detection(32, 48)
    drawn = draw_overlay(image, prediction, ["thing"])
    colour = torch.tensor(PALETTE[0], dtype=torch.uint8)
    s = 16
    assert torch.equal(drawn[:, 20 * s, 4 * s], colour)  # the box's left side
    # the tag sits on the box's top edge, left-aligned; its text is white on this dark red
    tag = drawn[:, 4 * s - 16 : 4 * s, 4 * s : 4 * s + 60]  # 16 px: a 16 px font on a padded tag
    is_colour = (tag == colour[:, None, None]).all(0)
    is_white = (tag == 255).all(0)
    assert is_colour.float().mean() > 0.5 and is_white.any()


def test_mask_edges_treat_beyond_the_image_as_outside():
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[:4, :4] = True
    outline, halo = mask_edges(mask, 1)
    expected = mask.clone()
    expected[1:3, 1:3] = False  # the inner 2 x 2 has no outside neighbour
    assert torch.equal(outline, expected)
    ring = torch.zeros(6, 6, dtype=torch.bool)
    ring[:5, :5] = True
    ring[:4, :4] = False  # one pixel around the mask, square neighbourhood
    assert torch.equal(halo, ring)


def test_dense_overlays_leave_out_boxes_and_tags_and_can_draw_outlines_only():
    image, prediction = one_detection(32, 48)
    s = 16
    colour = torch.tensor(PALETTE[0], dtype=torch.uint8)
    drawn = draw_overlay(image, prediction, ["thing"], labels=False, fill=False)
    assert torch.equal(drawn[:, 20 * s, 4 * s], torch.full((3,), GREY, dtype=torch.uint8))  # no box
    assert not (drawn[:, 4 * s - 16 : 4 * s, 4 * s : 4 * s + 60] == 255).all(0).any()  # no tag text
    assert torch.equal(drawn[:, 16 * s, 20 * s], torch.full((3,), GREY, dtype=torch.uint8))  # not filled
    assert torch.equal(drawn[:, 8 * s, 20 * s], colour)  # outlined


def test_an_overlay_takes_the_next_free_name_when_two_inputs_share_a_stem(tmp_path):
    used: set[str] = set()
    names = [overlay_path(tmp_path, Path(p), used).name for p in ("a/x.jpg", "b/x.png", "x.tif", "y.jpg")]
    assert names == ["x.png", "x_2.png", "x_3.png", "y.png"]
