"""Evaluation: box, mask and Boundary AP (COCO), LVIS AP and AP*, Cityscapes AP.

All metrics are fractions in [0, 1] (not percent); NaN marks a metric that is undefined on the
given ground truth. Tables print them in percent.

* :func:`predictions_to_coco_results`: torchvision-style outputs -> COCO results (RLE masks).
* :func:`evaluate_coco`: bbox / segm / boundary AP with faster-coco-eval.
* :func:`evaluate_lvis`, :func:`evaluate_ap_star`: LVIS-style (federated) scoring.
* :func:`evaluate_cityscapes`: the official cityscapesScripts instance AP.
* :func:`format_metrics_table`, :func:`save_metrics_json`: report.
"""

from refinemask.evaluation.cityscapes import (
    cityscapes_label_ids,
    cityscapes_predictions_from_coco,
    evaluate_cityscapes,
)
from refinemask.evaluation.coco import evaluate_coco, predictions_to_coco_results
from refinemask.evaluation.lvis import evaluate_ap_star, evaluate_lvis
from refinemask.evaluation.report import (
    format_cityscapes_table,
    format_metrics_table,
    save_metrics_json,
)

__all__ = [
    "cityscapes_label_ids",
    "cityscapes_predictions_from_coco",
    "evaluate_ap_star",
    "evaluate_cityscapes",
    "evaluate_coco",
    "evaluate_lvis",
    "format_cityscapes_table",
    "format_metrics_table",
    "predictions_to_coco_results",
    "save_metrics_json",
]
