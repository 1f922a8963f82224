"""The benchmark scripts run end to end at a tiny size and report what they claim to."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_reports_head_detector_and_training_ratios(tmp_path, capsys):
    speed = _load("speed")
    out = tmp_path / "rows.json"
    speed.main(["--sizes", "64x96", "--detections", "3", "5", "--repeats", "1", "--backbone", "resnet18",
                "--no-memory", "--train", "--mask-positives", "4", "--flops", "--threads", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["detections"] for r in rows] == [3, 5]
    for row in rows:
        # both detectors really produced the asked number of detections
        assert row["detections_seen"] == [row["detections"]]
        for key in ("head_refinemask_s", "head_maskrcnn_s", "detector_refinemask_s", "detector_maskrcnn_s"):
            assert row[key] > 0
        assert row["head_ratio"] == pytest.approx(row["head_refinemask_s"] / row["head_maskrcnn_s"])
    assert rows[0]["train_ratio"] == pytest.approx(rows[0]["train_refinemask_s"] / rows[0]["train_maskrcnn_s"])
    assert "train_ratio" not in rows[1]  # training is timed once per image size
    # more detections cost more arithmetic in both heads; RefineMask's head always costs more
    assert rows[1]["gmac_head_refinemask"] > rows[0]["gmac_head_refinemask"] > rows[0]["gmac_head_maskrcnn"]
    assert rows[0]["gmac_ratio"] > 1
    assert rows[0]["gmac_train_refinemask"] > rows[0]["gmac_train_maskrcnn"] > 0
    assert 0 < rows[0]["gmac_semantic_head"] < rows[0]["gmac_head_refinemask"]
    printed = capsys.readouterr().out
    assert "| 64x96 | 3 |" in printed and "training iteration at 64x96" in printed and "GMAC at 64x96" in printed


def test_training_batch_masks_fill_their_boxes():
    speed = _load("speed")
    images, targets = speed.training_batch(64, 96, objects=4)
    assert len(images) == 2 and images[0].shape == (3, 64, 96)
    for t in targets:
        for box, mask in zip(t["boxes"], t["masks"]):
            ys, xs = mask.nonzero(as_tuple=True)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1 and ys.max() <= box[3]


def test_quality_ceilings_order(tmp_path, capsys):
    quality = _load("quality")
    quality.main(["--ceilings-only", "--images", "2", "--val-images", "6", "--out", str(tmp_path)])
    table = json.loads((tmp_path / "quality.json").read_text())
    coarse, fine = table["GT through 28×28"][0], table["GT through 112×112"][0]
    # the thin parts do not survive a 28×28 grid; a 112×112 grid keeps nearly everything
    assert fine["segm"]["AP"] > 0.9
    assert fine["segm"]["AP"] > coarse["segm"]["AP"] + 0.1
    assert fine["boundary@0.008"]["AP"] > coarse["boundary@0.008"]["AP"]
    assert "GT through 28×28 (1 run)" in capsys.readouterr().out


def test_peak_memory_separates_the_heads():
    speed = _load("speed")
    refine = speed.peak_memory_mb("resnet18", "refinemask", 100, 128, 192)
    baseline = speed.peak_memory_mb("resnet18", "maskrcnn", 100, 128, 192)
    assert all(v > 0 for v in refine + baseline), (refine, baseline)
    # 100 RoIs through RefineMask's 56×56 and 112×112 stages hold more than Mask R-CNN's 14/28
    # (about 630 MB against 300-360 MB here)
    assert refine[1] > 1.3 * baseline[1], (refine, baseline)
