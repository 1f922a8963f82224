"""``refinemask eval``: score a saved results file; bad input gives one line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from refinemask.cli import main
from refinemask.evaluation import predictions_to_coco_results
from tests.evaluation.scenes import (
    CITYSCAPES_CARS,
    CITYSCAPES_PEOPLE,
    CITYSCAPES_SIZE,
    CITYSCAPES_STEM,
    LABEL_TO_CATEGORY,
    box_of,
    grow_one_pixel,
)

METRICS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}


@pytest.fixture
def files(scene, tmp_path):
    outputs, image_ids = scene.outputs(grow_one_pixel)
    gt, results = tmp_path / "gt.json", tmp_path / "results.json"
    gt.write_text(json.dumps(scene.ground_truth()))
    results.write_text(
        json.dumps(predictions_to_coco_results(outputs, image_ids, LABEL_TO_CATEGORY))
    )
    return gt, results


def test_scoring_a_results_file_prints_a_table_and_writes_metrics(files, tmp_path, capsys):
    gt, results = files
    out = tmp_path / "metrics.json"
    status = main(
        [
            "eval",
            "--annotations",
            str(gt),
            "--predictions",
            str(results),
            "--out",
            str(out),
            "--boundary-dilation",
            "0.02",
            "0.008",
        ]
    )
    assert status == 0
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["bbox", "segm", "boundary", "boundary@0.008"]
    assert all(set(values) == METRICS for values in metrics.values())
    assert 0 < metrics["boundary"]["AP"] < metrics["segm"]["AP"] < 1  # fractions, not percent
    printed = capsys.readouterr().out
    assert "boundary@0.008" in printed and f"{100 * metrics['segm']['AP']:.1f}" in printed


def test_lvis_flag_adds_frequency_metrics(scene, files, tmp_path):
    gt, results = files
    lvis_gt = scene.ground_truth()
    for category in lvis_gt["categories"]:
        category["frequency"] = "c"
    gt.write_text(json.dumps(lvis_gt))
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--annotations",
                str(gt),
                "--predictions",
                str(results),
                "--out",
                str(out),
                "--iou-types",
                "segm",
                "--lvis",
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["segm"] and metrics["segm"]["APc"] == metrics["segm"]["AP"]


def test_ap_star_flag_adds_the_ap_star_row(scene, files, tmp_path, capsys):
    gt, results = files
    cocofied = scene.ground_truth()  # same images and category ids, plus LVIS fields
    for category in cocofied["categories"]:
        category["frequency"] = "f"
    (tmp_path / "cocofied.json").write_text(json.dumps(cocofied))
    out = tmp_path / "metrics.json"
    argv = ["eval", "--annotations", str(gt), "--predictions", str(results), "--out", str(out)]
    assert main([*argv, "--iou-types", "segm", "--ap-star", str(tmp_path / "cocofied.json")]) == 0
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["segm", "ap_star"]
    assert metrics["ap_star"]["AP"] == pytest.approx(metrics["segm"]["AP"])  # same masks here
    assert "ap_star" in capsys.readouterr().out


def test_cityscapes_flag_adds_the_official_cityscapes_ap(cityscapes_gt_dir, tmp_path, capsys):
    height, width = CITYSCAPES_SIZE
    coco_gt = {
        "images": [
            {
                "id": 3,
                "height": height,
                "width": width,
                "file_name": f"{CITYSCAPES_STEM}_leftImg8bit.png",
            }
        ],
        "annotations": [],
        "categories": [{"id": 24, "name": "person"}, {"id": 26, "name": "car"}],
    }
    masks = list(CITYSCAPES_PEOPLE.values()) + list(CITYSCAPES_CARS.values())
    output = {
        "boxes": torch.tensor([box_of(m) for m in masks]),
        "labels": torch.tensor([1, 1, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "masks": torch.from_numpy(np.stack(masks)),
    }
    results = predictions_to_coco_results([output], [3], {1: 24, 2: 26})
    (tmp_path / "gt.json").write_text(json.dumps(coco_gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "metrics.json"
    argv = ["eval", "--annotations", str(tmp_path / "gt.json"), "--predictions"]
    argv += [str(tmp_path / "results.json"), "--iou-types", "segm", "--out", str(out)]
    assert main([*argv, "--cityscapes", str(cityscapes_gt_dir)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["cityscapes"]["AP"] == 1.0
    assert metrics["cityscapes"]["classes"]["bus"]["AP"] is None  # NaN in JSON
    assert "Cityscapes class" in capsys.readouterr().out


def _bad_inputs(tmp_path, gt, results):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,')
    other = tmp_path / "other_images.json"
    rows = json.loads(results.read_text())
    for row in rows:
        row["image_id"] += 1000
    other.write_text(json.dumps(rows))
    config = tmp_path / "model.yaml"
    config.write_text("model: {}\n")
    return {
        "missing file": (
            ["--annotations", str(tmp_path / "nope.json"), "--predictions", str(results)],
            "annotation file not found",
        ),
        "invalid json": (
            ["--annotations", str(gt), "--predictions", str(broken)],
            "not valid JSON",
        ),
        "unknown image ids": (["--annotations", str(gt), "--predictions", str(other)], "not in"),
        "results as annotations": (
            ["--annotations", str(results), "--predictions", str(results)],
            "not a COCO",
        ),
        "annotations as results": (
            ["--annotations", str(gt), "--predictions", str(gt)],
            "not results",
        ),
        "only predictions": (["--predictions", str(results)], "--annotations"),
        "nothing": ([], "nothing to evaluate"),
        "model without weights": ([str(config)], "--weights"),
        "dilation without boundary": (
            [
                "--annotations",
                str(gt),
                "--predictions",
                str(results),
                "--iou-types",
                "segm",
                "--boundary-dilation",
                "0.01",
            ],
            "boundary",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "invalid json",
        "unknown image ids",
        "results as annotations",
        "annotations as results",
        "only predictions",
        "nothing",
        "model without weights",
        "dilation without boundary",
    ],
)
def test_bad_input_gives_one_line_and_status_2(case, files, tmp_path, capsys):
    argv, expected = _bad_inputs(tmp_path, *files)[case]
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert expected in err


def test_model_form_accepts_a_bundled_config_name_and_reports_missing_weights(tmp_path, capsys):
    missing = tmp_path / "w.safetensors"
    assert main(["eval", "quickstart_refinemask", "--weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(missing) in err
    assert len(err.strip().splitlines()) == 1


def test_model_form_names_the_nearest_bundled_config(tmp_path, capsys):
    assert main(["eval", "quickstart_refinemsk", "--weights", str(tmp_path / "w.safetensors")]) == 2
    assert "quickstart_refinemask" in capsys.readouterr().err


def test_console_exit_status_is_2_on_a_missing_file(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "refinemask.cli",
            "eval",
            "--annotations",
            str(tmp_path / "gt.json"),
            "--predictions",
            str(tmp_path / "results.json"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "annotation file not found" in completed.stderr and "gt.json" in completed.stderr
