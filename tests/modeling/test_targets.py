"""Per-stage mask targets and the semantic target."""
import numpy as np
import pytest
import torch

from refinemask.modeling.targets import (
    instance_union,
    rasterize_polygons_in_boxes,
    resample_masks_in_boxes,
    semantic_target,
    stage_mask_targets,
)
from refinemask.modeling.targets_reference import rasterize_one_roi_at_a_time, stage_mask_targets_reference


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
    out = semantic_target([instance_union({"masks": m1}), instance_union({"masks": m2})], (32, 32), (8, 8))
    assert out.shape == (2, 8, 8)
    assert out[0, :2, :2].all() and out[0, 2:4, 2:4].all() and not out[0, :2, 2:4].any()
    assert not out[0, 4:].any() and not out[1].any()


def _random_scene(seed: int, height: int = 96, width: int = 128):
    """Instances with one to three polygon parts (some of < 3 points), one RLE-only instance,
    and RoIs around them: jittered, overhanging the image, and clipped to zero width."""
    rng = np.random.default_rng(seed)
    polygons, masks = [], torch.zeros(6, height, width, dtype=torch.uint8)
    for g in range(6):
        if g == 4:
            polygons.append(None)  # an RLE instance: its targets come from the bitmap
            masks[g, 10:50, 20:90] = 1
            continue
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(3, 25))
            cx, cy, r = rng.uniform(20, width - 20), rng.uniform(20, height - 20), rng.uniform(3, 30)
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            pts = np.stack([cx + r * np.cos(angles), cy + r * rng.uniform(0.3, 1, k) * np.sin(angles)], 1)
            parts.append(pts.reshape(-1).astype(np.float32))
        if g == 2:
            parts.append(np.array([5.0, 5.0, 9.0, 9.0], dtype=np.float32))  # 2 points: ignored
        if g == 5:
            parts = [np.array([1.0, 1.0, 3.0, 3.0], dtype=np.float32)]  # nothing left to draw
        polygons.append(parts)
    gt_index = torch.from_numpy(rng.integers(0, 6, 40))
    centre = torch.from_numpy(rng.uniform(-10, [width + 10, height + 10], (40, 2))).float()
    half = torch.from_numpy(rng.uniform(0.5, 40, (40, 2))).float()
    boxes = torch.cat([centre - half, centre + half], 1)
    boxes[0] = torch.tensor([width + 5.0, 10.0, width + 20.0, 30.0])  # clipped to zero width
    return boxes, gt_index, {"masks": masks, "polygons": polygons}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_targets_equal_the_one_roi_at_a_time_targets(seed):
    boxes, gt_index, target = _random_scene(seed)
    sizes = (14, 28, 56, 112)
    batched = stage_mask_targets(boxes, gt_index, target, sizes, (96, 128))
    reference = stage_mask_targets_reference(boxes, gt_index, target, sizes, (96, 128))
    for a, b in zip(batched, reference):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    assert batched[-1][gt_index != 5].flatten(1).any(1).float().mean() > 0.25  # not a comparison of empty targets


def test_batched_rasterisation_equals_the_reference_on_a_dataset_like_image():
    """Polygons as CocoDetection gives them (float32 arrays, shared per instance) at 800×1333."""
    rng = np.random.default_rng(7)
    polygons = []
    for _ in range(7):
        centre, angles = rng.uniform(100, 700, 2), np.sort(rng.uniform(0, 2 * np.pi, 30))
        radii = rng.uniform(20, 90, 30)
        polygons.append([np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)
                         .reshape(-1).astype(np.float32)])
    gt = rng.integers(0, 7, 64)
    corner = np.stack([polygons[g][0][0::2].min() for g in gt]), np.stack([polygons[g][0][1::2].min() for g in gt])
    x1, y1 = corner[0] + rng.uniform(-10, 10, 64), corner[1] + rng.uniform(-10, 10, 64)
    boxes = np.stack([x1, y1, x1 + rng.uniform(60, 180, 64), y1 + rng.uniform(60, 180, 64)], 1)
    per_roi = [polygons[g] for g in gt]
    for size in (28, 112):
        assert np.array_equal(rasterize_polygons_in_boxes(per_roi, boxes, size),
                              rasterize_one_roi_at_a_time(per_roi, boxes, size))


def test_no_polygon_rois_give_empty_outputs():
    assert rasterize_polygons_in_boxes([], np.zeros((0, 4)), 28).shape == (0, 28, 28)


@pytest.mark.parametrize("seed", [0, 1])
def test_compact_targets_give_the_same_mask_and_semantic_targets(seed):
    from refinemask.data.transforms import drop_polygon_bitmaps

    boxes, gt_index, target = _random_scene(seed)
    compact = drop_polygon_bitmaps(target)
    # only the RLE instance's bitmap is kept; the union stands for the others
    assert compact["masks"].shape == (1, 96, 128) and compact["mask_rows"].tolist() == [-1, -1, -1, -1, 0, -1]
    assert torch.equal(compact["semantic"], target["masks"].amax(0))
    sizes = (14, 28, 56, 112)
    for a, b in zip(stage_mask_targets(boxes, gt_index, compact, sizes, (96, 128)),
                    stage_mask_targets(boxes, gt_index, target, sizes, (96, 128))):
        assert torch.equal(a, b)
    assert torch.equal(semantic_target([instance_union(compact)], (96, 128), (24, 32)),
                       semantic_target([instance_union(target)], (96, 128), (24, 32)))


def test_a_target_without_polygons_keeps_all_its_bitmaps():
    from refinemask.data.transforms import drop_polygon_bitmaps

    masks = torch.zeros(3, 16, 16, dtype=torch.uint8)
    for target in ({"masks": masks}, {"masks": masks, "polygons": [None, None, None]}):
        assert drop_polygon_bitmaps(target) is target


def _host_syncs_of_a_training_step(instances: int) -> int:
    """Device -> host reads (``.item()``, ``int()``, ``bool()`` of a tensor, data-dependent shapes)
    in one training step of a tiny model with ``instances`` polygon instances."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from tests.tiny_models import image_and_target, tiny_model

    class CountSyncs(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__ in ("_local_scalar_dense.default", "nonzero.default", "is_nonzero.default"):
                CountSyncs.count += 1
            return func(*args, **(kwargs or {}))

    model = tiny_model("refinemask").train()
    image, target = image_and_target(128, 160, n=instances, seed=0)
    target["polygons"] = [[np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float32)]
                          for x0, y0, x1, y1 in target["boxes"].tolist()]
    with CountSyncs():
        model([image], [target])
    return CountSyncs.count


def test_host_syncs_of_a_training_step_do_not_grow_with_the_positive_rois():
    # on a GPU each is a stall; int(g) per positive RoI (twice) made it ~512 per COCO iteration
    assert _host_syncs_of_a_training_step(2) == _host_syncs_of_a_training_step(6)
