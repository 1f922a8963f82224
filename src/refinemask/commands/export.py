"""``refinemask export --weights W --format onnx OUT.onnx``: the detector as an ONNX file.

    refinemask export --weights model_final.safetensors model.onnx
    refinemask export --weights model_final.safetensors --mask-head-only head.onnx
    refinemask export --weights model_final.safetensors --given-boxes boxes.onnx
    refinemask export --weights model_final.safetensors --quantize int8 --calibration images/ model.onnx

The whole detector goes into the graph except the resize before it and the mask paste after
it, which :class:`refinemask.export.OnnxPredictor` does in numpy (docs/export.md).
After writing, the file is run in onnxruntime next to PyTorch on an example image (or on
``--verify IMAGE ...``) and the two are compared. When the model's score threshold leaves no
detection on the example image, a copy of the graph exported with a lower threshold (one that
keeps the example's 10 best detections) is compared instead, so that the check covers boxes
and masks. A check that compares no detection says so and exits with status 1.

``--quantize int8`` then writes OUT.onnx as an int8 copy calibrated on ``--calibration`` images
(the fp32 graph stays beside it as OUT.fp32.onnx) and reports how the int8 detections agree
with the fp32 ones on those images (or on ``--verify``'s): mask IoU and box error of the pairs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
the detector's graph (default):
  inputs   images (1, 3, H, W) float32: normalised, resized, padded to 32 (any H, W)
           image_size (2,) int64: [h, w] before padding
  outputs  boxes (D, 4), scores (D,), labels (D,), masks (D, 1, M, M) probabilities,
           num_detections (): D = detections_per_img rows, zero rows after the detections
  run it:  from refinemask.export import OnnxPredictor
           OnnxPredictor("model.onnx", score_thresh=0.5)("image.jpg")  # boxes, labels, scores, masks

--given-boxes (masks for boxes from another detector; any model):
  inputs   images, image_size as above; boxes (N, 4) float32 XYXY in resized-image pixels;
           labels (N,) int64 in 1..C
  outputs  masks (N, 1, M, M) probabilities, scores (N,) the box head's probability of each label
  run it:  from refinemask.export import OnnxBoxesPredictor
           OnnxBoxesPredictor("boxes.onnx")("image.jpg", boxes, labels)  # boxes in image pixels

--mask-head-only (RefineMask models):
  inputs   roi_features (N, 256, 14, 14), p2 (B, 256, h, w), rois (N, 5), labels (N,) in 1..C
  outputs  mask_logits (N, 1, 112, 112), the assembled stages
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    # optional to argparse only so that `--verify a.png b.png OUT.onnx` (which --verify swallows
    # whole) can be sorted out in run(); a missing OUT.onnx is still an error there
    parser.add_argument("out", metavar="OUT.onnx", type=Path, nargs="?", help="output file (.onnx is added when missing)")
    parser.add_argument(
        "--weights", required=True, metavar="W",
        help="model file: a .safetensors model (training, convert) or a checkpoint_*.pth",
    )
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="output format (onnx)")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, at least 16 (default 17)")
    parser.add_argument(
        "--mask-head-only", action="store_true",
        help="export only the RefineMask head + stage assembly, with a dynamic number of RoIs",
    )
    parser.add_argument(
        "--given-boxes", action="store_true",
        help="export the model for given boxes: image, boxes and labels in, one mask per box out",
    )
    parser.add_argument(
        "--detections", type=int, default=None, metavar="D",
        help="rows of the outputs, the most detections per image (default: the model's detections_per_img)",
    )
    parser.add_argument(
        "--score-thresh", type=float, default=None, metavar="S",
        help="score threshold built into the graph (default: the model's box_score_thresh)",
    )
    parser.add_argument(
        "--verify", nargs="+", metavar="IMAGE", default=None,
        help="compare onnxruntime with PyTorch on these images (default: one generated example, at a lower "
        "threshold when the model's leaves no detection on it)",
    )
    parser.add_argument("--no-verify", action="store_true", help="do not run the exported file")
    parser.add_argument(
        "--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
        help="the runtime the check runs the file in (openvino: pip install 'refinemask[openvino]')",
    )
    parser.add_argument(
        "--quantize", choices=("int8", "int8-dynamic"), default=None,
        help="write an int8 copy as OUT.onnx (fp32 kept as OUT.fp32.onnx): int8 = static, calibrated on "
        "--calibration images (the fast one); int8-dynamic = int8 fully connected weights, no calibration",
    )
    parser.add_argument(
        "--calibration", nargs="+", metavar="IMAGES", default=None,
        help="images or folders of images to calibrate --quantize int8 on (10-50 of yours)",
    )


def run(args: argparse.Namespace) -> int:
    from refinemask.export import DEFAULT_OPSET, describe_export, export_mask_head_onnx, export_onnx
    from refinemask.model_files import load_model
    from refinemask.errors import RefineMaskError

    if args.out is None:
        for option in ("verify", "calibration"):  # `--verify IMAGE ... OUT.onnx`: the last word is the output
            words = getattr(args, option)
            if args.out is None and words and words[-1].lower().endswith(".onnx"):
                args.out = Path(words.pop())
                if not words:
                    raise RefineMaskError(f"--{option} needs at least one image before OUT.onnx")
        if args.out is None:
            raise RefineMaskError("OUT.onnx is required: refinemask export --weights W OUT.onnx [--verify IMAGE ...]")
    if args.given_boxes and args.mask_head_only:
        raise RefineMaskError("--given-boxes and --mask-head-only are two different graphs: choose one")
    if (args.given_boxes or args.mask_head_only) and (args.detections is not None or args.score_thresh is not None):
        # neither graph detects anything: the boxes come in, every box gets a mask
        graph = "--given-boxes" if args.given_boxes else "--mask-head-only"
        raise RefineMaskError(f"--detections and --score-thresh shape the detector's graph; {graph} takes no threshold or cap")
    if args.quantize is not None and (args.given_boxes or args.mask_head_only):
        raise RefineMaskError("--quantize is for the detector's graph; export it without --given-boxes / --mask-head-only")
    if args.quantize == "int8" and not args.calibration:
        raise RefineMaskError("--quantize int8 needs --calibration IMAGES_DIR (10-50 of your images); "
                              "--quantize int8-dynamic needs none")
    if args.calibration and args.quantize != "int8":
        raise RefineMaskError("--calibration is for --quantize int8")
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    if opset < 16:
        raise RefineMaskError(f"--opset {opset}: RoIAlign with aligned=True needs opset 16 or newer")
    overrides = {}
    if args.detections is not None:
        if args.detections < 1:
            raise RefineMaskError(f"--detections must be at least 1, got {args.detections}")
        overrides["detections_per_img"] = args.detections
    if args.score_thresh is not None:
        if not 0.0 <= args.score_thresh < 1.0:
            raise RefineMaskError(f"--score-thresh must be in [0, 1), got {args.score_thresh}")
        overrides["box_score_thresh"] = args.score_thresh
    out = args.out if args.out.suffix else args.out.with_suffix(".onnx")
    model = load_model(args.weights, **overrides)

    if args.mask_head_only:
        export_mask_head_onnx(model, out, opset=opset)
        print(f"wrote {describe_export(out)}")
        return 0
    if args.given_boxes:
        return _export_given_boxes(args, model, out, opset)

    calibration = []
    if args.quantize is not None:
        from refinemask.data.image_files import collect_images

        calibration = collect_images(args.calibration) if args.calibration else []  # fails before the export
        fp32 = out.with_name(out.stem + ".fp32.onnx")
    else:
        fp32 = out
    export_onnx(model, fp32, opset=opset)
    print(f"wrote {describe_export(fp32)}")
    status = 0 if args.no_verify else _check_fp32(args, model, fp32, opset)
    if args.quantize is None:
        return status
    return max(status, _quantize(args, fp32, out, calibration))


def _quantize(args: argparse.Namespace, fp32: Path, out: Path, calibration: list[Path]) -> int:
    """Write the int8 copy and report its agreement with the fp32 graph (not with PyTorch: int8
    is an approximation, so the figures to read are the pairs' mean mask IoU and box error)."""
    from refinemask.export import check_quantized, describe_export, quantize_dynamic_int8, quantize_static_int8

    if args.quantize == "int8":
        print(f"calibrating int8 ranges on {len(calibration)} image(s)")
        quantize_static_int8(fp32, out, calibration)
    else:
        quantize_dynamic_int8(fp32, out)
    print(f"wrote {describe_export(out)} ({args.quantize}; fp32 graph kept as {fp32.name})")
    if args.no_verify:
        return 0
    images = list(args.verify) if args.verify else calibration
    if not images:
        print("int8 not compared with fp32: pass --verify IMAGE ... (int8-dynamic has no calibration images)")
        return 0
    check = check_quantized(fp32, out, images)
    if check.num_matched == 0:
        print(f"int8 not verified: fp32 found {check.num_detections} detection(s) on {check.num_images} image(s); "
              "pass --verify with images the model finds objects in")
        return 1
    print(
        f"int8 vs fp32 on {check.num_images} image(s): {check.num_matched} detection pairs (fp32 {check.num_detections}), "
        f"mask IoU mean {check.mean_mask_iou:.3f} (min {check.min_mask_iou:.3f}), box error mean "
        f"{check.mean_box_difference:.2g} px (max {check.max_box_difference:.2g}), "
        f"{check.count_mismatches} image(s) with another count"
    )
    if check.mean_mask_iou < 0.9:
        print("warning: the int8 masks differ much from fp32's; calibrate on more of your images, or use the fp32 file")
    return 0


def _check_fp32(args: argparse.Namespace, model, out: Path, opset: int) -> int:
    """The exported graph against PyTorch, in ``args.runtime``: 0 when they agree."""
    from refinemask.export import check_export, check_export_at_threshold, model_example_image, threshold_keeping

    if args.verify:
        check = check_export(model, out, list(args.verify), runtime=args.runtime)
    else:
        example = model_example_image(model)
        check = check_export(model, out, [example], runtime=args.runtime)
        if check.num_matched == 0:
            threshold = threshold_keeping(model, example)
            print(
                f"the example image has no detection scoring above the model's threshold "
                f"{model.roi_heads.score_thresh:g}; checking a copy of the graph exported with threshold "
                f"{threshold:.3g} instead"
            )
            check = check_export_at_threshold(model, [example], threshold, opset, runtime=args.runtime)
    if check.num_matched == 0:
        print(
            f"not verified: PyTorch and {args.runtime} found {check.num_detections} detection(s) to compare on "
            f"{check.num_images} image(s); pass --verify with images the model finds objects in"
        )
        return 1
    print(
        f"{args.runtime} vs PyTorch on {check.num_images} image(s): {check.num_matched} detections compared "
        f"(PyTorch {check.num_detections}), "
        f"{check.count_mismatches} image(s) with another count, boxes within {check.max_box_difference:.2g} px, "
        f"mask IoU >= {check.min_mask_iou:.4f}"
    )
    if check.count_mismatches or check.max_box_difference > 1e-2 or check.min_mask_iou < 0.99:
        print("warning: the exported graph does not match PyTorch closely; please report it with the model and image")
        return 1
    return 0


def _export_given_boxes(args: argparse.Namespace, model, out: Path, opset: int) -> int:
    from refinemask.export import check_boxes_export, describe_export, export_boxes_onnx, model_example_image

    export_boxes_onnx(model, out, opset=opset)
    print(f"wrote {describe_export(out)}")
    if args.no_verify:
        return 0
    images = list(args.verify) if args.verify else [model_example_image(model)]
    min_iou, score_diff = check_boxes_export(model, out, images)
    print(f"onnxruntime vs PyTorch on {len(images)} image(s), 3 boxes each: mask IoU >= {min_iou:.4f}, scores within {score_diff:.2g}")
    if min_iou < 0.99 or score_diff > 1e-3:
        print("warning: the exported graph does not match PyTorch closely; please report it with the model and image")
        return 1
    return 0
