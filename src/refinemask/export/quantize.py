"""int8 copies of an exported detector, by onnxruntime's quantisation tools.

Two kinds (``refinemask export --quantize``):

* ``int8`` (static, :func:`quantize_static_int8`): the weights *and* the activations of the
  convolutions and fully connected layers in int8, the activations' ranges calibrated by running
  the fp32 graph on the user's images (``--calibration IMAGES_DIR``). The whole backbone, FPN,
  RPN trunk and most of the mask head then run int8 kernels (VNNI / AMX on recent x86).
* ``int8-dynamic`` (:func:`quantize_dynamic_int8`): the fully connected layers' weights in int8,
  their activations quantised on the fly per call; no calibration. Only the box head's two
  large FC layers qualify (dynamic int8 convolutions are slower than fp32 in onnxruntime), so it
  changes little but the file size; it is for when no images are at hand.

What stays fp32 (:func:`fp32_nodes`), and why:

* **RoIAlign, the boundary-band assembly, the paste, NMS, box decoding**: not in the list of
  quantised op types at all, so they read and write float: RoIAlign's bilinear sampling and the
  assembly's band masks and upsampling are where masks get their sub-pixel edges, and NMS /
  top-k compare scores that int8 would tie.
* **the last stage** of the RefineMask heads (the 112x112 one, ``stages.<last>``) and the final
  class logits: the finest stage draws the boundary band; int8 noise there moves edges by
  pixels of the 112 grid, which Boundary AP counts.
* **every layer that outputs logits or box deltas** (RPN and box classifier/regressor, mask and
  semantic logits): cheap 1x1 convs or small FCs whose outputs are compared against thresholds
  (scores) or become pixels (boxes).

Shapes: as :mod:`refinemask.export.runtime`.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from refinemask.errors import RefineMaskError

QUANTIZE_MODES = ("int8", "int8-dynamic")
# the op types whose weights and inputs are quantised; everything else stays float
QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")
# layers that write logits or box deltas (see the module docstring)
_OUTPUT_LAYERS = re.compile(r"logits|bbox_pred|cls_score|box_predictor|mask_predictor")
_STAGE = re.compile(r"/stages\.(\d+)/")


def fp32_nodes(model: Any) -> list[str]:
    """Names of the quantisable nodes of an exported graph (an ``onnx.ModelProto``) kept fp32.

    The last fusion stage (the highest ``stages.<k>`` index in the node names), the final
    instance logits (an Einsum or MatMul after the stages) and every logit / box-delta layer.
    """
    nodes = [n for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES or n.op_type == "Einsum"]
    stages = [int(m.group(1)) for n in nodes if (m := _STAGE.search(n.name))]
    last = f"/stages.{max(stages)}/" if stages else None
    keep = []
    for node in nodes:
        if _OUTPUT_LAYERS.search(node.name) or (last and last in node.name):
            keep.append(node.name)
        elif stages and node.op_type in ("MatMul", "Einsum") and "box_head" not in node.name:
            keep.append(node.name)  # the per-class selection of the final instance logits
    return keep


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _copy_metadata(source: Path, target: Path, quantization: str) -> None:
    """The quantisers write a new model; give it the fp32 file's metadata (config, categories),
    which :class:`~refinemask.export.runtime.OnnxPredictor` needs, and say what was done."""
    import onnx

    model = onnx.load(str(target))
    props = {**_metadata(source), "quantization": quantization}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))


class _CalibrationImages:
    """onnxruntime's CalibrationDataReader over images: each one preprocessed as the predictor
    does it (:func:`~refinemask.export.glue.preprocess`), so the ranges are those it will see."""

    def __init__(self, images: Sequence[Any], predictor: Any):
        self.images = list(images)
        self.predictor = predictor
        self._feeds: Iterator[dict] | None = None

    def _all(self) -> Iterator[dict]:
        from refinemask.data.images import as_rgb_array
        from refinemask.export.glue import preprocess

        p = self.predictor
        for image in self.images:
            batch, size = preprocess(as_rgb_array(image, **p.scaling), p.short_side, p.max_long_side, p.divisor)
            yield {"images": batch, "image_size": size}

    def get_next(self) -> dict | None:
        if self._feeds is None:
            self._feeds = self._all()
        return next(self._feeds, None)

    def rewind(self) -> None:
        self._feeds = None


def quantize_static_int8(fp32_path: str | Path, out: str | Path, calibration: Sequence[Any]) -> Path:
    """Write a statically quantised int8 copy of an exported detector, calibrated on images.

    QDQ format (quantise/dequantise pairs around the int8 ops, which onnxruntime fuses into int8
    kernels and OpenVINO reads too), per-channel int8 weights, uint8 activations with min/max
    ranges over ``calibration`` (paths, arrays or tensors: the user's images, 10-50 are enough).
    """
    from refinemask.export.runtime import OnnxPredictor

    fp32_path, out = Path(fp32_path), Path(out)
    if not calibration:
        raise RefineMaskError("--quantize int8 needs calibration images: --calibration IMAGES_DIR (10-50 of your images)")
    predictor = OnnxPredictor(fp32_path)  # checks the file (and onnxruntime) and gives the resize settings
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    keep = fp32_nodes(onnx.load(str(fp32_path), load_external_data=False))
    quantize_static(
        str(fp32_path), str(out), _CalibrationImages(calibration, predictor),
        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_exclude=keep,
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    _copy_metadata(fp32_path, out, "int8 static")
    return out


def quantize_dynamic_int8(fp32_path: str | Path, out: str | Path) -> Path:
    """Write a dynamically quantised copy: int8 weights of the fully connected layers, no calibration."""
    from refinemask.export.runtime import OnnxPredictor

    fp32_path, out = Path(fp32_path), Path(out)
    OnnxPredictor(fp32_path)  # a detector of ours (and onnxruntime installed), or a one-line error
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = fp32_nodes(onnx.load(str(fp32_path), load_external_data=False))
    quantize_dynamic(str(fp32_path), str(out), op_types_to_quantize=["Gemm", "MatMul"], nodes_to_exclude=keep,
                     weight_type=QuantType.QInt8)
    _copy_metadata(fp32_path, out, "int8 dynamic")
    return out
