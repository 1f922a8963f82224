"""The pure tensor functions, against hand-computed cases and the spec's reference formulation."""
import torch
import torch.nn.functional as F

from refinemask.modeling.ops import (
    assemble_stage_logits,
    boundary_band,
    map_roi_levels,
    multilevel_roi_align,
    paste_masks,
)
from tests.modeling import spec_reference as ref
from tests.tolerances import SPEC_ATOL, assert_same_binary_masks


def grid(rows):
    return torch.tensor([[int(c) for c in r] for r in rows.split()], dtype=torch.bool)


def test_band_width1_square_leaves_only_the_centre_out():
    mask = grid("00000 01110 01110 01110 00000")
    expected = grid("11111 11111 11011 11111 11111")
    assert torch.equal(boundary_band(mask[None], 1)[0], expected)


def test_band_width1_treats_the_roi_border_as_background():
    # the left half is foreground; it touches the top, left and bottom borders
    mask = grid("111000 111000 111000 111000 111000 111000")
    expected = grid("111100 101100 101100 101100 101100 111100")
    assert torch.equal(boundary_band(mask[None], 1)[0], expected)


def test_band_width2_is_two_pixels_each_side_of_a_straight_edge():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:, 4:12] = True
    band = boundary_band(mask[None], 2)[0]
    interior_row = band[8]
    assert interior_row.nonzero().squeeze(1).tolist() == [2, 3, 4, 5, 10, 11, 12, 13]


def test_band_width2_leaves_out_a_diagonal_corner_pixel():
    # background pixel two steps diagonally from a convex corner sees 1 foreground pixel of 25
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[6:, 6:] = True
    band = boundary_band(mask[None], 2)[0]
    assert not band[4, 4]
    assert band[4, 6] and band[5, 5]


def test_band_matches_the_official_laplacian_formulation_on_random_masks():
    torch.manual_seed(0)
    masks = torch.rand(6, 28, 28) > 0.6
    for width in (1, 2, 3):
        assert torch.equal(boundary_band(masks, width), ref.block_target(masks, width) == 1)


def test_band_keeps_a_4d_shape():
    masks = torch.zeros(2, 1, 8, 8)
    assert boundary_band(masks, 1).shape == (2, 1, 8, 8)


def test_assembly_ignores_the_14_stage():
    torch.manual_seed(1)
    stages = [torch.randn(3, 1, s, s) for s in (14, 28, 56, 112)]
    other = [torch.randn(3, 1, 14, 14)] + stages[1:]
    assert torch.equal(assemble_stage_logits(stages), assemble_stage_logits(other))


def test_assembly_keeps_fine_logits_only_near_the_coarse_edge():
    # 28×28: a square of +4 on rows/cols 8-19; finer stages are constant 7 (56) and 9 (112)
    s28 = torch.full((1, 1, 28, 28), -4.0)
    s28[..., 8:20, 8:20] = 4.0
    stages = [torch.zeros(1, 1, 14, 14), s28, torch.full((1, 1, 56, 56), 7.0), torch.full((1, 1, 112, 112), 9.0)]
    column = assemble_stage_logits(stages)[0, 0, :, 56]
    # the 28 band is rows 7-8; upsampled with align_corners=True (×55/27) it covers 56-rows
    # 14-17, which take the 56 stage's 7 and so move the edge out to rows 13/14; that band,
    # upsampled ×111/55, covers 112-rows 26-29, which take the 112 stage's 9 (cumulative).
    assert (column == 9.0).nonzero().squeeze(1).tolist() == [26, 27, 28, 29, 82, 83, 84, 85]
    assert column[32] == 7.0
    # the middle of the square and the far background come from the coarse map
    assert column[56] == 4.0 and column[0] == -4.0


def test_assembly_matches_the_official_in_place_procedure():
    torch.manual_seed(2)
    base = F.interpolate(torch.randn(4, 1, 7, 7) * 3, size=28, mode="bilinear", align_corners=False)
    stages = [torch.randn(4, 1, 14, 14), base]
    stages += [torch.randn(4, 1, s, s) for s in (56, 112)]
    assert torch.equal(assemble_stage_logits(stages), ref.assemble(stages))


def test_paste_samples_pixel_centres_of_an_aligned_box():
    mask = torch.ones(1, 1, 4, 4)
    out = paste_masks(mask, torch.tensor([[1.0, 1.0, 3.0, 3.0]]), 5, 5)[0, 0]
    expected = torch.zeros(5, 5)
    expected[1:3, 1:3] = 1.0
    assert torch.allclose(out, expected)


def test_paste_half_pixel_box_gives_half_values_at_edges_and_quarters_at_corners():
    mask = torch.ones(1, 1, 4, 4)
    out = paste_masks(mask, torch.tensor([[0.5, 0.5, 2.5, 2.5]]), 4, 4)[0, 0]
    expected = torch.tensor(
        [[0.25, 0.5, 0.25, 0.0], [0.5, 1.0, 0.5, 0.0], [0.25, 0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    assert torch.allclose(out, expected)


def test_paste_equals_grid_sample_on_random_boxes_including_ones_outside_the_image():
    torch.manual_seed(3)
    n, h, w = 30, 50, 70
    probs = torch.rand(n, 1, 28, 28)
    xy = torch.rand(n, 2) * torch.tensor([w, h]) * 1.2 - 8
    boxes = torch.cat([xy, xy + torch.rand(n, 2) * 60 + 0.3], dim=1)
    out = paste_masks(probs, boxes, h, w, chunk_pixels=7 * h * w)
    expected = ref.paste(probs, boxes, h, w)
    assert (out - expected).abs().max() < SPEC_ATOL
    assert_same_binary_masks(out, expected)


def full_image_paste(masks, boxes, h, w):
    """The paste computed at every pixel of the image, as paste_masks did before it windowed."""
    from refinemask.modeling.ops import _sample_positions

    m = F.pad(masks[:, 0], (1, 1, 1, 1))
    n, size = m.shape[0], masks.shape[-1]
    x0, fx = _sample_positions(boxes[:, 0], boxes[:, 2], w, size)
    y0, fy = _sample_positions(boxes[:, 1], boxes[:, 3], h, size)
    fx, fy = fx[:, None, :], fy[:, :, None]
    left = m.gather(2, x0[:, None, :].expand(n, size + 2, w))
    right = m.gather(2, (x0 + 1)[:, None, :].expand(n, size + 2, w))
    rows = left * (1 - fx) + right * fx
    top = rows.gather(1, y0[:, :, None].expand(n, h, w))
    bottom = rows.gather(1, (y0 + 1)[:, :, None].expand(n, h, w))
    return (top * (1 - fy) + bottom * fy)[:, None]


def test_windowed_paste_equals_the_full_image_paste():
    # large boxes (a 28×28 mask cell of 5 px spills 2.5 px past the box), tiny boxes, boxes
    # across or wholly outside the border, 28×28 and RefineMask's 112×112 masks
    torch.manual_seed(4)
    h, w = 90, 120
    for size in (28, 112):
        n = 40
        probs = torch.rand(n, 1, size, size)
        probs[:, :, 0] = probs[:, :, -1] = probs[..., 0] = probs[..., -1] = 1.0  # full-strength edges
        xy = torch.rand(n, 2) * torch.tensor([w, h]) * 1.4 - torch.tensor([w, h]) * 0.2
        wh = torch.rand(n, 2) * torch.tensor([w, h]) * torch.rand(n, 1) * 1.5 + 0.2
        boxes = torch.cat([xy, xy + wh], dim=1)
        boxes[0] = torch.tensor([-60.0, -50.0, -10.0, -5.0])  # wholly outside
        boxes[1] = torch.tensor([5.0, 5.0, 117.0, 61.0])  # 4 px wide cells at 28: 2 px of spill
        out = paste_masks(probs, boxes, h, w)
        expected = full_image_paste(probs, boxes, h, w)
        # the same arithmetic at every pixel: 1e-6 leaves room for a CPU that orders it otherwise
        assert (out - expected).abs().max() <= 1e-6
        assert torch.equal(out >= 0.5, expected >= 0.5)
        assert torch.equal(out == 0, expected == 0)
        if size == 28:
            # the spill past a large box is pasted too: pixel 118 is beyond the box (x2 = 117) and
            # the pixel around it, where a window of the box's extent plus one pixel would stop
            assert out[1, 0, 30, 118] > 0.1 and expected[1, 0, 30, 118] > 0.1


def test_paste_writes_nothing_beyond_half_a_mask_cell_around_the_box():
    probs = torch.ones(1, 1, 4, 4)
    out = paste_masks(probs, torch.tensor([[20.0, 20.0, 60.0, 60.0]]), 80, 80)[0, 0]  # 10 px cells
    nonzero = out.nonzero()
    # the box widened by half a cell (5 px) on each side: pixels 15..64, centres 15.5..64.5
    assert nonzero.min().item() == 15 and nonzero.max().item() == 64


def test_paste_of_no_masks_is_empty():
    assert paste_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), 10, 12).shape == (0, 1, 10, 12)


def test_level_mapping_follows_the_finest_scale_56_rule():
    sides = torch.tensor([10.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 2000.0])
    boxes = torch.stack([torch.zeros(8), torch.zeros(8), sides, sides], dim=1)
    assert map_roi_levels(boxes).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_level_mapping_uses_the_area_not_the_long_side():
    boxes = torch.tensor([[0.0, 0.0, 400.0, 40.0]])  # sqrt(16000) ≈ 126 -> P3
    assert map_roi_levels(boxes).tolist() == [1]


def test_multilevel_roi_align_at_torchvision_settings_equals_multiscale_roi_align():
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(5)
    strides = [4, 8, 16, 32]
    feats = [torch.randn(2, 3, 256 // s, 320 // s) for s in strides]
    side = torch.exp(torch.empty(60, 2).uniform_(2.0, 5.6))  # 7 to 270 px: every level
    xy = torch.rand(60, 2) * (torch.tensor([320.0, 256.0]) - side).clamp(min=0)
    boxes = torch.cat([xy, xy + side], dim=1)
    rois = torch.cat([torch.arange(60.0)[:, None] % 2, boxes], dim=1)
    ours = multilevel_roi_align(feats, rois, 7, strides, sampling_ratio=2, aligned=False)
    theirs = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(
        {str(i): f for i, f in enumerate(feats)}, [boxes[0::2], boxes[1::2]], [(256, 320)] * 2
    )
    order = torch.cat([torch.arange(0, 60, 2), torch.arange(1, 60, 2)])  # torchvision: image by image
    # the same kernel on the same levels (mmdetection's level rule is torchvision's for these boxes)
    assert torch.equal(ours[order], theirs)
    # and the official adaptive sampling reads other points
    assert not torch.allclose(multilevel_roi_align(feats, rois, 7, strides, aligned=False), ours)


def test_multilevel_roi_align_reads_each_roi_from_its_level():
    # each level is filled with its own index, so the pooled value reveals the level used
    strides = [4, 8, 16, 32]
    feats = [torch.full((1, 2, 512 // s, 512 // s), float(i)) for i, s in enumerate(strides)]
    rois = torch.tensor([[0, 0, 0, 50.0, 50.0], [0, 0, 0, 150.0, 150.0], [0, 0, 0, 300.0, 300.0], [0, 0, 0, 500.0, 500.0]])
    pooled = multilevel_roi_align(feats, rois, 3, strides)
    assert pooled[:, 0, 1, 1].tolist() == [0.0, 1.0, 2.0, 3.0]
