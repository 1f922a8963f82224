"""Metrics table and JSON."""

from __future__ import annotations

import json
import math

from refinemask.evaluation import format_metrics_table, save_metrics_json
from refinemask.evaluation.report import format_cityscapes_table

COCO_METRICS = {
    "bbox": {"AP": 0.379, "AP50": 0.582, "AP75": 0.41, "APs": 0.211, "APm": 0.412, "APl": 0.49},
    "segm": {"AP": 0.373, "AP50": 0.5, "AP75": 0.4, "APs": float("nan"), "APm": 0.3, "APl": 0.5},
}


def test_table_has_a_row_per_iou_type_and_values_in_percent():
    lines = format_metrics_table(COCO_METRICS).splitlines()
    assert lines[0].split() == ["IoU", "type", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert lines[2].split() == ["bbox", "37.9", "58.2", "41.0", "21.1", "41.2", "49.0"]
    assert lines[3].split() == ["segm", "37.3", "50.0", "40.0", "-", "30.0", "50.0"]  # NaN -> "-"
    assert "percent" in lines[-1]


def test_table_shows_lvis_columns_only_when_present():
    assert "APr" not in format_metrics_table(COCO_METRICS)
    lvis = {"segm": {**COCO_METRICS["segm"], "APr": 0.1, "APc": 0.2, "APf": 0.3}}
    header = format_metrics_table(lvis).splitlines()[0].split()
    assert header[-3:] == ["APr", "APc", "APf"]


def test_cityscapes_table_lists_classes_and_the_average():
    result = {
        "AP": 0.75,
        "AP50": 0.8,
        "classes": {
            "person": {"AP": 0.5, "AP50": 0.6},
            "bus": {"AP": float("nan"), "AP50": float("nan")},
        },
    }
    rows = [line.split() for line in format_cityscapes_table(result).splitlines()[2:-1]]
    assert rows == [["person", "50.0", "60.0"], ["bus", "-", "-"], ["average", "75.0", "80.0"]]


def test_saved_json_keeps_fractions_and_writes_nan_as_null(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    save_metrics_json(COCO_METRICS, path)
    text = path.read_text()
    assert "NaN" not in text  # standard JSON, readable by any parser
    loaded = json.loads(text)
    assert loaded["bbox"]["AP"] == 0.379
    assert loaded["segm"]["APs"] is None
    assert math.isnan(COCO_METRICS["segm"]["APs"])  # the caller's dict is untouched
