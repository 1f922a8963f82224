"""Masks for given boxes: the detector's own forward with the RPN's proposals replaced.

The given-box path must give the masks the normal path gives for the same boxes and labels, so
a user's detector (or the ground truth) can be refined by exactly the model that was evaluated.
"""
from __future__ import annotations

import pytest
import torch

from refinemask.engine.predict import Predictor
from refinemask.errors import RefineMaskError
from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image
from tests.tolerances import KERNEL_ATOL, assert_same_binary_masks
from tests.scratch import scratch_dir


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
    # without rounding, so both paths compute on the same numbers (up to kernel choice)
    normal, given = _normal_and_given(model, as_tensor(smooth_image(64, 96, seed=1)))
    assert len(normal["boxes"]) == 5
    assert torch.equal(given["boxes"], normal["boxes"])
    assert torch.equal(given["labels"], normal["labels"])
    assert_same_binary_masks(given["masks"], normal["masks"])
    torch.testing.assert_close(given["masks"], normal["masks"], atol=KERNEL_ATOL, rtol=0)
    assert 0 < (normal["masks"] >= 0.5).float().mean() < 1  # masks with edges, not empty or full


def test_given_boxes_through_an_inexact_resize_give_the_same_binary_masks(model):
    # 100x150 -> 128x192 scales by 1.28: a box moves by float rounding (~1e-5 px) on its way
    # into the resized image, which moves a steep random head's probabilities by up to ~5e-5
    # here; 1e-3 leaves room for that plus kernel choice, and a wrong box or class moves them by
    # far more
    normal, given = _normal_and_given(model, as_tensor(smooth_image(100, 150, seed=2)))
    assert_same_binary_masks(given["masks"], normal["masks"], margin=1e-3)
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
    with torch.no_grad():
        probs = model([as_tensor(image)], boxes=[torch.tensor(boxes)], labels=[torch.tensor([2, 1])])[0]["masks"]
        swapped = model([as_tensor(image)], boxes=[torch.tensor(boxes[::-1])], labels=[torch.tensor([1, 2])])[0]["masks"]
    assert torch.equal(result["masks"], probs[:, 0] >= 0.5)
    assert_same_binary_masks(swapped.flip(0), probs)


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


# --- refinemask eval --gt-boxes ---------------------------------------------------------------


def _rectangles_dataset(root):
    """3 images of 64 px with 2 filled rectangles each; every mask is exactly its box."""
    import json

    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in (1, 2, 3):
        pixels = np.full((64, 64, 3), 40, dtype=np.uint8)
        for k in range(2):
            x0, y0 = int(rng.integers(2, 24)) + 30 * k, int(rng.integers(2, 30))
            x1, y1 = x0 + int(rng.integers(6, 30)), y0 + int(rng.integers(6, 30))
            x1 = min(x1, 64)
            mask = np.zeros((64, 64), dtype=np.uint8)
            mask[y0:y1, x0:x1] = 1
            pixels[mask.astype(bool)] = (200, 60 + 100 * k, 90)
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1 + (image_id + k) % 5,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(mask.sum()), "iscrowd": 0, "segmentation": rle,
            })
        Image.fromarray(pixels).save(root / "images" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 64, "height": 64})
    categories = [{"id": i, "name": f"c{i}"} for i in range(1, 6)]
    (root / "val.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root / "val.json", root / "images"


def _constant_mask_model(logit: float, mask_head: str):
    """A tiny model of the engine tests' config whose every mask logit is ``logit``: its masks
    fill their box (logit > 0) or are empty (logit < 0), whatever the image."""
    from refinemask import build_model
    from tests.tiny_runs import TINY_CONFIG

    torch.manual_seed(0)
    model = build_model(**{**TINY_CONFIG["model"], "mask_head": mask_head})
    heads = model.roi_heads
    convs = (
        [s.instance_logits for s in heads.mask_head.stages] + [heads.mask_head.final_instance_logits]
        if heads.is_refinemask else [heads.mask_predictor.mask_fcn_logits]
    )
    with torch.no_grad():
        for conv in convs:
            conv.weight.zero_()
            conv.bias.fill_(logit)
    return model


@pytest.mark.parametrize("mask_head", ["refinemask", "maskrcnn"])
def test_eval_gt_boxes_scores_perfect_masks_one_and_empty_masks_zero(tmp_path, mask_head, capsys):
    import json

    from refinemask.cli import main
    from refinemask.model_files import save_weights
    from tests.tiny_runs import write_config

    val, images = _rectangles_dataset(tmp_path / "data")
    config = write_config(tmp_path / "run.yaml", None, tmp_path / "out", model={"mask_head": mask_head}, data={
        "train_annotations": str(val), "train_images": str(images), "val_annotations": str(val), "val_images": str(images),
    })
    metrics = {}
    for name, logit in (("full", 20.0), ("empty", -20.0)):
        weights = save_weights(_constant_mask_model(logit, mask_head), tmp_path / f"{name}.safetensors")
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(config), "--weights", str(weights), "--gt-boxes", "--out", str(out)]) == 0
        metrics[name] = json.loads(out.read_text())
    # a box-filling mask is the exact ground truth of a rectangle: every metric is perfect
    assert list(metrics["full"]) == ["segm", "boundary", "boundary@0.008"]  # no box AP on given boxes
    for kind in ("segm", "boundary", "boundary@0.008"):
        assert metrics["full"][kind]["AP"] == pytest.approx(1.0)
        assert metrics["empty"][kind]["AP"] == 0.0
    # without --gt-boxes the same model segments its own (random) detections
    out = tmp_path / "own.json"
    assert main(["eval", str(config), "--weights", str(tmp_path / "full.safetensors"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["segm"]["AP"] < 0.5


def test_gt_boxes_with_a_results_file_is_refused_in_one_line(tmp_path, capsys):
    from refinemask.cli import main

    assert main(["eval", "--annotations", "a.json", "--predictions", "b.json", "--gt-boxes"]) == 2
    assert "--gt-boxes evaluates a model" in capsys.readouterr().err


# --- refinemask predict --boxes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """Weights of the confident tiny RefineMask model and two images named by their COCO ids."""
    from PIL import Image

    from refinemask.model_files import save_weights

    with scratch_dir(tmp_path_factory, "boxes_cli") as root:
        model = confident_tiny_model("refinemask")
        weights = save_weights(model, root / "model.safetensors", model.label_to_category, model.category_names)
        (root / "images").mkdir()
        for image_id, seed in ((7, 1), (9, 5)):
            # 64x96: resized by exactly 2, see the first test
            pixels = (smooth_image(64, 96, seed=seed) * 255).round().astype("uint8")
            Image.fromarray(pixels).save(root / "images" / f"{image_id}.png")
        yield weights, root / "images"


def _predict(weights, images, out, *extra, overlays=False):
    from refinemask.cli import main

    return main(["predict", "--weights", str(weights), str(images), "--out", str(out),
                 *([] if overlays else ["--no-overlays"]), *extra])


def _decode(segmentation):
    from pycocotools import mask as mask_utils

    return mask_utils.decode({**segmentation, "counts": segmentation["counts"].encode()})


def test_predict_boxes_adds_the_masks_of_the_models_own_detections_to_its_results(cli_files, tmp_path):
    import json

    weights, images = cli_files
    assert _predict(weights, images, tmp_path / "own", "--score-thresh", "0") == 0
    own = json.loads((tmp_path / "own" / "results.json").read_text())
    assert len(own) == 10
    boxes = [{k: v for k, v in row.items() if k != "segmentation"} for row in own]
    # one image's entries name its file, the other's only its id: 7.png is image 7
    assert {row["file_name"] for row in boxes[:5]} == {"7.png"}
    for row in boxes[:5]:
        del row["file_name"]
        row["image_id"] = 7
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    assert _predict(weights, images, tmp_path / "given", "--boxes", str(tmp_path / "boxes.json")) == 0
    given = json.loads((tmp_path / "given" / "results.json").read_text())
    assert [{k: v for k, v in row.items() if k != "segmentation"} for row in given] == boxes  # same entries
    for mine, theirs in zip(given, own):
        a, b = _decode(mine["segmentation"]), _decode(theirs["segmentation"])
        # the same masks; a pixel at the threshold may flip under kernel rounding (tests/tolerances.py)
        assert a.sum() > 0 and (a != b).sum() <= max(1, a.size // 1000)


def test_predict_boxes_of_an_image_not_among_the_inputs_fail_in_one_line(cli_files, tmp_path, capsys):
    import json

    weights, images = cli_files
    entries = [{"image_id": 7, "category_id": 1, "bbox": [2, 3, 20, 30], "score": 0.9},
               {"image_id": 8, "category_id": 1, "bbox": [2, 3, 20, 30], "score": 0.8}]
    (tmp_path / "boxes.json").write_text(json.dumps(entries))
    assert _predict(weights, images, tmp_path / "out", "--boxes", str(tmp_path / "boxes.json")) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert "1 boxes (entries 1) are for image id 8, which is not among the 2 input images (ids from the numbers in the file names" in error


def test_predict_boxes_with_an_empty_file_writes_an_empty_result(cli_files, tmp_path):
    weights, images = cli_files
    (tmp_path / "boxes.json").write_text("[]")
    assert _predict(weights, images, tmp_path / "out", "--boxes", str(tmp_path / "boxes.json")) == 0
    assert (tmp_path / "out" / "results.json").read_text() == "[]"


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"image_id": 9, "category_id": 2, "bbox": [150, 10, 20, 20]}, "image 9.png: box 0 [150.0, 10.0, 170.0, 30.0] lies outside the 96x64 image"),
        ({"image_id": 9, "category_id": 2, "bbox": [10, 10, 0, 20]}, "entry 0: bbox [10, 10, 0, 20] has no area"),
        ({"image_id": 9, "category_id": 2, "bbox": [10, 10]}, "entry 0: bbox must be [x, y, width, height]"),
        ({"image_id": 9, "category_id": 4, "bbox": [10, 10, 5, 5]}, "category_id 4 is not a category of the model (3 categories); pass --classify"),
    ],
)
def test_predict_bad_boxes_fail_in_one_line(cli_files, tmp_path, capsys, entry, message):
    import json

    weights, images = cli_files
    (tmp_path / "boxes.json").write_text(json.dumps([entry]))
    assert _predict(weights, images, tmp_path / "out", "--boxes", str(tmp_path / "boxes.json")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("refinemask predict: error:") and message in error


def test_predict_boxes_with_classify_takes_the_box_heads_class(cli_files, tmp_path):
    import json

    weights, images = cli_files
    entries = [{"image_id": 9, "category_id": 41, "bbox": [10, 10, 30, 30], "score": 0.7}]
    (tmp_path / "boxes.json").write_text(json.dumps(entries))
    assert _predict(weights, images, tmp_path / "out", "--boxes", str(tmp_path / "boxes.json"), "--classify", overlays=True) == 0
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["9.png"]  # images with boxes only
    assert row["detector_category_id"] == 41 and row["category_id"] in (1, 2, 3)
    assert row["score"] == 0.7 and row["bbox"] == [10, 10, 30, 30] and _decode(row["segmentation"]).shape == (64, 96)
