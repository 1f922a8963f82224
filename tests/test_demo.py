"""`refinemask demo` end to end, at a tiny size: data, both trainings, evaluation, report."""
import json

import yaml

from refinemask.cli import main
from refinemask.demo_report import unequal_training
from refinemask.engine.training_checkpoints import find_last_checkpoint
from refinemask.tensor_files import read_checkpoint

TINY = [
    "data.synthetic.num_images=4", "data.synthetic.num_val_images=2", "data.synthetic.size=64",
    "model.min_size=[64]", "model.max_size=64", "model.rpn_pre_nms_top_n_train=100",
    "model.rpn_post_nms_top_n_train=50", "model.box_batch_size_per_image=16",
    "train.progress_bar=false", "train.num_threads=1",
]


def test_demo_trains_both_models_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--minutes", "0.05", "--out", str(out), *TINY]) == 0
    report = (out / "report.md").read_text()
    assert "| mask AP |" in report and "| Boundary AP (dilation 0.008) |" in report
    assert "| mask AP on ground-truth boxes |" in report
    assert "RefineMask" in report and "Mask R-CNN" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"RefineMask", "Mask R-CNN"}
    assert {"segm", "boundary", "boundary@0.008", "bbox"} <= set(metrics["RefineMask"])
    # the masks on the ground-truth boxes too, for both models (no box AP there)
    for name in ("RefineMask", "Mask R-CNN"):
        gt = {k for k in metrics[name] if k.startswith("gt_boxes/")}
        assert gt == {"gt_boxes/segm", "gt_boxes/boundary", "gt_boxes/boundary@0.008"}
    for key in ("refinemask", "maskrcnn"):
        assert (out / key / "model_final.safetensors").is_file()
    assert (out / "loss_curves.png").is_file() and (out / "comparison.png").is_file()
    for key in ("refinemask", "maskrcnn"):  # each training has a hard stop within the budget
        saved = yaml.safe_load((out / key / "config.yaml").read_text())
        assert 0 < saved["train"]["max_minutes"] <= 0.05
    # the budget is spent before training starts here, so the hard stop cuts the first model:
    # the second stops at the same iteration, and the table compares them
    done = [read_checkpoint(find_last_checkpoint(out / key))["iteration"] for key in ("refinemask", "maskrcnn")]
    assert done[0] == done[1] >= 1
    assert "Not a comparison" not in report
    assert report.count(f"trained {done[0]} ") == 2


def test_the_report_refuses_to_compare_models_trained_for_different_iterations():
    line = unequal_training({"RefineMask": 532, "Mask R-CNN": 312})
    assert line.startswith("**Not a comparison**") and "RefineMask 532, Mask R-CNN 312" in line
    assert unequal_training({"RefineMask": 40, "Mask R-CNN": 40}) is None


def test_demo_refuses_a_non_positive_budget(tmp_path, capsys):
    assert main(["demo", "--minutes", "0", "--out", str(tmp_path)]) == 2
    assert "--minutes" in capsys.readouterr().err
