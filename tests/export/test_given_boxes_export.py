"""The ONNX graph for given boxes (``refinemask export --given-boxes``) against PyTorch's
``model(images, boxes=, labels=)``."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from refinemask.cli import main  # noqa: E402
from refinemask.export import OnnxBoxesPredictor, OnnxPredictor, export_boxes_onnx  # noqa: E402
from refinemask.model_files import save_weights  # noqa: E402
from refinemask.engine.predict import Predictor  # noqa: E402
from refinemask.errors import RefineMaskError  # noqa: E402
from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image  # noqa: E402
from tests.tolerances import KERNEL_ATOL  # noqa: E402
from tests.scratch import scratch_dir


@pytest.fixture(scope="module")
def refinemask_export(tmp_path_factory):
    """The confident tiny RefineMask model and its given-boxes graph, written by the command."""
    with scratch_dir(tmp_path_factory, "given_boxes_export") as root:
        model = confident_tiny_model("refinemask")
        weights = save_weights(model, root / "model.safetensors", model.label_to_category, model.category_names)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["export", "--weights", str(weights), "--given-boxes", str(root / "boxes.onnx")]) == 0
        assert "mask IoU >= " in printed.getvalue()  # the command compared it with PyTorch (exit 0: IoU >= 0.99)
        yield model, root / "boxes.onnx"


def _assert_same_masks(model, path, image, boxes, labels):
    with torch.no_grad():
        ours = model([as_tensor(image)], boxes=[torch.as_tensor(boxes)], labels=[torch.as_tensor(labels)])[0]
    theirs = OnnxBoxesPredictor(path, num_threads=1)(image, boxes, labels)
    assert theirs["masks"].shape == (len(boxes), *image.shape[:2])
    np.testing.assert_allclose(theirs["scores"], ours["scores"].numpy(), atol=KERNEL_ATOL)
    probs = ours["masks"][:, 0].numpy()
    # the masks of another runtime: binary equal away from the threshold (a pixel at it may flip)
    away = np.abs(probs - 0.5) > 1e-3
    assert ((probs >= 0.5) == theirs["masks"])[away].all()
    assert theirs["masks"].any(axis=(1, 2)).all()
    return theirs


def test_given_boxes_graph_matches_pytorch_with_any_number_of_boxes(refinemask_export):
    model, path = refinemask_export
    for seed, (h, w), n in ((1, (100, 150), 1), (2, (200, 120), 7)):
        image = smooth_image(h, w, seed)
        rng = np.random.default_rng(seed)
        corners = rng.uniform(0, 0.6, (n, 2)) * [w, h]
        boxes = np.concatenate([corners, corners + rng.uniform(10, 60, (n, 2))], 1).astype(np.float32)
        boxes[0] = [-10, 5, 40, h + 20]  # partly outside the image: clipped in both
        labels = rng.integers(1, 4, n)
        theirs = _assert_same_masks(model, path, image, boxes, labels)
        assert np.array_equal(theirs["boxes"], boxes) and np.array_equal(theirs["labels"], labels)


def test_given_boxes_graph_of_the_maskrcnn_baseline_matches_pytorch(tmp_path):
    model = confident_tiny_model("maskrcnn")
    path = export_boxes_onnx(model, tmp_path / "boxes.onnx")
    image = smooth_image(150, 100, seed=4)
    boxes = Predictor(model, score_thresh=0.0)(image)["boxes"].numpy()  # its own detections
    _assert_same_masks(model, path, image, boxes, np.array([1, 2, 3, 1, 2])[: len(boxes)])


def test_given_boxes_predictor_edge_cases(refinemask_export):
    _, path = refinemask_export
    predictor = OnnxBoxesPredictor(path, num_threads=1)
    image = smooth_image(64, 96, seed=1)
    empty = predictor(image, np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    assert empty["masks"].shape == (0, 64, 96)
    with pytest.raises(RefineMaskError, match="lies outside the 96x64 image"):
        predictor(image, [[100, 0, 120, 10]], [1])
    with pytest.raises(RefineMaskError, match="needs labels"):
        predictor(image, [[1, 1, 20, 20]], None)
    with pytest.raises(RefineMaskError, match="not a detector exported"):
        OnnxPredictor(path)  # the detector's runner refuses the given-boxes graph


def test_given_boxes_runner_says_in_one_line_that_a_corrupt_file_cannot_load(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(RefineMaskError, match="onnxruntime cannot load it"):
        OnnxBoxesPredictor(broken)


def test_given_boxes_and_mask_head_only_are_refused_together(tmp_path, capsys):
    assert main(["export", "--weights", str(tmp_path / "w.safetensors"), "--given-boxes", "--mask-head-only", str(tmp_path / "x.onnx")]) == 2
    assert "choose one" in capsys.readouterr().err


@pytest.mark.parametrize("words, message", [
    (["--given-boxes", "--score-thresh", "0.3", "x.onnx"], "--given-boxes takes no threshold or cap"),
    (["--mask-head-only", "--detections", "10", "x.onnx"], "--mask-head-only takes no threshold or cap"),
    (["--verify", "a.png"], "OUT.onnx is required"),
    (["--verify", "x.onnx"], "--verify needs at least one image before OUT.onnx"),
])
def test_export_arguments_that_would_be_ignored_or_misread_are_one_line_errors(tmp_path, capsys, words, message):
    # refused before the weights are read (there are none here)
    assert main(["export", "--weights", str(tmp_path / "w.safetensors"), *words]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
