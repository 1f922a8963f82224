"""``refinemask eval``: score a saved COCO results file, or evaluate a model.

Scoring a results file needs no model::

    refinemask eval --annotations instances_val2017.json --predictions results.json \\
        --out metrics.json --iou-types bbox segm boundary --boundary-dilation 0.02 0.008

prints one table (AP in percent) and writes ``{"bbox": {...}, "segm": {...}, "boundary": {...},
"boundary@0.008": {...}}`` with values in [0, 1]. ``--lvis`` scores LVIS-style (adds
APr/APc/APf), ``--ap-star COCOFIED.json`` adds AP* (key "ap_star") and ``--cityscapes GT_DIR``
adds the official Cityscapes AP (key "cityscapes").

Evaluating a model: ``refinemask eval CONFIG --weights W [key=value ...]``; with ``--gt-boxes``
the model segments the ground-truth boxes and labels, so mask AP and Boundary AP measure the
masks apart from the boxes.
"""

from __future__ import annotations

import argparse

from refinemask.errors import RefineMaskError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="model config (YAML) to evaluate with --weights")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    parser.add_argument("--weights", help="checkpoint of the model to evaluate (with CONFIG)")
    parser.add_argument("--annotations", metavar="GT.json", help="COCO-format ground truth")
    parser.add_argument("--predictions", metavar="RESULTS.json", help="COCO results to score")
    parser.add_argument("--out", metavar="metrics.json", help="write the metrics (0-1) as JSON")
    parser.add_argument(
        "--iou-types",
        nargs="+",
        choices=("bbox", "segm", "boundary"),
        default=["bbox", "segm", "boundary"],
        help="what to score (default: bbox segm boundary)",
    )
    parser.add_argument(
        "--boundary-dilation",
        nargs="+",
        type=float,
        metavar="RATIO",
        help="Boundary AP band width(s) as a fraction of the image diagonal (default 0.02; "
        "add 0.008 for small images)",
    )
    parser.add_argument(
        "--lvis", action="store_true", help="LVIS-style scoring (federated labels, APr/APc/APf)"
    )
    parser.add_argument(
        "--ap-star",
        metavar="COCOFIED.json",
        help="also score AP*: the COCO results against LVIS v0.5 val cocofied annotations",
    )
    parser.add_argument(
        "--cityscapes",
        metavar="GT_DIR",
        help="also score the official Cityscapes AP against gtFine/<split> (the annotations' "
        "file names identify the images)",
    )
    parser.add_argument(
        "--gt-boxes",
        action="store_true",
        help="with CONFIG --weights: segment the ground-truth boxes with their labels instead of "
        "the model's detections (mask and Boundary AP of the masks alone; no box AP)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print the evaluators' own summaries"
    )


def run(args: argparse.Namespace) -> int:
    scoring_file = args.annotations is not None or args.predictions is not None
    if scoring_file and (args.config is not None or args.weights is not None):
        raise RefineMaskError(
            "give either CONFIG --weights W (evaluate a model) or --annotations GT.json "
            "--predictions RESULTS.json (score a results file), not both"
        )
    if scoring_file:
        if args.gt_boxes:
            raise RefineMaskError("--gt-boxes evaluates a model: give CONFIG --weights W, not a results file")
        return _score_results_file(args)
    if args.config is not None:
        return _evaluate_model(args)
    raise RefineMaskError(
        "nothing to evaluate: give --annotations GT.json --predictions RESULTS.json, "
        "or CONFIG --weights W"
    )


def _score_results_file(args: argparse.Namespace) -> int:
    from refinemask.evaluation.coco import evaluate_coco
    from refinemask.evaluation.lvis import evaluate_ap_star, evaluate_lvis
    from refinemask.evaluation.report import (
        format_cityscapes_table,
        format_metrics_table,
        save_metrics_json,
    )

    if args.annotations is None or args.predictions is None:
        raise RefineMaskError("scoring a results file needs both --annotations and --predictions")
    if args.boundary_dilation is not None and "boundary" not in args.iou_types:
        raise RefineMaskError("--boundary-dilation is for Boundary AP: add boundary to --iou-types")
    dilations = args.boundary_dilation or [0.02]
    iou_types = list(dict.fromkeys(args.iou_types))  # "segm segm" scores once

    evaluate = evaluate_lvis if args.lvis else evaluate_coco
    metrics = evaluate(
        args.annotations, args.predictions, iou_types, dilations, verbose=args.verbose
    )
    if args.ap_star is not None:
        ap_star = evaluate_ap_star(args.ap_star, args.predictions, verbose=args.verbose)
        metrics["ap_star"] = ap_star["segm"]
    if args.cityscapes is not None:
        from refinemask.evaluation.cityscapes import (
            cityscapes_predictions_from_coco,
            evaluate_cityscapes,
        )

        predictions = cityscapes_predictions_from_coco(args.predictions, args.annotations)
        metrics["cityscapes"] = evaluate_cityscapes(args.cityscapes, predictions)

    print(format_metrics_table({k: v for k, v in metrics.items() if k != "cityscapes"}))
    if "cityscapes" in metrics:
        print()
        print(format_cityscapes_table(metrics["cityscapes"]))
    if args.out is not None:
        save_metrics_json(metrics, args.out)
        print(f"metrics written to {args.out}")
    return 0


def _evaluate_model(args: argparse.Namespace) -> int:
    if args.weights is None:
        raise RefineMaskError(f"evaluating {args.config} needs --weights CHECKPOINT")
    # a file or a bundled config name; evaluate_from_config resolves both and names the nearest
    from refinemask.engine.evaluate import evaluate_from_config

    metrics = evaluate_from_config(args.config, args.weights, list(args.overrides), args.out, gt_boxes=args.gt_boxes)
    if isinstance(metrics, dict):
        from refinemask.evaluation.report import format_metrics_table

        print(format_metrics_table(metrics))
    return 0
