"""Per-stage mask targets and the semantic target."""
import numpy as np
import torch

from refinemask.modeling.targets import (
    rasterize_polygons_in_boxes,
    resample_masks_in_boxes,
    semantic_target,
    stage_mask_targets,
)


def test_a_polygon_filling_its_box_rasterises_to_a_full_target():
    poly = [[np.array([10, 20, 50, 20, 50, 60, 10, 60], dtype=np.float32)]]
    out = rasterize_polygons_in_boxes(poly, np.array([[10, 20, 50, 60]]), 28)
    assert out.shape == (1, 28, 28) and out.all()


def test_the_left_half_of_a_box_rasterises_to_the_left_half_of_the_target():
    poly = [[np.array([0, 0, 20, 0, 20, 40, 0, 40], dtype=np.float32)]]
    out = rasterize_polygons_in_boxes(poly, np.array([[0, 0, 40, 40]]), 56)[0]
    assert out[:, :28].all() and not out[:, 28:].any()


def test_bitmap_targets_are_roialigned_then_thresholded():
    masks = torch.zeros(1, 40, 40)
    masks[0, :, :20] = 1
    out = resample_masks_in_boxes(masks, torch.tensor([[0.0, 0.0, 40.0, 40.0]]), torch.tensor([0]), 28)
    assert out[0, :, :14].all() and not out[0, :, 14:].any()
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_polygon_and_bitmap_targets_agree_on_a_rectangle():
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 16:48] = 1
    target = {"masks": masks, "polygons": [[np.array([16, 8, 48, 8, 48, 40, 16, 40], dtype=np.float32)]]}
    box = torch.tensor([[12.0, 4.0, 52.0, 44.0]])
    poly = stage_mask_targets(box, torch.tensor([0]), target, (28, 112), (64, 64))
    bitmap = stage_mask_targets(box, torch.tensor([0]), {"masks": masks}, (28, 112), (64, 64))
    for a, b in zip(poly, bitmap):
        assert (a != b).float().mean() < 0.03


def test_semantic_target_is_the_union_padded_and_downsampled():
    m1 = torch.zeros(2, 16, 16, dtype=torch.uint8)
    m1[0, :8, :8] = 1
    m1[1, 8:, 8:] = 1
    m2 = torch.zeros(0, 12, 16, dtype=torch.uint8)
    out = semantic_target([m1, m2], (32, 32), (8, 8))
    assert out.shape == (2, 8, 8)
    assert out[0, :2, :2].all() and out[0, 2:4, 2:4].all() and not out[0, :2, 2:4].any()
    assert not out[0, 4:].any() and not out[1].any()
