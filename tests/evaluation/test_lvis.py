"""LVIS-style scoring and AP*, checked against the lvis package (lvis.LVISEval)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from refinemask.errors import RefineMaskError
from refinemask.evaluation import evaluate_ap_star, evaluate_lvis
from refinemask.evaluation.coco import encode_masks
from tests.evaluation.scenes import box_of, rectangle

lvis = pytest.importorskip("lvis")

H, W = 96, 96
FREQUENCIES = {1: "r", 2: "c", 3: "f", 4: "f"}


def _annotation(mask: np.ndarray, image_id: int, category_id: int, ann_id: int) -> dict:
    x0, y0, x1, y1 = box_of(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": encode_masks(mask[None])[0],
        "area": float(mask.sum()),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
    }


def _detection(mask: np.ndarray, image_id: int, category_id: int, score: float) -> dict:
    result = _annotation(mask, image_id, category_id, 0)
    del result["id"], result["area"]
    result["score"] = score
    return result


def _random_lvis_case(seed: int = 0) -> tuple[dict, list[dict]]:
    """Four images; jittered true detections, wrong-class ones, and federated label lists."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, 5):
        present = set()
        for _ in range(4):
            category = int(rng.integers(1, 5))
            h, w = (int(v) for v in rng.integers(6, 50, size=2))
            top, left = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
            annotations.append(
                _annotation(
                    rectangle(H, W, top, left, h, w), image_id, category, len(annotations) + 1
                )
            )
            present.add(category)
            for guess in (category, int(rng.integers(1, 5))):
                dy, dx, dh, dw = (int(v) for v in rng.integers(-3, 4, size=4))
                mask = rectangle(
                    H, W, max(0, top + dy), max(0, left + dx), max(2, h + dh), max(2, w + dw)
                )
                results.append(_detection(mask, image_id, guess, float(rng.random())))
        absent = [c for c in FREQUENCIES if c not in present]
        images.append(
            {
                "id": image_id,
                "height": H,
                "width": W,
                "neg_category_ids": absent[:1],  # the others are unknown for this image
                "not_exhaustive_category_ids": sorted(present)[:1],
            }
        )
    categories = [{"id": c, "name": f"c{c}", "frequency": f} for c, f in FREQUENCIES.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _lvis_package(gt: dict, results: list[dict], iou_type: str, tmp_path, monkeypatch) -> dict:
    # lvis 0.5.3 still uses np.float, removed in NumPy 1.24
    monkeypatch.setattr(np, "float", float, raising=False)
    path = tmp_path / "lvis_gt.json"
    path.write_text(json.dumps(gt))
    lvis_gt = lvis.LVIS(str(path))
    results_path = tmp_path / "lvis_results.json"
    results_path.write_text(json.dumps(results))
    evaluator = lvis.LVISEval(lvis_gt, lvis.LVISResults(lvis_gt, str(results_path)), iou_type)
    evaluator.run()
    return {k: (float("nan") if v < 0 else float(v)) for k, v in evaluator.get_results().items()}


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_lvis_style_equals_the_lvis_package(iou_type, tmp_path, monkeypatch):
    gt, results = _random_lvis_case()
    # image 1 gets 320 low-scoring copies of its objects: only its 300 best detections count
    image_1 = [a for a in gt["annotations"] if a["image_id"] == 1]
    for i in range(320):
        copied = image_1[i % len(image_1)]
        results.append(
            {
                "image_id": 1,
                "category_id": copied["category_id"],
                "segmentation": copied["segmentation"],
                "bbox": copied["bbox"],
                "score": 0.3 * i / 320,
            }
        )
    ours = evaluate_lvis(gt, results, (iou_type,))[iou_type]
    theirs = _lvis_package(gt, results, iou_type, tmp_path, monkeypatch)
    assert set(ours) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}
    for name, value in ours.items():
        np.testing.assert_allclose(value, theirs[name], rtol=0, atol=1e-9, err_msg=name)
    assert 0.1 < ours["AP"] < 0.9


def _two_object_case() -> tuple[dict, list[dict]]:
    """Two images with one object each (categories 1 and 2), both found perfectly."""
    mask = rectangle(H, W, 20, 20, 30, 30)
    gt = {
        "images": [
            {
                "id": i,
                "height": H,
                "width": W,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            }
            for i in (1, 2)
        ],
        "annotations": [_annotation(mask, 1, 1, 1), _annotation(mask, 2, 2, 2)],
        "categories": [{"id": c, "name": f"c{c}", "frequency": "f"} for c in (1, 2)],
    }
    return gt, [_detection(mask, 1, 1, 0.5), _detection(mask, 2, 2, 0.5)]


def test_detections_of_categories_the_image_says_nothing_about_are_dropped():
    gt, results = _two_object_case()
    # a confident category-2 detection on image 1, which does not list category 2
    results.append(_detection(rectangle(H, W, 60, 60, 20, 20), 1, 2, 0.9))
    assert evaluate_lvis(gt, results, ("segm",))["segm"]["AP"] == 1.0
    # once image 1 says category 2 is verified absent, it is a false positive
    gt["images"][0]["neg_category_ids"] = [2]
    assert evaluate_lvis(gt, results, ("segm",))["segm"]["AP"] == pytest.approx((1.0 + 0.5) / 2)


def test_unmatched_detections_of_not_exhaustive_categories_are_ignored():
    gt, results = _two_object_case()
    false_positive = _detection(rectangle(H, W, 60, 60, 20, 20), 1, 1, 0.9)
    assert evaluate_lvis(gt, results + [false_positive], ("segm",))["segm"]["AP"] < 1.0
    gt["images"][0]["not_exhaustive_category_ids"] = [1]
    assert evaluate_lvis(gt, results + [false_positive], ("segm",))["segm"]["AP"] == 1.0


def test_frequency_groups_without_categories_are_nan():
    gt, results = _two_object_case()
    metrics = evaluate_lvis(gt, results, ("segm", "boundary"))
    for values in metrics.values():
        assert values["AP"] == values["APf"] == 1.0
        assert math.isnan(values["APr"]) and math.isnan(values["APc"])


def test_lvis_style_needs_category_frequencies():
    gt, results = _two_object_case()
    del gt["categories"][0]["frequency"]
    with pytest.raises(RefineMaskError, match="frequency"):
        evaluate_lvis(gt, results, ("segm",))


# --- AP* ------------------------------------------------------------------------------------

PERSON, CAR, DOG = 1, 3, 18  # COCO category ids


def _cocofied_case() -> tuple[dict, list[dict]]:
    """A cocofied LVIS file (COCO ids, LVIS fields) and COCO predictions for its images.

    LVIS's masks are finer than COCO's: the COCO-trained detector's person mask is one pixel
    fatter than the LVIS person mask, its car mask is exact.
    """
    person = rectangle(H, W, 10, 10, 40, 16)
    car = rectangle(H, W, 60, 30, 20, 40)
    cocofied = {
        "images": [
            {
                "id": 139,
                "height": H,
                "width": W,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [CAR],
            },
            {
                "id": 285,
                "height": H,
                "width": W,
                "neg_category_ids": [PERSON],
                "not_exhaustive_category_ids": [],
            },
            # no COCO-class object here: the cocofied file keeps the image, without annotations
            {
                "id": 776,
                "height": H,
                "width": W,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            },
        ],
        "annotations": [
            _annotation(person, 139, PERSON, 1),
            _annotation(car, 139, CAR, 2),
            _annotation(car, 285, CAR, 3),
        ],
        # DOG has no LVIS instance in this split, so the cocofied file dropped it
        "categories": [
            {"id": PERSON, "name": "person", "synset": "person.n.01", "frequency": "f"},
            {"id": CAR, "name": "car_(automobile)", "synset": "car.n.01", "frequency": "f"},
        ],
    }
    fatter_person = person.copy()
    fatter_person[9:51, 9:27] = 1
    coco_results = [
        _detection(fatter_person, 139, PERSON, 0.9),
        _detection(car, 139, CAR, 0.8),
        _detection(car, 285, CAR, 0.7),
        _detection(rectangle(H, W, 0, 60, 20, 20), 139, CAR, 0.95),  # car not exhaustively labelled
        _detection(rectangle(H, W, 0, 60, 20, 20), 285, DOG, 0.6),  # class not in the cocofied file
        # an image the cocofied file does not cover
        _detection(rectangle(H, W, 0, 60, 20, 20), 632, PERSON, 0.6),
        # a category image 776 says nothing about (faster-coco-eval 1.8.0 alone crashes on it)
        _detection(rectangle(H, W, 0, 60, 20, 20), 776, PERSON, 0.6),
    ]
    return cocofied, coco_results


def test_ap_star_scores_coco_results_on_the_cocofied_file():
    cocofied, coco_results = _cocofied_case()
    metrics = evaluate_ap_star(cocofied, coco_results, ("segm", "boundary"))
    assert list(metrics) == ["segm", "boundary"]
    # the cars are exact and the unlabelled-car false positive is ignored (car AP 1); the
    # fatter person (mask IoU 640/756 = 0.847) matches at IoU thresholds 0.50-0.80 (person AP 0.7)
    assert metrics["segm"]["AP"] == pytest.approx((1.0 + 0.7) / 2)
    assert metrics["boundary"]["AP"] < metrics["segm"]["AP"]


def test_ap_star_equals_the_lvis_package_as_the_official_code_runs_it(tmp_path, monkeypatch):
    cocofied, coco_results = _cocofied_case()
    # LVISResults refuses images outside the file, so give it only the covered images
    covered = [r for r in coco_results if r["image_id"] in (139, 285, 776)]
    theirs = _lvis_package(cocofied, covered, "segm", tmp_path, monkeypatch)
    ours = evaluate_ap_star(cocofied, coco_results)["segm"]
    for name, value in ours.items():
        np.testing.assert_allclose(value, theirs[name], rtol=0, atol=1e-9, err_msg=name)


def test_ap_star_with_raw_lvis_category_ids_is_a_user_error():
    cocofied, coco_results = _cocofied_case()
    for category in cocofied["categories"]:
        category["id"] += 1000  # an LVIS file that was not cocofied
    with pytest.raises(RefineMaskError, match="cocofied"):
        evaluate_ap_star(cocofied, coco_results)
