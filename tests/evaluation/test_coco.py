"""COCO box, mask and Boundary AP on scenes whose scores are known by construction."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_api

from refinemask.errors import RefineMaskError
from refinemask.evaluation import evaluate_coco, predictions_to_coco_results
from refinemask.evaluation.coco import COCO_METRICS, binary_masks, encode_masks
from tests.evaluation.scenes import LABEL_TO_CATEGORY, box_of, grow_one_pixel, rectangle


def _results(scene, transform=lambda m: m, scores=None):
    outputs, image_ids = scene.outputs(transform, scores)
    return predictions_to_coco_results(outputs, image_ids, LABEL_TO_CATEGORY)


# --- predictions_to_coco_results ------------------------------------------------------------


def test_results_have_xywh_boxes_and_category_ids():
    output = {
        "boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [0.5, 1.5, 2.5, 9.5]]),
        "labels": torch.tensor([2, 1]),
        "scores": torch.tensor([0.75, 0.25]),
    }
    results = predictions_to_coco_results([output], [42], {1: 5, 2: 7})
    assert [r["bbox"] for r in results] == [[10.0, 20.0, 30.0, 40.0], [0.5, 1.5, 2.0, 8.0]]
    assert [r["category_id"] for r in results] == [7, 5]
    assert [r["image_id"] for r in results] == [42, 42]
    assert [r["score"] for r in results] == [0.75, 0.25]
    assert "segmentation" not in results[0]


def test_probability_masks_become_json_ready_rle_of_the_thresholded_mask():
    probabilities = torch.zeros(2, 1, 32, 48)
    probabilities[0, 0, 4:10, 5:20] = 0.7
    probabilities[1, 0, 20:30, 30:40] = 0.5  # exactly the threshold: inside, as in mmdetection
    probabilities[1, 0, 0:2, 0:2] = 0.49
    output = {
        "boxes": torch.zeros(2, 4),
        "labels": torch.tensor([1, 1]),
        "scores": torch.ones(2),
        "masks": probabilities,
    }
    results = predictions_to_coco_results([output], [1], {1: 1})
    json.dumps(results)  # counts are str, not bytes
    decoded = mask_api.decode([r["segmentation"] for r in results]).transpose(2, 0, 1)
    np.testing.assert_array_equal(decoded, (probabilities[:, 0] >= 0.5).numpy())
    assert results[0]["segmentation"]["size"] == [32, 48]


@pytest.mark.parametrize(
    "masks",
    [
        np.stack([rectangle(16, 16, 2, 3, 5, 6), rectangle(16, 16, 8, 8, 4, 4)]),  # uint8 (N,H,W)
        torch.from_numpy(
            np.stack([rectangle(16, 16, 2, 3, 5, 6), rectangle(16, 16, 8, 8, 4, 4)])
        ).bool(),
        torch.from_numpy(
            np.stack([rectangle(16, 16, 2, 3, 5, 6), rectangle(16, 16, 8, 8, 4, 4)])[:, None]
        ),
    ],
    ids=["numpy-uint8", "torch-bool", "torch-uint8-N1HW"],
)
def test_binary_masks_are_taken_as_they_are(masks):
    np.testing.assert_array_equal(
        binary_masks(masks),
        np.stack([rectangle(16, 16, 2, 3, 5, 6), rectangle(16, 16, 8, 8, 4, 4)]),
    )


def test_an_image_without_detections_gives_no_results():
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "masks": torch.zeros(0, 1, 16, 16),
    }
    assert predictions_to_coco_results([empty], [1], {1: 1}) == []


def test_unknown_label_is_a_user_error():
    output = {"boxes": torch.zeros(1, 4), "labels": torch.tensor([4]), "scores": torch.ones(1)}
    with pytest.raises(RefineMaskError, match="label 4"):
        predictions_to_coco_results([output], [1], {1: 1, 2: 2})


# --- evaluate_coco --------------------------------------------------------------------------


def test_perfect_predictions_score_one(scene):
    metrics = evaluate_coco(
        scene.ground_truth(), _results(scene), boundary_dilation_ratios=(0.02, 0.008)
    )
    assert list(metrics) == ["bbox", "segm", "boundary", "boundary@0.008"]
    for key, values in metrics.items():
        for name in ("AP", "AP50", "AP75", "APs", "APm"):
            assert values[name] == 1.0, (key, name)
        assert math.isnan(values["APl"])  # the scene has no large object


def test_one_pixel_growth_costs_boundary_ap_more_than_mask_ap(scene):
    metrics = evaluate_coco(
        scene.ground_truth(), _results(scene, grow_one_pixel), ("segm", "boundary"), (0.02, 0.008)
    )
    segm, boundary, tight = (metrics[k]["AP"] for k in ("segm", "boundary", "boundary@0.008"))
    assert segm > 0.6  # mask IoU of a grown 30x40 rectangle is still 0.89
    assert boundary < segm - 0.3
    # a 1-px band (0.008 x 181 px diagonal) and a 1-px shift share no pixel at all
    assert tight == 0.0


def _direct_faster_coco_eval(
    gt: dict, results: list[dict], iou_type: str, ratio: float = 0.02
) -> dict:
    coco_gt = COCO(copy.deepcopy(gt))
    coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    evaluator = COCOeval_faster(
        coco_gt,
        coco_dt,
        iouType=iou_type,
        boundary_dilation_ratio=ratio,
        print_function=lambda *a: None,
    )
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats_as_dict


def test_metrics_equal_faster_coco_eval_called_directly(scene):
    rng = np.random.default_rng(0)

    def jitter(mask):
        shifted = np.roll(mask, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        return grow_one_pixel(shifted) if rng.random() < 0.5 else shifted

    gt = scene.ground_truth()
    results = _results(scene, jitter, scores=[0.9, 0.6, 0.3])
    # a confident false positive and a low-scoring duplicate
    false_positive = rectangle(128, 128, 60, 20, 20, 20)
    results.append(
        {
            "image_id": 1,
            "category_id": 5,
            "bbox": [20.0, 60.0, 20.0, 20.0],
            "score": 0.95,
            "segmentation": encode_masks(false_positive[None])[0],
        }
    )
    results.append(dict(results[1], score=0.2))

    ours = evaluate_coco(gt, results, boundary_dilation_ratios=(0.02, 0.008))
    names = dict(
        zip(COCO_METRICS, ("AP_all", "AP_50", "AP_75", "AP_small", "AP_medium", "AP_large"))
    )
    for key, iou_type, ratio in [
        ("bbox", "bbox", 0.02),
        ("segm", "segm", 0.02),
        ("boundary", "boundary", 0.02),
        ("boundary@0.008", "boundary", 0.008),
    ]:
        direct = _direct_faster_coco_eval(gt, results, iou_type, ratio)
        for ours_name, theirs in names.items():
            expected = direct[theirs] if direct[theirs] >= 0 else float("nan")
            np.testing.assert_equal(ours[key][ours_name], expected, err_msg=f"{key} {ours_name}")
    assert 0.0 < ours["segm"]["AP"] < 1.0  # the comparison is not between two trivial cases


def test_empty_predictions_score_zero_without_crashing(scene):
    metrics = evaluate_coco(scene.ground_truth(), [])
    for values in metrics.values():
        assert (values["AP"], values["AP50"], values["AP75"]) == (0.0, 0.0, 0.0)


def test_scores_are_the_same_from_paths_and_inputs_are_left_unchanged(scene, tmp_path):
    gt, results = scene.ground_truth(), _results(scene, grow_one_pixel)
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    from_objects = evaluate_coco(gt, results)
    from_paths = evaluate_coco(tmp_path / "gt.json", str(tmp_path / "results.json"))
    assert json.dumps(from_objects) == json.dumps(from_paths)
    assert gt == gt_before and results == results_before


def test_results_for_images_not_in_the_ground_truth_are_a_user_error(scene):
    results = _results(scene)
    results[0]["image_id"] = 999
    with pytest.raises(RefineMaskError, match="999"):
        evaluate_coco(scene.ground_truth(), results)


def test_contiguous_labels_instead_of_category_ids_are_a_user_error(scene):
    outputs, image_ids = scene.outputs()
    results = predictions_to_coco_results(outputs, image_ids, {1: 1, 2: 2, 3: 3})
    with pytest.raises(RefineMaskError, match="category id"):
        evaluate_coco(scene.ground_truth(), results)


def test_box_only_results_cannot_be_scored_for_masks(scene):
    results = [{k: v for k, v in r.items() if k != "segmentation"} for r in _results(scene)]
    assert evaluate_coco(scene.ground_truth(), results, ("bbox",))["bbox"]["AP"] == 1.0
    with pytest.raises(RefineMaskError, match="segmentation"):
        evaluate_coco(scene.ground_truth(), results, ("segm",))


def test_image_ids_restrict_scoring_to_the_images_run(scene):
    results = [r for r in _results(scene) if r["image_id"] == 1]
    assert evaluate_coco(scene.ground_truth(), results, ("segm",))["segm"]["AP"] < 1.0
    assert (
        evaluate_coco(scene.ground_truth(), results, ("segm",), image_ids=[1])["segm"]["AP"] == 1.0
    )


def test_evaluation_prints_nothing(scene, capsys):
    evaluate_coco(scene.ground_truth(), _results(scene))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_boxes_of_the_scene_are_exact():
    # guards the fixture: the XYXY box of a rectangle mask is its exclusive pixel extent
    assert box_of(rectangle(16, 16, 2, 3, 5, 6)) == [3.0, 2.0, 9.0, 7.0]


def test_a_pycocotools_ground_truth_object_is_accepted(tmp_path):
    import json

    from pycocotools.coco import COCO as PyCOCO

    from refinemask.evaluation.coco import load_coco_ground_truth

    data = {"images": [{"id": 1, "width": 8, "height": 8, "file_name": "a.png"}], "annotations": [],
            "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    loaded = load_coco_ground_truth(PyCOCO(str(path)))
    assert loaded.getImgIds() == [1]


# --- Boundary AP at half-pixel band widths ----------------------------------------------------


def _official_band(mask: np.ndarray, width: int) -> np.ndarray:
    """The Boundary IoU paper's band: the mask less its erosion by ``width`` steps of a 3x3
    square, with nothing outside the image (what boundary-iou-api does with OpenCV)."""
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(mask, width)
    eroded = sliding_window_view(padded, (2 * width + 1, 2 * width + 1)).min(axis=(2, 3))
    return (mask - eroded).astype(bool)


def test_the_band_width_rounds_half_to_even_as_the_official_code():
    from refinemask.evaluation.coco import boundary_band_width

    assert boundary_band_width(225, 300, 0.02) == 8  # 7.5
    assert boundary_band_width(105, 140, 0.02) == 4  # 3.5
    assert boundary_band_width(75, 100, 0.02) == 2  # 2.5
    assert boundary_band_width(128, 128, 0.008) == 1  # 1.448
    assert boundary_band_width(10, 10, 0.02) == 1  # 0.28, at least one pixel


def test_boundary_ap_uses_the_official_8_px_band_at_225x300():
    # 0.02 x 375 = 7.5: the official band is 8 px; faster-coco-eval alone makes it 7 px. A
    # 6-px shift of a 160x210 box has boundary IoU 0.51 with 8 px and 0.46 with 7 px.
    height, width = 225, 300
    truth, shifted = rectangle(height, width, 40, 50, 160, 210), rectangle(height, width, 40, 56, 160, 210)

    def band_iou(band_width):
        a, b = _official_band(truth, band_width), _official_band(shifted, band_width)
        return (a & b).sum() / (a | b).sum()

    assert band_iou(8) >= 0.5 > band_iou(7)  # the scene separates the two widths
    gt = {
        "images": [{"id": 1, "height": height, "width": width}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": encode_masks(truth[None])[0],
             "area": float(truth.sum()), "bbox": [50.0, 40.0, 210.0, 160.0], "iscrowd": 0}
        ],
    }
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [56.0, 40.0, 210.0, 160.0],
                "segmentation": encode_masks(shifted[None])[0]}]
    assert evaluate_coco(gt, results, ("boundary",))["boundary"]["AP50"] == 1.0
