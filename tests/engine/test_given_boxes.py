"""Masks for given boxes: the detector's own forward with the RPN's proposals replaced.

The given-box path must give the masks the normal path gives for the same boxes and labels, so
a user's detector (or the ground truth) can be refined by exactly the model that was evaluated.
"""
from __future__ import annotations

import pytest
import torch

from refinemask.engine.predict import Predictor
from refinemask.errors import RefineMaskError
from tests.export.conftest import as_tensor, confident_tiny_model, smooth_image


@pytest.fixture(scope="module", params=["refinemask", "maskrcnn"])
def model(request):
    torch.set_num_threads(1)
    return confident_tiny_model(request.param)


def _normal_and_given(model, image, labels=True):
    with torch.no_grad():
        normal = model([image])[0]
        given = model([image], boxes=[normal["boxes"]], labels=[normal["labels"]] if labels else None)[0]
    return normal, given


def test_given_boxes_equal_to_the_detections_give_the_same_masks(model):
    # 64x96 is resized by exactly 2 to the model's 128x192: the boxes scale there and back
    # without rounding, so both paths compute on identical numbers
    normal, given = _normal_and_given(model, as_tensor(smooth_image(64, 96, seed=1)))
    assert len(normal["boxes"]) == 5
    assert torch.equal(given["boxes"], normal["boxes"])
    assert torch.equal(given["labels"], normal["labels"])
    assert torch.equal(given["masks"] >= 0.5, normal["masks"] >= 0.5)
    # 1e-6: same inputs, same kernels; only the mask head's batch could differ in summation order
    torch.testing.assert_close(given["masks"], normal["masks"], atol=1e-6, rtol=0)
    assert 0 < (normal["masks"] >= 0.5).float().mean() < 1  # masks with edges, not empty or full


def test_given_boxes_through_an_inexact_resize_give_the_same_binary_masks(model):
    # 100x150 -> 128x192 scales by 1.28: a box moves by float rounding (~1e-5 px) on its way
    # into the resized image, which moves a steep random head's probabilities by up to ~5e-5
    normal, given = _normal_and_given(model, as_tensor(smooth_image(100, 150, seed=2)))
    assert torch.equal(given["masks"] >= 0.5, normal["masks"] >= 0.5)
    torch.testing.assert_close(given["masks"], normal["masks"], atol=1e-3, rtol=0)


def test_without_labels_the_box_head_classifies_the_given_boxes(model):
    image = as_tensor(smooth_image(64, 96, seed=1))
    normal, given = _normal_and_given(model, image, labels=False)
    with torch.no_grad():
        features = model.backbone(model.transform([image])[0].tensors)
        rois = model.transform([image], [{"boxes": normal["boxes"]}])[1][0]["boxes"]
        logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(model.roi_heads.box_roi_pool(features, [rois], None)))
    probs = logits.softmax(-1)
    assert torch.equal(given["labels"], probs[:, 1:].argmax(1) + 1)
    torch.testing.assert_close(given["scores"], probs[:, 1:].max(1).values)


def test_predictor_returns_one_mask_per_given_box_in_the_given_order(model):
    image = smooth_image(100, 150, seed=3)
    boxes = [[80.0, 10.0, 140.0, 90.0], [5.0, 5.0, 60.0, 50.0]]
    result = Predictor(model, score_thresh=0.99)(image, boxes=boxes, labels=[2, 1])  # no threshold on given boxes
    assert result["boxes"].tolist() == boxes
    assert result["labels"].tolist() == [2, 1]
    assert result["masks"].shape == (2, 100, 150) and result["masks"].dtype == torch.bool
    # each mask stays inside its box
    for mask, (x0, y0, x1, y1) in zip(result["masks"], boxes):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert len(xs) and xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
    swapped = Predictor(model)(image, boxes=boxes[::-1], labels=[1, 2])
    assert torch.equal(swapped["masks"], result["masks"].flip(0))


def test_predictor_takes_a_list_of_images_with_a_list_of_box_lists(model):
    images = [smooth_image(64, 96, seed=1), smooth_image(80, 80, seed=4)]
    results = Predictor(model)(images, boxes=[[[1, 2, 30, 40]], []])
    assert [len(r["masks"]) for r in results] == [1, 0]
    assert results[1]["masks"].shape == (0, 80, 80) and results[1]["boxes"].shape == (0, 4)


def test_a_box_partly_outside_the_image_is_clipped_and_keeps_its_given_coordinates(model):
    image = smooth_image(64, 96, seed=1)
    result = Predictor(model)(image, boxes=[[50, -20, 200, 40]], labels=[1])
    assert result["boxes"].tolist() == [[50, -20, 200, 40]]
    inside = Predictor(model)(image, boxes=[[50, 0, 96, 40]], labels=[1])
    assert torch.equal(result["masks"], inside["masks"])


@pytest.mark.parametrize(
    "boxes, labels, message",
    [
        ([[200, 10, 300, 50]], [1], r"box 0 \[200.0, 10.0, 300.0, 50.0\] lies outside the 96x64 image"),
        ([[10, 10, 40, 40], [30, 20, 10, 50]], None, r"box 1 .* has no area: boxes are XYXY"),
        ([[10, 10, 40]], None, r"boxes must be \(N, 4\) XYXY, got shape \(1, 3\)"),
        ([[10, 10, 40, float("nan")]], None, r"box 0 .* is not finite"),
        ([[10, 10, 40, 40]], [4], r"label 4 of box 0 is not a class of this model \(1..3\)"),
        ([[10, 10, 40, 40]], [1, 2], r"labels must be \(1,\), one per box"),
    ],
)
def test_bad_given_boxes_fail_in_one_line(model, boxes, labels, message):
    with pytest.raises(RefineMaskError, match=message) as error:
        Predictor(model)(smooth_image(64, 96, seed=1), boxes=boxes, labels=labels)
    assert "\n" not in str(error.value)


def test_given_boxes_need_eval_mode(model):
    model.train()
    try:
        with pytest.raises(RefineMaskError, match="eval mode only"):
            model([as_tensor(smooth_image(64, 96, seed=1))], boxes=[torch.tensor([[1.0, 1, 9, 9]])])
    finally:
        model.eval()
