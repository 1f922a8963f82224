"""Run the exported files with onnxruntime, numpy in and numpy out, no PyTorch model needed.

:class:`OnnxPredictor` runs a detector of :func:`~refinemask.export.onnx.export_onnx`;
:class:`OnnxBoxesPredictor` a given-boxes graph of
:func:`~refinemask.export.onnx.export_boxes_onnx`. Both read what they need (the model config,
the label mapping, the resize settings) from the file's metadata.

Shapes: D the fixed number of output rows; K <= D detections kept; N given boxes; M the side
of the mask prediction; H x W the input image.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refinemask.data.images import as_rgb_array, scaling_options
from refinemask.errors import RefineMaskError
from refinemask.export.glue import SIZE_DIVISOR, paste_masks_numpy, paste_windows_numpy, preprocess
from refinemask.export.graphs import BOXES_OUTPUTS, DETECTOR_OUTPUTS
from refinemask.export.onnx import ONNX_FORMAT

RUNTIMES = ("onnxruntime", "openvino")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count: in a
    container or under ``taskset`` onnxruntime's own default can count cores it cannot use)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def session_options(num_threads: int | None = None, tuned: bool = True) -> Any:
    """onnxruntime's SessionOptions for a detector graph, once per predictor.

    ``tuned`` (the default) sets, measured in docs/export.md ("Which runtime"):

    * all graph optimisations (``ORT_ENABLE_ALL``: constant folding, Conv+Mul+Add fusion of the
      frozen batch norms, Conv+ReLU fusion, memory-layout (NCHWc) transforms of the convs);
    * ``intra_op_num_threads`` = the cores this process may use (``num_threads`` to set it),
      ``inter_op_num_threads`` 1 with sequential execution: the graph is one chain of large ops,
      so parallelism goes inside the ops, and a second pool would only compete with the first;
    * no spinning of idle threads (``session.intra_op.allow_spinning=0``): between the many small
      ops of NMS and the RoI bookkeeping, spinning threads burn the cores that other processes
      (the data loading, a web server, a second model) need.

    ``tuned=False`` is onnxruntime's plain ``SessionOptions()`` (with ``num_threads`` if given),
    the baseline of the benchmark.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if tuned:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(num_threads) if num_threads else available_cores()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    return options


class OpenVinoSession:
    """An OpenVINO compiled model behind onnxruntime's ``session.run(names, feeds)``, so that the
    predictors' glue is the same for both runtimes.

    OpenVINO reads the ONNX file directly (no conversion step). ``precision`` is its CPU
    inference precision: "f32" by default, since on CPUs with AMX or AVX512-BF16 OpenVINO would
    otherwise run in bfloat16 and the masks would no longer be the fp32 model's.
    """

    def __init__(self, path: Path, num_threads: int | None = None, precision: str = "f32"):
        try:
            import openvino as ov
        except ImportError:
            raise RefineMaskError("runtime='openvino' needs OpenVINO: pip install 'refinemask[openvino]'") from None
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision,
                  "INFERENCE_NUM_THREADS": int(num_threads) if num_threads else available_cores()}
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError with long messages
            raise RefineMaskError(f"{path}: OpenVINO cannot load it ({str(err).splitlines()[0][:200]})") from None
        self.request = self.compiled.create_infer_request()  # reused: buffers allocated once
        self.outputs = {o.get_any_name(): o for o in self.compiled.outputs}

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        return [np.asarray(results[self.outputs[name]]) for name in names]

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU"]


def _read_metadata(path: Path) -> dict[str, str]:
    """The file's metadata_props (config, categories), read without its weights."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _open_exported_graph(runner: Any, path: str | Path, graph: str, not_ours: str, num_threads: int | None,
                         providers: Sequence[str], runtime: str = "onnxruntime", tuned: bool = True) -> None:
    """Open a file that ``refinemask export`` wrote and set on ``runner`` what both runners read
    from it: ``session``, ``config``, ``label_to_category``, ``category_names`` and the resize
    settings (``short_side``, ``max_long_side``, ``divisor``) and the >8-bit image ``scaling``.

    ``graph`` is the metadata's graph kind ("detector" or "boxes"); a file of another kind, or
    one that the runtime cannot load, is a one-line error (``not_ours`` says which runner wanted it).
    The session is built here, once: building one optimises the graph (seconds for a ResNet-50).
    """
    if runtime not in RUNTIMES:
        raise RefineMaskError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    path = Path(path)
    if not path.is_file():
        raise RefineMaskError(f"ONNX model not found: {path}")
    if runtime == "openvino":
        try:
            metadata = _read_metadata(path)
        except Exception:  # noqa: BLE001 - not an ONNX file at all
            raise RefineMaskError(f"{path}: not an ONNX file") from None
        if metadata.get("format") != ONNX_FORMAT or metadata.get("graph") != graph:
            raise RefineMaskError(f"{path}: {not_ours}")
        runner.session = OpenVinoSession(path, num_threads)
    else:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RefineMaskError("running an ONNX model needs onnxruntime: pip install 'refinemask[export]'") from None
        try:
            runner.session = ort.InferenceSession(str(path), session_options(num_threads, tuned), providers=list(providers))
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise RefineMaskError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0][:200]})") from None
        metadata = runner.session.get_modelmeta().custom_metadata_map
        if metadata.get("format") != ONNX_FORMAT or metadata.get("graph") != graph:
            raise RefineMaskError(f"{path}: {not_ours}")
    runner.runtime = runtime
    runner.quantization = metadata.get("quantization", "none")
    runner.config = json.loads(metadata["config"])
    runner.scaling = scaling_options(runner.config)  # >8-bit images as in training, as Predictor does
    runner.label_to_category = {int(k): int(v) for k, v in json.loads(metadata["label_to_category"]).items()}
    runner.category_names = json.loads(metadata["category_names"])
    runner.short_side = int(runner.config["min_size"][-1])
    runner.max_long_side = int(runner.config["max_size"])
    runner.divisor = int(metadata.get("size_divisor", SIZE_DIVISOR))


class OnnxPredictor:
    """Run an exported detector with onnxruntime; numpy in, numpy out, no PyTorch model needed.

    The glue around the graph (:func:`preprocess`, :func:`paste_masks_numpy`) is numpy only,
    so it ports to any runtime.

    Args:
        path: a file written by :func:`export_onnx` (``refinemask export``).
        score_thresh: keep detections scoring at least this (None: all that the graph returns,
            i.e. above the model's ``box_score_thresh``).
        mask_threshold: probability at which a mask pixel belongs to the object.
        num_threads: the runtime's threads (None: the cores this process may use).
        providers: onnxruntime execution providers, e.g. ``["CUDAExecutionProvider",
            "CPUExecutionProvider"]``.
        runtime: "onnxruntime" or "openvino" (Intel's runtime, which reads the same file:
            ``pip install 'refinemask[openvino]'``; fp32 on the CPU).
        tuned: onnxruntime's session settings of :func:`session_options` (False: its plain
            defaults, for comparison).

    Calling it with one image (path, PIL image, (H, W, 3) array or (3, H, W) tensor) returns a
    dict like :class:`~refinemask.engine.predict.Predictor`'s, with numpy arrays: ``boxes``
    float32 (K, 4) XYXY pixels, ``labels`` int64 (K,) in 1..C, ``scores`` (K,), ``masks`` bool
    (K, H, W). A list of images gives a list of dicts. ``predictor(image, masks="box")`` (or
    "rle") returns the masks box-local as ``Predictor`` does: each pasted over its own window,
    never K x H x W.
    """

    def __init__(
        self,
        path: str | Path,
        score_thresh: float | None = None,
        mask_threshold: float = 0.5,
        num_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        runtime: str = "onnxruntime",
        tuned: bool = True,
    ):
        _open_exported_graph(self, path, "detector", "not a detector exported by `refinemask export` (no refinemask metadata)",
                             num_threads, providers, runtime, tuned)
        self.score_thresh = score_thresh
        self.mask_threshold = mask_threshold

    def run_graph(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's raw outputs (D rows, resized-image pixels) for an (H, W, 3) float image."""
        batch, size = preprocess(image, self.short_side, self.max_long_side, self.divisor)
        values = self.session.run(list(DETECTOR_OUTPUTS), {"images": batch, "image_size": size})
        outputs = dict(zip(DETECTOR_OUTPUTS, values))
        outputs["image_size"] = size
        return outputs

    def predict_array(self, image: np.ndarray, masks: str = "image") -> dict[str, Any]:
        """One (H, W, 3) float32 image in [0, 1] -> the detections kept, masks pasted (see the class)."""
        height, width = image.shape[:2]
        out = self.run_graph(image)
        k = int(out["num_detections"])
        keep = np.arange(k)
        if self.score_thresh is not None:
            keep = keep[out["scores"][:k] >= self.score_thresh]
        h, w = (int(v) for v in out["image_size"])
        scale = np.asarray([width / w, height / h, width / w, height / h], dtype=np.float32)
        boxes = (out["boxes"][keep] * scale).astype(np.float32)
        return {
            "boxes": boxes,
            "labels": out["labels"][keep].astype(np.int64),
            "scores": out["scores"][keep].astype(np.float32),
            "masks": window_masks_numpy(out["masks"][keep, 0], boxes, height, width, self.mask_threshold, masks),
        }

    def __call__(self, images: Any, masks: str = "image") -> dict | list[dict]:
        from refinemask.engine.predict import MASK_FORMATS

        if masks not in MASK_FORMATS:
            raise RefineMaskError(f"masks={masks!r}: choose one of {', '.join(map(repr, MASK_FORMATS))}")
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        outputs = [self.predict_array(as_rgb_array(image, **self.scaling), masks) for image in batch]
        return outputs[0] if single else outputs


def window_masks_numpy(probs: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float, form: str):
    """(K, M, M) probabilities in their (K, 4) boxes -> binary masks in ``form`` ("image": bool
    (K, H, W); "box": MaskWindows; "rle": COCO RLEs), pasted one window at a time."""
    import torch

    from refinemask.modeling.box_masks import MaskWindows

    if form == "image":
        full = np.zeros((len(probs), height, width), dtype=bool)
        for i, top, left, window in paste_windows_numpy(probs, boxes, height, width):
            full[i, top : top + window.shape[0], left : left + window.shape[1]] = window >= threshold
        return full
    origins = [(0, 0)] * len(probs)
    crops = [torch.zeros((0, 0), dtype=torch.bool)] * len(probs)
    for i, top, left, window in paste_windows_numpy(probs, boxes, height, width):
        origins[i], crops[i] = (top, left), torch.from_numpy(window >= threshold)
    windows = MaskWindows((height, width), origins, crops)
    if form == "rle":
        from refinemask.evaluation.coco import encode_mask_windows

        return encode_mask_windows(windows)
    return windows


class OnnxBoxesPredictor:
    """Run a file of :func:`export_boxes_onnx` with onnxruntime: masks for given boxes, in numpy.

    ``predictor(image, boxes, labels)`` with boxes (N, 4) XYXY in the image's pixels and labels
    (N,) in 1..C returns ``boxes`` (as given), ``labels``, ``scores`` (the box head's probability
    of each label) and ``masks`` bool (N, H, W), as
    :class:`~refinemask.engine.predict.Predictor` does for given boxes.
    """

    def __init__(self, path: str | Path, mask_threshold: float = 0.5, num_threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",), runtime: str = "onnxruntime"):
        _open_exported_graph(self, path, "boxes", "not a given-boxes graph exported by `refinemask export --given-boxes`",
                             num_threads, providers, runtime)
        self.num_classes = int(self.config["num_classes"])
        self.mask_threshold = mask_threshold

    def __call__(self, image: Any, boxes: Any, labels: Any) -> dict[str, np.ndarray]:
        from refinemask.modeling.detector import check_given_boxes

        array = as_rgb_array(image, **self.scaling)
        height, width = array.shape[:2]
        given, given_labels = check_given_boxes(boxes, labels, (height, width), self.num_classes)
        if given_labels is None:
            raise RefineMaskError("the exported given-boxes graph needs labels (it does not classify boxes)")
        boxes_np = given.numpy()
        if len(boxes_np) == 0:  # the graph's reshapes cannot take zero boxes; nothing to run
            return {"boxes": boxes_np, "labels": given_labels.numpy(), "scores": np.zeros(0, np.float32),
                    "masks": np.zeros((0, height, width), dtype=bool)}
        batch, size = preprocess(array, self.short_side, self.max_long_side, self.divisor)
        h, w = (int(v) for v in size)
        # the model's transform scales boxes by new/old size (float32), as here
        scale = np.asarray([w / width, h / height, w / width, h / height], dtype=np.float32)
        masks, scores = self.session.run(list(BOXES_OUTPUTS), {
            "images": batch, "image_size": size,
            "boxes": (boxes_np * scale).astype(np.float32), "labels": given_labels.numpy().astype(np.int64),
        })
        clipped = np.clip(boxes_np, 0, np.asarray([width, height, width, height], dtype=np.float32))
        pasted = paste_masks_numpy(masks[:, 0], clipped, height, width)
        return {
            "boxes": boxes_np,
            "labels": given_labels.numpy(),
            "scores": scores.astype(np.float32),
            "masks": pasted >= self.mask_threshold,
        }
