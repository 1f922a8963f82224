"""Export a trained model to ONNX, and run the exported file with onnxruntime.

What is in the graph and what is glue
-------------------------------------
:class:`DetectorGraph` (exported by :func:`export_onnx`) holds everything learned and
everything that depends on the data: backbone + FPN, anchors, RPN (top-k, NMS), RoI pooling,
box head, per-class NMS, the mask head and RefineMask's boundary-band assembly. Its input is one
normalised, resized, padded image (any size) and that image's size before padding. Its outputs
have D = ``detections_per_img`` rows whatever the image: the K detections first (best first),
then rows of zeros (score 0, label 0), so every output shape is fixed except for the image.

Two steps stay outside, in numpy (:mod:`~refinemask.export.glue`, a few lines to port to any
runtime): the resize before the graph (:func:`preprocess`) and the mask paste after it
(:func:`paste_masks_numpy`). :class:`OnnxPredictor` runs the file with that glue around it.

:func:`export_mask_head_onnx` exports the RefineMask head alone (RoI features, P2, RoIs, labels
-> assembled 112 x 112 logits, any number of RoIs): the part a runtime that already has a
Mask R-CNN can add.

:func:`export_boxes_onnx` exports the model for boxes given from elsewhere (:class:`BoxesGraph`:
image, boxes, labels -> one mask per box, any number of boxes), the graph of
``model(images, boxes=..., labels=...)``; :class:`OnnxBoxesPredictor` runs it.

The modules, in the order a file goes through them:

* :mod:`~refinemask.export.graphs`: the traceable modules (what goes into the file)
* :mod:`~refinemask.export.onnx`: writing the file and its metadata; describing a file
* :mod:`~refinemask.export.glue`: the numpy steps before and after the graph
* :mod:`~refinemask.export.runtime`: the predictors (onnxruntime, tuned; or OpenVINO)
* :mod:`~refinemask.export.quantize`: int8 copies (static with calibration, or dynamic)
* :mod:`~refinemask.export.check`: onnxruntime against PyTorch on the same images
* :mod:`~refinemask.export.timing`: onnxruntime's speed, for the benchmarks
"""
from refinemask.export.check import (
    ExportCheck,
    check_boxes_export,
    check_export,
    check_export_at_threshold,
    check_quantized,
    compare_detections,
    match_detections,
    threshold_keeping,
)
from refinemask.export.glue import paste_masks_numpy, preprocess, resize_bilinear
from refinemask.export.graphs import BoxesGraph, DetectorGraph, MaskHeadGraph
from refinemask.export.onnx import (
    DEFAULT_OPSET,
    describe_export,
    example_image,
    example_image_size,
    export_boxes_onnx,
    export_mask_head_onnx,
    export_onnx,
    model_example_image,
)
from refinemask.export.quantize import QUANTIZE_MODES, fp32_nodes, quantize_dynamic_int8, quantize_static_int8
from refinemask.export.runtime import OnnxBoxesPredictor, OnnxPredictor, available_cores, session_options
from refinemask.export.timing import OnnxTiming, onnx_inference_time

__all__ = [
    "DEFAULT_OPSET",
    "QUANTIZE_MODES",
    "BoxesGraph",
    "DetectorGraph",
    "ExportCheck",
    "MaskHeadGraph",
    "OnnxBoxesPredictor",
    "OnnxPredictor",
    "OnnxTiming",
    "check_boxes_export",
    "check_export",
    "check_export_at_threshold",
    "check_quantized",
    "compare_detections",
    "describe_export",
    "example_image",
    "example_image_size",
    "export_boxes_onnx",
    "export_mask_head_onnx",
    "export_onnx",
    "fp32_nodes",
    "available_cores",
    "session_options",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "match_detections",
    "model_example_image",
    "onnx_inference_time",
    "paste_masks_numpy",
    "preprocess",
    "resize_bilinear",
    "threshold_keeping",
]
