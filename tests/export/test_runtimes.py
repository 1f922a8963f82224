"""The runtimes of an exported detector: onnxruntime's tuned session, OpenVINO, int8 copies."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from refinemask.cli import main
from refinemask.errors import RefineMaskError
from refinemask.export import (
    OnnxPredictor,
    available_cores,
    check_quantized,
    compare_detections,
    export_onnx,
    fp32_nodes,
    quantize_dynamic_int8,
    session_options,
)
from refinemask.model_files import save_weights
from tests.scratch import scratch_dir
from tests.tiny_models import confident_tiny_model, smooth_image


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with scratch_dir(tmp_path_factory, "runtimes") as root:
        yield export_onnx(confident_tiny_model("refinemask"), root / "refinemask.onnx")


def test_tuned_session_options_optimise_fully_and_use_the_cores_this_process_may_use():
    tuned = session_options()
    assert tuned.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert tuned.intra_op_num_threads == available_cores() and tuned.inter_op_num_threads == 1
    assert tuned.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert session_options(num_threads=3).intra_op_num_threads == 3
    plain = session_options(tuned=False)
    assert plain.intra_op_num_threads == 0  # onnxruntime's own choice: the baseline of the benchmark


def test_the_predictor_builds_its_session_once(exported, monkeypatch):
    predictor = OnnxPredictor(exported, num_threads=1)
    built = []
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: built.append(a))
    image = smooth_image(100, 130, seed=1)
    predictor(image), predictor(image)
    assert built == []


def test_openvino_runs_the_same_file_with_the_same_detections(exported):
    pytest.importorskip("openvino")
    image = smooth_image(120, 160, seed=2)
    reference = OnnxPredictor(exported, num_threads=1)
    openvino = OnnxPredictor(exported, num_threads=1, runtime="openvino")
    check = compare_detections(reference.predict_array, openvino.predict_array, [image])
    assert check.num_matched == check.num_detections > 0 and check.count_mismatches == 0
    assert check.max_box_difference < 1e-2 and check.min_mask_iou > 0.99
    assert openvino.category_names == reference.category_names


def test_an_unknown_runtime_is_a_clear_error(exported):
    with pytest.raises(RefineMaskError, match="runtime 'tensorrt' is not one of onnxruntime, openvino"):
        OnnxPredictor(exported, runtime="tensorrt")


def test_the_last_stage_and_the_logit_layers_stay_fp32_and_the_backbone_does_not(exported):
    graph = onnx.load(str(exported))
    kept = set(fp32_nodes(graph))
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    last_stage = [n for n in convs if "/stages.2/" in n]
    assert last_stage and set(last_stage) <= kept
    assert {n for n in convs if "logits" in n or "bbox_pred" in n} <= kept
    assert not any("/backbone/" in n for n in kept)
    assert not [n for n in convs if "/stages.0/" in n and n in kept]  # the earlier stages are quantised


def test_check_quantized_of_a_graph_with_itself_is_exact(exported):
    check = check_quantized(exported, exported, [smooth_image(100, 130, seed=3)])
    assert check.num_matched > 0 and check.mean_mask_iou == 1.0 and check.mean_box_difference == 0.0


def test_dynamic_int8_quantises_the_box_head_keeps_the_metadata_and_runs(exported, tmp_path):
    out = quantize_dynamic_int8(exported, tmp_path / "dynamic.onnx")
    graph = onnx.load(str(out))
    ops = {n.op_type for n in graph.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    predictor = OnnxPredictor(out, num_threads=1)
    assert predictor.quantization == "int8 dynamic"
    check = check_quantized(exported, out, [smooth_image(100, 130, seed=4)])
    assert check.num_matched > 0 and check.mean_mask_iou > 0.9


def _write_images(folder, count=2):
    folder.mkdir()
    for i in range(count):
        pixels = (smooth_image(96, 128, seed=10 + i) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_calibration_feeds_are_the_predictors_inputs(exported):
    from refinemask.export.glue import preprocess
    from refinemask.export.quantize import _CalibrationImages

    predictor = OnnxPredictor(exported, num_threads=1)
    images = [smooth_image(90, 120, seed=5), smooth_image(130, 100, seed=6)]
    reader = _CalibrationImages(images, predictor)
    for _ in range(2):  # rewinding gives the same feeds again
        feeds = [reader.get_next() for _ in range(3)]
        assert feeds[2] is None
        for image, feed in zip(images, feeds):
            batch, size = preprocess(image, predictor.short_side, predictor.max_long_side, predictor.divisor)
            assert np.array_equal(feed["images"], batch) and np.array_equal(feed["image_size"], size)
        reader.rewind()


@pytest.mark.slow  # a minute on a loaded 2-core machine: onnxruntime's quantiser; fast twin above
def test_export_command_writes_a_static_int8_copy_and_reports_its_agreement_with_fp32(tmp_path, capsys):
    weights = save_weights(confident_tiny_model("refinemask"), tmp_path / "model.safetensors")
    images = _write_images(tmp_path / "calibration")
    code = main(["export", "--weights", str(weights), "--quantize", "int8", "--calibration", str(images),
                 str(tmp_path / "model.onnx")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "calibrating int8 ranges on 2 image(s)" in out and "int8 vs fp32 on 2 image(s)" in out
    assert "mask IoU mean" in out and "box error mean" in out
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
    # the nodes kept fp32 read float weights, not dequantised int8 ones
    weights_float = {i.name for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for node in graph.graph.node:
        if node.op_type == "Conv" and "/stages.2/" in node.name:
            assert node.input[1] in weights_float, node.name
    assert OnnxPredictor(tmp_path / "model.onnx").quantization == "int8 static"
    assert OnnxPredictor(tmp_path / "model.fp32.onnx").quantization == "none"


@pytest.mark.parametrize("words, message", [
    (["--quantize", "int8"], "--quantize int8 needs --calibration IMAGES_DIR"),
    (["--calibration", "x.png"], "--calibration is for --quantize int8"),
    (["--quantize", "int8-dynamic", "--given-boxes"], "--quantize is for the detector's graph"),
])
def test_quantize_options_used_wrongly_are_one_line_errors(tmp_path, capsys, words, message):
    weights = save_weights(confident_tiny_model("refinemask"), tmp_path / "model.safetensors")
    code = main(["export", "--weights", str(weights), *words, str(tmp_path / "model.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_export_command_checks_the_file_in_openvino_when_asked(tmp_path, capsys):
    pytest.importorskip("openvino")
    weights = save_weights(confident_tiny_model("refinemask"), tmp_path / "model.safetensors")
    code = main(["export", "--weights", str(weights), "--runtime", "openvino", "--detections", "4", str(tmp_path / "model.onnx")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "openvino vs PyTorch on 1 image(s)" in out
