"""Ground truth as annotation tools write it scores as COCO means it.

Each test gives the scene's own ground truth as perfect predictions: every metric must be 1
(or, for a size range the scene has no object in, NaN), whatever the file's dialect.
"""

from __future__ import annotations

import copy
import logging
import math

from refinemask.evaluation import evaluate_coco
from refinemask.evaluation.coco import settle_ground_truth


def _perfect(gt: dict) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
            "segmentation": a["segmentation"],
        }
        for a in gt["annotations"]
    ]


def _same(a: dict, b: dict) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_annotation_ids_from_zero_score_perfect_predictions_one(scene):
    # labelme and Label Studio number annotations from 0; the evaluator's "unmatched" is 0
    gt = scene.ground_truth()
    for annotation in gt["annotations"]:
        annotation["id"] -= 1
    metrics = evaluate_coco(gt, _perfect(gt))
    assert {key: m["AP"] for key, m in metrics.items()} == {"bbox": 1.0, "segm": 1.0, "boundary": 1.0}
    assert [a["id"] for a in gt["annotations"]][:2] == [0, 1]  # the caller's dict keeps its ids


def test_box_only_annotations_are_ignored_for_masks_and_scored_as_boxes(scene):
    # CVAT rectangles: "segmentation": []; a perfect model still predicts a mask on them
    gt = scene.ground_truth()
    results = _perfect(gt)
    gt["annotations"][0]["segmentation"] = []
    del gt["annotations"][3]["segmentation"]
    metrics = evaluate_coco(gt, results)
    assert {key: m["AP"] for key, m in metrics.items()} == {"bbox": 1.0, "segm": 1.0, "boundary": 1.0}


def test_box_only_annotations_still_count_as_missed_boxes(scene):
    gt = scene.ground_truth()
    gt["annotations"][0]["segmentation"] = []
    results = [r for r in _perfect(gt) if r["bbox"] != gt["annotations"][0]["bbox"]]
    metrics = evaluate_coco(gt, results)
    assert metrics["bbox"]["AP"] < 1.0  # a box target nobody found
    assert metrics["segm"]["AP"] == 1.0  # not a mask target


def test_missing_area_is_taken_from_the_segmentation(scene):
    # Label Studio writes no area: it must not put every object in "small"
    gt = scene.ground_truth()
    expected = evaluate_coco(gt, _perfect(gt))
    for annotation in gt["annotations"]:
        del annotation["area"]
    metrics = evaluate_coco(gt, _perfect(gt))
    assert metrics["segm"]["APm"] == 1.0
    for key in expected:
        assert _same(metrics[key], expected[key]), key


def test_a_wrong_area_is_replaced_and_said(scene, caplog):
    gt = scene.ground_truth()
    expected = evaluate_coco(gt, _perfect(gt))
    medium = next(a for a in gt["annotations"] if a["area"] > 32**2)
    medium["area"] = 10.0  # would move a medium object to "small"
    with caplog.at_level(logging.WARNING, logger="refinemask.evaluation.coco"):
        metrics = evaluate_coco(gt, _perfect(gt))
    assert _same(metrics["segm"], expected["segm"])
    assert "1 annotations' 'area' differs" in caplog.text and f"annotation {medium['id']}" in caplog.text


def test_areas_close_to_the_pixel_area_are_kept():
    gt = {
        "images": [{"id": 1, "height": 40, "width": 40}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 110.0,
             "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 20], "segmentation": []},
        ],
        "categories": [{"id": 1}],
    }
    settle_ground_truth(copy.deepcopy(gt))
    settled = settle_ground_truth(gt)
    assert [a["area"] for a in settled["annotations"]] == [110.0, 200.0]  # kept; box area for box-only
    assert [a["id"] for a in settled["annotations"]] == [5, 6]  # valid ids are not renumbered
