"""Official Cityscapes instance AP (cityscapesScripts) on a tiny fake Cityscapes ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from refinemask.errors import RefineMaskError
from refinemask.evaluation import (
    cityscapes_label_ids,
    cityscapes_predictions_from_coco,
    evaluate_cityscapes,
    predictions_to_coco_results,
)
from tests.evaluation import scenes
from tests.evaluation.scenes import rectangle

pytest.importorskip("cityscapesscripts")

H, W = scenes.CITYSCAPES_SIZE
STEM = scenes.CITYSCAPES_STEM
PERSON, CAR = 24, 26  # Cityscapes label ids
PEOPLE, CARS = scenes.CITYSCAPES_PEOPLE, scenes.CITYSCAPES_CARS
CAR_GROUP, VOID_AREA = scenes.CITYSCAPES_CAR_GROUP, scenes.CITYSCAPES_VOID_AREA


def _output(masks: list[np.ndarray], labels: list[int], scores: list[float]) -> dict:
    return {
        "masks": torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores),
    }


def _perfect() -> dict:
    masks = list(PEOPLE.values()) + list(CARS.values())
    return _output(masks, [PERSON] * len(PEOPLE) + [CAR] * len(CARS), [0.9, 0.8, 0.7])


def test_perfect_predictions_score_one(cityscapes_gt_dir):
    result = evaluate_cityscapes(cityscapes_gt_dir, {f"{STEM}_leftImg8bit.png": _perfect()})
    assert (result["AP"], result["AP50"]) == (1.0, 1.0)
    assert result["classes"]["person"] == result["classes"]["car"] == {"AP": 1.0, "AP50": 1.0}
    assert math.isnan(result["classes"]["bus"]["AP"])  # neither ground truth nor predictions
    assert len(result["classes"]) == 8


def test_a_miss_and_a_false_positive_give_the_cityscapes_ap(cityscapes_gt_dir):
    # person: one of two found (0.9), one false positive on the road (0.8)
    # -> precision 1 up to recall 0.5: AP 0.5 at every overlap; car perfect: AP 1
    output = _output(
        [PEOPLE[24000], rectangle(H, W, 55, 60, 5, 30), CARS[26001]],
        [PERSON, PERSON, CAR],
        [0.9, 0.8, 0.7],
    )
    result = evaluate_cityscapes(
        [cityscapes_gt_dir / "fakecity" / f"{STEM}_gtFine_instanceIds.png"], {STEM: output}
    )
    assert result["classes"]["person"] == {"AP": 0.5, "AP50": 0.5}
    assert result["AP"] == pytest.approx(0.75)


def test_unmatched_predictions_on_groups_or_void_are_not_false_positives(cityscapes_gt_dir):
    output = _perfect()
    extra = _output([CAR_GROUP, VOID_AREA], [CAR, CAR], [0.95, 0.95])
    merged = {k: torch.cat([extra[k], output[k]]) for k in output}
    assert evaluate_cityscapes(cityscapes_gt_dir, {STEM: merged})["classes"]["car"]["AP"] == 1.0
    on_road = _output([rectangle(H, W, 82, 10, 10, 60)], [CAR], [0.95])
    merged = {k: torch.cat([on_road[k], output[k]]) for k in output}
    assert evaluate_cityscapes(cityscapes_gt_dir, {STEM: merged})["classes"]["car"]["AP"] < 1.0


def test_contiguous_labels_are_mapped_to_cityscapes_ids(cityscapes_gt_dir):
    mapping = cityscapes_label_ids(["person", "rider", "car"])
    assert mapping == {1: 24, 2: 25, 3: 26}
    output = _perfect()
    output["labels"] = torch.tensor([1, 1, 3])
    assert (
        evaluate_cityscapes(cityscapes_gt_dir, {STEM: output}, label_to_cityscapes_id=mapping)["AP"]
        == 1.0
    )


def test_coco_results_on_a_cityscapes_json_are_scored_by_file_name(cityscapes_gt_dir):
    # a COCO json with categories 1..8 in Cityscapes order, as some converters write it
    names = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    coco_gt = {
        "images": [
            {"id": 7, "height": H, "width": W, "file_name": f"fakecity/{STEM}_leftImg8bit.png"}
        ],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    output = _perfect()
    output["boxes"] = torch.zeros(3, 4)
    results = predictions_to_coco_results([output], [7], {PERSON: 1, CAR: 3})
    predictions = cityscapes_predictions_from_coco(results, coco_gt)
    assert evaluate_cityscapes(cityscapes_gt_dir, predictions)["AP"] == 1.0


def test_images_without_predictions_count_as_missed(cityscapes_gt_dir):
    result = evaluate_cityscapes(cityscapes_gt_dir, {})
    assert result["classes"]["person"]["AP"] == 0.0 and result["AP"] == 0.0


def test_predictions_for_an_image_without_ground_truth_are_a_user_error(cityscapes_gt_dir):
    with pytest.raises(RefineMaskError, match="otherland_000001_000002"):
        evaluate_cityscapes(cityscapes_gt_dir, {"otherland_000001_000002": _perfect()})


def test_masks_at_another_size_are_a_user_error(cityscapes_gt_dir):
    output = _perfect()
    output["masks"] = output["masks"][..., :64]
    with pytest.raises(RefineMaskError, match="full resolution"):
        evaluate_cityscapes(cityscapes_gt_dir, {STEM: output})


def test_missing_ground_truth_directory_is_a_user_error(tmp_path):
    with pytest.raises(RefineMaskError, match="does not exist"):
        evaluate_cityscapes(tmp_path / "nowhere", {})
