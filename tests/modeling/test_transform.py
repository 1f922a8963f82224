"""The model's resize of images and targets (DetectionTransform): the one resize in the pipeline.

Training data reaches the model at its own size; the model resizes the image, boxes, masks and
polygons together, so these tests are the specification of that resize.
"""
from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from refinemask.modeling.transform import DetectionTransform, rescale_size

H, W = 24, 32
L_SHAPE = [2.0, 2.0, 12.0, 2.0, 12.0, 6.0, 6.0, 6.0, 6.0, 16.0, 2.0, 16.0]


def rasterise(polygons: list, height: int, width: int) -> np.ndarray:
    coordinates = [np.asarray(p, np.float64).tolist() for p in polygons]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(coordinates, height, width)))


def sample(polygon: list[float], height: int = H, width: int = W) -> tuple[torch.Tensor, dict]:
    """An image with one polygon instance, its mask rasterised by pycocotools."""
    xs, ys = polygon[0::2], polygon[1::2]
    target = {
        "boxes": torch.tensor([[min(xs), min(ys), max(xs), max(ys)]]),
        "labels": torch.tensor([1]),
        "masks": torch.from_numpy(rasterise([polygon], height, width))[None],
        "polygons": [[np.asarray(polygon, np.float32)]],
    }
    return torch.rand(3, height, width), target


def test_resize_uses_the_official_rule():
    image, target = sample(L_SHAPE)
    images, [resized] = DetectionTransform(800, 1333)([image], [target])
    assert images.image_sizes == [rescale_size(H, W, 800, 1333)] == [(800, 1067)]
    assert resized["masks"].shape == (1, 800, 1067)


def test_resize_keeps_the_long_side_within_the_limit():
    images, _ = DetectionTransform(800, 1333)([torch.rand(3, 10, 40)])
    assert images.image_sizes == [rescale_size(10, 40, 800, 1333)] and max(images.image_sizes[0]) <= 1333


def test_resized_boxes_polygons_and_masks_stay_consistent():
    image, target = sample(L_SHAPE)
    _, [resized] = DetectionTransform(48, 1000)([image], [target])  # 24 x 32 -> 48 x 64
    assert resized["boxes"].tolist() == [[4.0, 4.0, 24.0, 32.0]]
    assert resized["polygons"][0][0].tolist() == [2 * v for v in L_SHAPE]
    assert np.array_equal(rasterise(resized["polygons"][0], 48, 64), resized["masks"][0].numpy())


def test_an_rle_instance_without_polygons_stays_without():
    image, target = sample(L_SHAPE)
    target["polygons"] = [None]
    _, [resized] = DetectionTransform(48, 1000)([image], [target])
    assert resized["polygons"] == [None] and resized["masks"].shape == (1, 48, 64)


def test_the_callers_target_is_left_as_it_was():
    image, target = sample(L_SHAPE)
    DetectionTransform(48, 1000)([image], [target])
    assert target["boxes"].tolist() == [[2.0, 2.0, 12.0, 16.0]] and target["masks"].shape == (1, H, W)


def test_training_picks_each_batch_short_side_from_min_size():
    sides = [16, 20, 28]
    transform = DetectionTransform(sides, 1000).train()
    image, target = sample(L_SHAPE)
    torch.manual_seed(0)
    seen = {min(transform([image], [target])[0].image_sizes[0]) for _ in range(40)}
    assert seen == set(sides)


def test_evaluation_uses_the_last_short_side():
    transform = DetectionTransform([16, 20, 28], 1000).eval()
    assert {min(transform([torch.rand(3, H, W)])[0].image_sizes[0]) for _ in range(5)} == {28}


def test_a_thin_strip_keeps_at_least_one_pixel_and_is_predicted():
    from refinemask.engine.predict import Predictor
    from tests.tiny_models import confident_tiny_model

    assert rescale_size(1, 6000, 800, 1333) == (1, 1333) and rescale_size(6000, 2, 800, 1333) == (1333, 1)
    predictor = Predictor(confident_tiny_model("refinemask", min_size=[800], max_size=1333))
    for shape in ((1, 600), (600, 2)):
        result = predictor(torch.rand(3, *shape, generator=torch.Generator().manual_seed(0)), masks="box")
        assert result["masks"].shape == (len(result["scores"]), *shape)
