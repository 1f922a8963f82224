"""ONNX export: the exported detector and head run in onnxruntime and agree with PyTorch."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from refinemask import build_model
from refinemask.cli import main
from refinemask.export import (
    OnnxPredictor,
    check_export,
    example_image,
    example_image_size,
    model_example_image,
    export_mask_head_onnx,
    export_onnx,
    onnx_inference_time,
    paste_masks_numpy,
    preprocess,
)
from refinemask.model_files import save_weights
from refinemask.engine.predict import Predictor
from refinemask.errors import RefineMaskError
from refinemask.modeling.ops import paste_masks
from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image
from tests.tolerances import KERNEL_ATOL, assert_same_binary_masks
from tests.scratch import scratch_dir

# other sizes and aspect ratios than the 128 x 171 example the export traces with
TEST_SIZES = [(120, 160), (150, 100), (90, 200)]

# the settings `refinemask convert` gives official models: mmdetection's RPN ranking (a stable
# sort, exported as TopK) and no small-box filters
CONVERTED_SETTINGS = {"rpn_rank_by_sigmoid": True, "rpn_min_box_size": 0.0, "box_min_size": 0.0}


@pytest.fixture(scope="module")
def refinemask_model():
    return confident_tiny_model("refinemask", **CONVERTED_SETTINGS)


@pytest.fixture(scope="module")
def exported(refinemask_model, tmp_path_factory):
    with scratch_dir(tmp_path_factory, "onnx") as root:
        yield export_onnx(refinemask_model, root / "refinemask.onnx")


@pytest.fixture(scope="module")
def onnx_predictor(exported):
    return OnnxPredictor(exported, num_threads=1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def assert_same_detections(ours: dict, theirs: dict) -> int:
    """PyTorch's (tensors) and onnxruntime's (arrays) detections agree; returns their number."""
    boxes, labels, masks = ours["boxes"].numpy(), ours["labels"].numpy(), ours["masks"].numpy()
    assert len(theirs["boxes"]) == len(boxes)
    unmatched = list(range(len(theirs["boxes"])))
    for i in range(len(boxes)):
        # the onnxruntime detection of the same class with the closest box
        candidates = [j for j in unmatched if theirs["labels"][j] == labels[i]]
        assert candidates, f"detection {i} (label {labels[i]}) has no counterpart"
        j = min(candidates, key=lambda j: np.abs(theirs["boxes"][j] - boxes[i]).max())
        unmatched.remove(j)
        assert np.abs(theirs["boxes"][j] - boxes[i]).max() <= 1e-3
        assert abs(float(theirs["scores"][j]) - float(ours["scores"][i])) <= 1e-4
        assert masks[i].any()
        assert mask_iou(theirs["masks"][j], masks[i]) >= 0.99
    return len(boxes)


def test_exported_detector_matches_pytorch_on_images_of_other_sizes(refinemask_model, onnx_predictor):
    torch_predictor = Predictor(refinemask_model)
    compared = 0
    for seed, (h, w) in enumerate(TEST_SIZES):
        image = smooth_image(h, w, seed)
        theirs = onnx_predictor(image)
        assert theirs["masks"].shape[1:] == (h, w)
        compared += assert_same_detections(torch_predictor(as_tensor(image)), theirs)
    assert compared >= 10


def test_exported_maskrcnn_baseline_matches_pytorch(tmp_path):
    model = confident_tiny_model("maskrcnn")
    path = export_onnx(model, tmp_path / "maskrcnn.onnx")
    image = smooth_image(150, 100, seed=7)
    ours = Predictor(model)(as_tensor(image))
    assert assert_same_detections(ours, OnnxPredictor(path, num_threads=1)(image)) > 0


def test_an_efficientnet_export_traced_on_a_square_image_matches_pytorch_on_other_shapes(tmp_path):
    # its TensorFlow 'SAME' padding is computed from the input size; a trace once froze part
    # of that computation and padded every input up to the traced example's size
    model = confident_tiny_model("maskrcnn", backbone="efficientnet_lite0", backbone_weights=None, max_size=128)
    path = export_onnx(model, tmp_path / "lite0.onnx", example=smooth_image(128, 128, seed=0))
    check = check_export(model, path, [smooth_image(96, 128, seed=1), smooth_image(128, 80, seed=2)])
    assert check.num_matched == check.num_detections > 0 and check.count_mismatches == 0
    assert check.max_box_difference <= 1e-3 and check.min_mask_iou >= 0.99


def test_exported_faster_better_detector_matches_pytorch(tmp_path):
    model = confident_tiny_model("simple_refinemask", **CONVERTED_SETTINGS)
    predictor = OnnxPredictor(export_onnx(model, tmp_path / "faster_better.onnx"), num_threads=1)
    compared = 0
    for seed, (h, w) in enumerate(TEST_SIZES[:2]):
        image = smooth_image(h, w, seed)
        compared += assert_same_detections(Predictor(model)(as_tensor(image)), predictor(image))
    assert compared >= 5


def test_faster_better_mask_head_exports_with_rois_past_the_map_border(tmp_path):
    # zero padding of the point sampling (SimpleRoIAlign) is exercised by RoIs crossing the border
    torch.manual_seed(0)
    model = build_model(num_classes=3, backbone="resnet18", mask_head="simple_refinemask").eval()
    path = export_mask_head_onnx(model, tmp_path / "head.onnx", num_rois=3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from refinemask.export import MaskHeadGraph

    graph = MaskHeadGraph(model.roi_heads.mask_head).eval()
    generator = torch.Generator().manual_seed(1)
    for n, (h, w) in [(5, (32, 48)), (0, (32, 32))]:
        feats = 0.05 * torch.randn(n, 256, 14, 14, generator=generator)
        p2 = 0.05 * torch.randn(1, 256, h, w, generator=generator)
        corners = torch.rand(n, 2, generator=generator) * 160 - 20
        rois = torch.cat([torch.zeros(n, 1), corners, corners + 8 + 50 * torch.rand(n, 2, generator=generator)], 1)
        labels = torch.randint(1, 4, (n,), generator=generator)
        with torch.no_grad():
            expected = graph(feats, p2, rois, labels).numpy()
        (got,) = session.run(None, {"roi_features": feats.numpy(), "p2": p2.numpy(), "rois": rois.numpy(), "labels": labels.numpy()})
        assert got.shape == (n, 1, 112, 112)
        if n:
            # logits of up to about 45 here: 1e-4 is float32 agreement at that scale
            assert np.abs(got - expected).max() <= 1e-4


def test_an_export_traced_on_an_image_without_detections_segments_other_images(tmp_path):
    # at this threshold a blank image has no detection and the test images have one to five
    model = confident_tiny_model("refinemask", box_score_thresh=0.685)
    blank = np.zeros((128, 171, 3), dtype=np.float32)
    assert len(Predictor(model)(as_tensor(blank))["scores"]) == 0
    predictor = OnnxPredictor(export_onnx(model, tmp_path / "model.onnx", example=blank), num_threads=1)
    images = [smooth_image(120, 160, seed=1), smooth_image(150, 100, seed=2), smooth_image(120, 160, seed=3)]
    compared = sum(assert_same_detections(Predictor(model)(as_tensor(image)), predictor(image)) for image in images)
    assert compared > 0
    assert int(predictor.run_graph(blank)["num_detections"]) == 0


def test_graph_outputs_have_detections_per_img_rows_padded_with_zero_rows(onnx_predictor, refinemask_model):
    out = onnx_predictor.run_graph(smooth_image(120, 160, seed=0))
    rows = refinemask_model.config.detections_per_img
    assert out["boxes"].shape == (rows, 4)
    assert out["masks"].shape == (rows, 1, 112, 112)
    k = int(out["num_detections"])
    assert 0 < k <= rows
    assert (out["scores"][:k] > 0).all() and (out["labels"][:k] >= 1).all()
    assert not out["scores"][k:].any() and not out["labels"][k:].any() and not out["masks"][k:].any()


def test_a_score_threshold_keeps_the_detections_scoring_at_least_that(exported, onnx_predictor):
    image = smooth_image(120, 160, seed=0)
    everything = onnx_predictor(image)
    cut = float(np.median(everything["scores"]))
    kept = OnnxPredictor(exported, score_thresh=cut, num_threads=1)(image)
    assert len(kept["scores"]) == int((everything["scores"] >= cut).sum()) < len(everything["scores"])
    assert (kept["scores"] >= cut).all()


def test_onnx_masks_as_windows_and_rle_equal_the_image_masks(onnx_predictor):
    from refinemask.evaluation.coco import encode_masks
    from refinemask.modeling.box_masks import MaskWindows

    image = smooth_image(120, 160, seed=1)
    full, windows, rles = (onnx_predictor(image, masks=form) for form in ("image", "box", "rle"))
    assert len(full["masks"]) > 0 and isinstance(windows["masks"], MaskWindows)
    assert np.array_equal(windows["masks"].to_image().numpy(), full["masks"])
    assert rles["masks"] == encode_masks(full["masks"].view(np.uint8))


def test_predictor_reads_class_names_and_category_ids_from_the_file(onnx_predictor):
    assert onnx_predictor.category_names == ["cat", "dog", "bird"]
    assert onnx_predictor.label_to_category == {1: 1, 2: 2, 3: 3}


def test_runners_scale_16_bit_images_as_the_model_was_trained_to(tmp_path):
    model = confident_tiny_model("maskrcnn", high_bit_scaling="full")
    onnx_predictor = OnnxPredictor(export_onnx(model, tmp_path / "full.onnx"), num_threads=1)
    assert onnx_predictor.scaling == {"scaling": "full", "percentiles": (1.0, 99.8)}
    faint = Image.fromarray(np.round(smooth_image(120, 160, seed=3)[..., 0] * 4000).astype(np.uint16))
    assert assert_same_detections(Predictor(model)(faint), onnx_predictor(faint)) > 0


def test_mask_head_exports_with_a_dynamic_number_of_rois(tmp_path):
    # the randomly initialised head as built: its logits are about +-20 here, as a trained
    # head's are, where float32 agreement within 1e-4 is meaningful
    torch.manual_seed(0)
    model = build_model(num_classes=3, backbone="resnet18", mask_head="refinemask").eval()
    path = export_mask_head_onnx(model, tmp_path / "head.onnx", num_rois=3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    head = model.roi_heads.mask_head
    from refinemask.export import MaskHeadGraph

    graph = MaskHeadGraph(head).eval()
    generator = torch.Generator().manual_seed(1)
    for n, (h, w) in [(1, (32, 48)), (7, (40, 30)), (0, (32, 32))]:
        # features of the scale of a real FPN (logits of about +-20, as a trained head gives)
        feats = 0.05 * torch.randn(n, 256, 14, 14, generator=generator)
        p2 = 0.05 * torch.randn(1, 256, h, w, generator=generator)
        corners = torch.rand(n, 2, generator=generator) * 60
        rois = torch.cat([torch.zeros(n, 1), corners, corners + 8 + 50 * torch.rand(n, 2, generator=generator)], 1)
        labels = torch.randint(1, 4, (n,), generator=generator)
        with torch.no_grad():
            expected = graph(feats, p2, rois, labels).numpy()
        (got,) = session.run(None, {"roi_features": feats.numpy(), "p2": p2.numpy(), "rois": rois.numpy(), "labels": labels.numpy()})
        assert got.shape == (n, 1, 112, 112)
        if n:
            assert np.abs(got - expected).max() <= 1e-4


def test_mask_head_graph_is_the_models_assembled_prediction(refinemask_model):
    from refinemask.export import MaskHeadGraph
    from refinemask.modeling.ops import boxes_to_rois

    model = refinemask_model
    image = as_tensor(smooth_image(120, 160, seed=0))
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        boxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 5.0, 120.0, 60.0]])]
        labels = [torch.tensor([1, 3])]
        expected = model.roi_heads.predict_masks(features, boxes, labels)[0]
        rois = boxes_to_rois(boxes)
        pooled = model.roi_heads.mask_roi_pool.pool_rois(features, rois)
        got = MaskHeadGraph(model.roi_heads.mask_head)(pooled, features["0"], rois, labels[0]).sigmoid()
    # the same formula through the traced graph's ops: other kernels, so a kernel tolerance
    assert (got - expected).abs().max() < KERNEL_ATOL
    assert_same_binary_masks(got, expected)


def test_numpy_preprocess_matches_the_model_transform(refinemask_model):
    image = smooth_image(150, 100, seed=3)
    batch, size = preprocess(image, 128, 192)
    with torch.no_grad():
        images, _ = refinemask_model.transform([as_tensor(image)])
    assert tuple(size) == images.image_sizes[0]
    assert batch.shape == tuple(images.tensors.shape)
    np.testing.assert_allclose(batch, images.tensors.numpy(), atol=1e-4)


def test_numpy_paste_matches_paste_masks_also_for_boxes_past_the_border():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 1, 28, 28, generator=generator)
    boxes = torch.tensor([[5.0, 6.0, 40.5, 30.2], [-10.0, -4.0, 20.0, 25.0], [50.0, 30.0, 90.0, 70.0], [0.3, 0.3, 2.1, 1.2]])
    expected = paste_masks(masks, boxes, 48, 64)[:, 0].numpy()
    got = paste_masks_numpy(masks[:, 0].numpy(), boxes.numpy(), 48, 64)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got >= 0.5, expected >= 0.5)
    np.testing.assert_array_equal(got == 0, expected == 0)  # the same windows


def test_numpy_paste_equals_a_full_image_numpy_paste():
    """Windowed as paste_masks is; the full-image computation is the reference (same arithmetic)."""
    from refinemask.export.glue import _paste_taps

    rng = np.random.default_rng(1)
    h, w = 60, 80
    for size in (28, 112):
        masks = rng.random((12, size, size), dtype=np.float32)
        xy = rng.random((12, 2), dtype=np.float32) * np.array([w, h], dtype=np.float32) * 1.3 - 10
        boxes = np.concatenate([xy, xy + rng.random((12, 2), dtype=np.float32) * 90 + 0.3], axis=1)
        boxes[0] = [5.0, 5.0, 77.0, 33.0]  # 2.6 px wide cells at 28: spill past the box
        padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
        x0, fx = _paste_taps(boxes[:, 0], boxes[:, 2], w, size)
        y0, fy = _paste_taps(boxes[:, 1], boxes[:, 3], h, size)
        rows = (np.take_along_axis(padded, x0[:, None, :], axis=2) * (1 - fx)[:, None, :]
                + np.take_along_axis(padded, (x0 + 1)[:, None, :], axis=2) * fx[:, None, :])
        full = (np.take_along_axis(rows, y0[:, :, None], axis=1) * (1 - fy)[:, :, None]
                + np.take_along_axis(rows, (y0 + 1)[:, :, None], axis=1) * fy[:, :, None])
        got = paste_masks_numpy(masks, boxes, h, w)
        np.testing.assert_allclose(got, full, atol=1e-6)  # the same per-pixel arithmetic
        np.testing.assert_array_equal(got >= 0.5, full >= 0.5)
        np.testing.assert_array_equal(got == 0, full == 0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_rpn_sigmoid_ranking_exports_with_the_stable_tie_order(tmp_path):
    """Saturated scores tie (sigmoid = 1.0 in float32); the export must break ties by anchor order."""
    from torchvision.models.detection.rpn import RPNHead

    from refinemask.modeling.anchors import ExactAnchorGenerator
    from refinemask.modeling.rpn import ProposalNetwork

    rpn = ProposalNetwork(
        ExactAnchorGenerator(), RPNHead(8, 3), 0.7, 0.3, 256, 0.5,
        {"training": 6, "testing": 6}, {"training": 6, "testing": 6}, 0.7, rank_by_sigmoid=True,
    ).eval()

    class TopCandidates(torch.nn.Module):
        def forward(self, objectness):
            return rpn._get_top_n_idx(objectness, [objectness.shape[1] - 4, 4])

    # two levels: eight logits then four, with ties at sigmoid = 1.0 (20, 30, 25, 40, 50, 45)
    objectness = torch.tensor([[20.0, 30.0, 1.0, 25.0, 40.0, 31.0, 2.0, 50.0, 3.0, 17.0, 45.0, 0.5]])
    expected = rpn._get_top_n_idx(objectness, [8, 4])
    path = tmp_path / "topk.onnx"
    with torch.no_grad():
        torch.onnx.export(TopCandidates(), (objectness,), str(path), dynamo=False, opset_version=17,
                          input_names=["objectness"], dynamic_axes={"objectness": {1: "anchors"}})
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"objectness": objectness.numpy()})
    assert got.tolist() == expected.tolist()


def test_export_command_writes_a_model_that_onnxruntime_runs(tmp_path, capsys):
    weights = save_weights(confident_tiny_model("refinemask"), tmp_path / "model.safetensors", category_names=["a", "b", "c"])
    code = main(["export", "--weights", str(weights), "--format", "onnx", "--detections", "4", str(tmp_path / "model")])
    out = capsys.readouterr().out
    assert code == 0
    assert "boxes (4, 4)" in out and "onnxruntime vs PyTorch on 1 image(s)" in out
    predictor = OnnxPredictor(tmp_path / "model.onnx", num_threads=1)
    result = predictor(smooth_image(100, 130, seed=5))
    assert 0 < len(result["boxes"]) <= 4 and predictor.category_names == ["a", "b", "c"]


def _threshold_above_every_detection_of_the_example(model) -> float:
    """A box score threshold at which ``model`` finds nothing on the command's example image."""
    scores = Predictor(model)(as_tensor(model_example_image(model)))["scores"]
    threshold = round(float(scores.max()) + 0.01, 3)
    assert threshold < 1.0
    return threshold


def test_export_command_checks_detections_when_the_example_image_has_none_above_the_threshold(tmp_path, capsys):
    model = confident_tiny_model("refinemask")
    threshold = _threshold_above_every_detection_of_the_example(model)
    weights = save_weights(model, tmp_path / "model.safetensors")
    code = main(["export", "--weights", str(weights), "--score-thresh", str(threshold), str(tmp_path / "model.onnx")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"no detection scoring above the model's threshold {threshold:g}" in out
    # the tiny model keeps detections_per_img = 5 detections, fewer than the 10 asked for
    assert "on 1 image(s): 5 detections compared (PyTorch 5)" in out
    assert "not verified" not in out


def test_export_command_says_a_check_over_no_detection_verified_nothing(tmp_path, capsys):
    model = confident_tiny_model("refinemask")
    threshold = _threshold_above_every_detection_of_the_example(model)
    weights = save_weights(model, tmp_path / "model.safetensors")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((128, 171, 3), dtype=np.uint8)).save(blank)
    assert len(Predictor(model, score_thresh=threshold)(str(blank))["scores"]) == 0
    # OUT.onnx last, after --verify's images: the command takes it as the output, not as an image
    code = main(["export", "--weights", str(weights), "--score-thresh", str(threshold),
                 "--verify", str(blank), str(tmp_path / "model.onnx")])
    out = capsys.readouterr().out
    assert code == 1
    assert "not verified: PyTorch and onnxruntime found 0 detection(s) to compare on 1 image(s)" in out
    assert "mask IoU" not in out


def test_the_predict_command_takes_a_faster_better_model(tmp_path):
    import json

    model = confident_tiny_model("simple_refinemask")
    weights = save_weights(model, tmp_path / "fb.safetensors", category_names=["a", "b", "c"])
    image = smooth_image(100, 130, seed=5)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(tmp_path / "image.png")
    assert main(["predict", "--weights", str(weights), str(tmp_path / "image.png"), "--out", str(tmp_path / "pred")]) == 0
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    expected = Predictor(weights)(str(tmp_path / "image.png"))
    assert len(results) == len(expected["scores"]) > 0
    assert all(r["category_id"] in (1, 2, 3) and r["segmentation"]["counts"] for r in results)


def test_export_command_refuses_the_head_only_export_of_a_maskrcnn_model(tmp_path, capsys):
    weights = save_weights(confident_tiny_model("maskrcnn"), tmp_path / "maskrcnn.safetensors")
    code = main(["export", "--weights", str(weights), "--mask-head-only", str(tmp_path / "head.onnx")])
    assert code == 2
    assert "needs a RefineMask model" in capsys.readouterr().err
    assert not (tmp_path / "head.onnx").exists()


def test_onnx_predictor_refuses_a_file_that_is_not_an_exported_detector(refinemask_model, tmp_path):
    head = export_mask_head_onnx(refinemask_model, tmp_path / "head.onnx")
    with pytest.raises(RefineMaskError, match="not a detector exported"):
        OnnxPredictor(head)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(RefineMaskError, match="onnxruntime cannot load it"):
        OnnxPredictor(tmp_path / "junk.onnx")


def test_onnx_inference_time_measures_the_whole_and_the_graph(onnx_predictor):
    timing = onnx_inference_time(onnx_predictor, [smooth_image(120, 160, seed=0)], warmup=0, repeats=1)
    assert 0 < timing.graph_seconds_per_image and 0 < timing.seconds_per_image
    assert timing.num_images == 1 and timing.providers == ["CPUExecutionProvider"]


def test_the_example_image_size_keeps_within_max_size():
    # 4:3 of a 96 short side is 128; a max_size of 120 must clamp it, or the model's resize
    # would shrink the example and the check would run at another size than the trace
    assert example_image_size(SimpleNamespace(min_size=(96,), max_size=120)) == (96, 120)
    assert example_image_size(SimpleNamespace(min_size=(64, 96), max_size=1333)) == (96, 128)
