"""The benchmark scripts run end to end at a tiny size and report what they claim to."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"


# the scripts import their shared module plainly (``from common import ...``), as they do
# when run as ``python benchmarks/X.py`` with this folder first on sys.path
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_reports_head_detector_and_training_ratios(tmp_path, capsys):
    speed = _load("speed")
    out = tmp_path / "rows.json"
    speed.main(["--sizes", "64x96", "--detections", "3", "5", "--repeats", "1", "--backbone", "resnet18",
                "--no-memory", "--train", "--mask-positives", "4", "--box-rois", "32", "--flops", "--threads", "1", "--json", str(out)])
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


def test_speed_compares_with_torchvision_and_finds_the_same_detections_at_its_settings(tmp_path, capsys):
    speed = _load("speed")
    out = tmp_path / "rows.json"
    speed.main(["--sizes", "64x96", "--detections", "4", "--repeats", "1", "--backbone", "resnet18",
                "--torchvision-only", "--threads", "1", "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["detections_seen"] == [4]
    # our Mask R-CNN at torchvision's settings computes what torchvision's does, on the same input
    assert row["torchvision_same_detections"]
    assert row["torchvision_box_maxdiff"] <= 1e-4  # pixels; the same operations, any CPU's rounding
    assert row["torchvision_score_maxdiff"] <= 1e-5 and row["torchvision_mask_maxdiff"] <= 1e-5
    for key in ("ours", "ours_tvsettings", "torchvision"):
        for part in ("transform", "backbone", "rpn", "box_pool", "roi_heads", "paste"):
            assert 0 < row[f"{key}_{part}_s"] <= row[f"{key}_detector_s"]
    assert row["tvsettings_vs_torchvision_s"] == pytest.approx(
        row["ours_tvsettings_detector_s"] / row["torchvision_detector_s"])
    assert "ours@tv / torchvision" in capsys.readouterr().out


def test_torchvision_model_takes_our_state_dict_and_settings():
    speed = _load("speed")
    ours, at_tv, theirs = speed.build_torchvision_trio("resnet18", 7, 64, 96)
    assert theirs.roi_heads.detections_per_img == 7 and theirs.roi_heads.score_thresh == 0.0
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b)
    assert at_tv.roi_heads.box_roi_pool.sampling_ratio == theirs.roi_heads.box_roi_pool.sampling_ratio == 2


def test_speed_rows_name_the_refinemask_head_they_compare(tmp_path, capsys):
    speed = _load("speed")
    out = tmp_path / "rows.json"
    speed.main(["--sizes", "64x96", "--detections", "3", "--repeats", "1", "--backbone", "resnet18", "--no-memory",
                "--threads", "1", "--mask-heads", "simple_refinemask_codetr", "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["mask_head"] == "simple_refinemask_codetr" and row["detections_seen"] == [3]
    assert row["detector_ratio"] == pytest.approx(row["detector_refinemask_s"] / row["detector_maskrcnn_s"])
    assert "| simple_refinemask_codetr | 64x96 | 3 |" in capsys.readouterr().out


def test_the_faster_better_heads_do_less_arithmetic_than_refinemask():
    speed = _load("speed")
    gmac = {}
    for head in ("refinemask", "simple_refinemask", "simple_refinemask_codetr", "refinemask_narrow"):
        refine, baseline = speed.build_pair("resnet18", 5, 64, 96, head=head)
        features = {k: torch.rand(1, 256, 16 // 2**i, 24 // 2**i) for i, k in enumerate(("0", "1", "2", "3"))}
        features["pool"] = torch.rand(1, 256, 1, 2)
        boxes, labels = [speed.random_boxes(5, 64, 96)], [torch.tensor([1, 2, 3, 4, 5])]
        gmac[head] = speed.gmacs(lambda: refine.roi_heads.predict_masks(features, boxes, labels))
        gmac["maskrcnn"] = speed.gmacs(lambda: baseline.roi_heads.predict_masks(features, boxes, labels))
    # Co-DETR's settings (one instance conv, two semantic convs) take less again
    assert gmac["refinemask"] > gmac["simple_refinemask"] > gmac["simple_refinemask_codetr"] > gmac["maskrcnn"] > 0
    # the narrow widths (128/64 of 256) cut the head to well under half of the full-width one
    assert gmac["refinemask_narrow"] < gmac["refinemask"] / 3


def test_training_batch_masks_fill_their_boxes():
    speed = _load("speed")
    images, targets = speed.training_batch(64, 96, objects=4)
    assert len(images) == 2 and images[0].shape == (3, 64, 96)
    for t in targets:
        for box, mask in zip(t["boxes"], t["masks"]):
            ys, xs = mask.nonzero(as_tuple=True)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1 and ys.max() <= box[3]


def test_every_quality_head_is_a_bundled_config_of_that_head():
    from refinemask.config import load_config

    heads = _load("quality").HEADS
    for key, (config_name, _) in heads.items():
        model = load_config(config_name).model
        assert model.mask_head == key.replace("_narrow", "")
        narrow = (model.mask_instance_channels, model.mask_semantic_channels)
        assert narrow == ((64, 32) if key.endswith("_narrow") else (None, None)), key


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


def test_peak_memory_is_measured_in_fresh_processes():
    # how far the heads' peaks differ is a benchmark figure (docs/benchmarks.md), not a test
    whole, head = _load("speed").peak_memory_mb("resnet18", "refinemask", 5, 64, 96)
    assert whole > head > 0, (whole, head)


def test_gpu_script_without_cuda_says_so_in_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    gpu = _load("gpu")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert gpu.main(["--out", str(tmp_path / "gpu")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "no CUDA device" in printed[0]
    assert not (tmp_path / "gpu").exists()  # nothing was run


def test_gpu_script_dry_run_trains_measures_and_reports_every_head(tmp_path, capsys):
    """``--device cpu --tiny``: the same code as on a GPU, at tiny sizes (fp32 only here: CPU
    autocast in fp16 is slow; the mixed-precision trainer is tested in tests/engine)."""
    gpu = _load("gpu")
    assert gpu.main(["--device", "cpu", "--tiny", "--precisions", "none", "--skip", "resume",
                     "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    rows = {(r["part"], r["variant"]): r for r in report["rows"]}
    heads = gpu.mask_heads()
    assert heads[0] == "refinemask" and heads[-1] == "maskrcnn" and "simple_refinemask" in heads
    assert set(rows) == {("train", "fp32")} | {(part, h) for part in ("inference", "coco_train_step") for h in heads}
    train = rows["train", "fp32"]
    assert train["iterations"] == 2 and train["finite"] and 0.0 <= train["mask_ap"] <= 1.0
    for head in heads:
        assert rows["inference", head]["detections"] == [5] and rows["inference", head]["ok"]
        step = rows["coco_train_step", head]
        assert step["ok"] and step["ms_per_step"] > 0
        # the jittered GT proposals give the sampler positives beyond the GT boxes themselves
        assert step["mask_rois_per_step"] is None or step["mask_rois_per_step"] >= 8
    printed = capsys.readouterr().out
    assert printed.count("| inference |") == len(heads) and "| train | fp32 |" in printed


def test_gpu_script_resume_check_compares_a_stopped_and_resumed_run(tmp_path, monkeypatch):
    gpu = _load("gpu")
    import torch

    import refinemask.modeling.ops as model_ops

    monkeypatch.setattr(model_ops, "deterministic_kernels_needed", gpu.deterministic_on_cpu)  # as --device cpu does
    row = gpu.deterministic_resume(gpu.Sizes(tiny=True, iters=2), tmp_path, torch.device("cpu"))
    assert row["stopped_at"] == row["resumed_from"] == 2 and row["iterations"] == 4
    assert row["resumed_equal"] and row["repeat_equal"] and row["ok"]  # the CPU is deterministic
    # the runs pooled and resized through the weight products that deterministic mode uses on CUDA
    assert row["weight_product_calls"] > 0 and row["nondeterministic_ops"] == []
    assert model_ops.separable_roi_align.__module__ == "refinemask.modeling.separable_ops"  # put back
    log = (tmp_path / "resume_stopped" / "log.txt").read_text()
    assert "stopped at iteration 2" in log and "checkpoint_0000002.pth at iteration 2" in log


def test_gpu_script_skips_a_part_whose_packages_are_missing_in_one_line_and_runs_the_rest(tmp_path, monkeypatch, capsys):
    gpu = _load("gpu")
    monkeypatch.setattr(gpu, "installed", lambda module: module != "safetensors")
    assert gpu.main(["--device", "cpu", "--tiny", "--skip", "step", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    skipped = [line for line in printed if "needs safetensors" in line and not line.startswith("|")]  # not the table
    assert len(skipped) == 2 and "pip install safetensors" in skipped[0]  # training and resume, a line each
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert {r["part"] for r in rows if r["ok"] is None} == {"train", "resume"}
    assert all(r["ok"] for r in rows if r["part"] == "inference")  # the rest ran


def test_gpu_script_skips_a_part_when_an_import_inside_it_fails(tmp_path, capsys):
    gpu = _load("gpu")
    import torch

    def measure(variant):
        import refinemask_no_such_package  # noqa: F401

    report = {"rows": []}
    gpu.run_section(report, tmp_path, torch.device("cpu"), "inference", "inference", measure, ["refinemask"])
    assert report["rows"][0]["ok"] is None and "needs refinemask_no_such_package" in report["rows"][0]["error"]
    assert capsys.readouterr().out.count("\n") == 1


def test_pipeline_reports_loading_and_target_rates(tmp_path, capsys):
    pipeline = _load("pipeline")
    out = tmp_path / "pipeline.json"
    pipeline.main(["--images", "3", "--size", "96x160", "--instances", "3", "--positives", "16",
                   "--no-loader", "--reference", "--data", str(tmp_path / "data"), "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["images"] == 3 and result["load_s_per_image"] > 0
    assert result["images_per_s_per_worker"] == pytest.approx(1 / result["load_s_per_image"])
    assert result["targets_s_per_iteration"] == pytest.approx(
        2 * (result["mask_targets_s_per_image"] + result["semantic_target_s_per_image"]))
    assert "| mask targets 14/28/56/112 | training process |" in capsys.readouterr().out
    # 3 polygon instances of 96x160: the image (3 float32 planes) plus 3 bitmaps, or plus one union
    image = 3 * 4 * 96 * 160
    assert result["device_bytes_per_image_all_bitmaps"] > image + 2.5 * 96 * 160
    assert result["device_bytes_per_image_compact"] < image + 1.5 * 96 * 160


def test_positive_rois_overlap_their_instance_by_half():
    import torch
    from torchvision.ops import box_iou

    common = _load("common")
    gt = torch.tensor([[10.0, 10.0, 60.0, 40.0], [100.0, 50.0, 300.0, 400.0]])
    boxes, index = common.positive_rois(gt, 64)
    iou = box_iou(boxes, gt)[torch.arange(64), index]
    assert (iou >= 0.5).all() and (iou < 1).any() and set(index.tolist()) == {0, 1}


def test_gpu_table_marks_skipped_and_failed_rows(capsys):
    gpu = _load("gpu")
    report = {"device_name": "GPU", "torch": "x", "cuda": "y", "seconds": 1.0, "notes": [], "rows": [
        {"part": "train", "variant": "bf16", "ok": None, "error": "train.amp=bf16: this GPU does not support bfloat16"},
        {"part": "resume", "variant": "fp32", "ok": False, "iterations": 20, "stopped_at": 10, "resumed_from": 10,
         "resumed_equal": False, "repeat_equal": False, "resumed_max_abs_diff": 3e-7, "repeat_max_abs_diff": 2e-7,
         "nondeterministic_ops": ["roi_align_backward_kernel"]},
    ]}
    gpu.print_table(report)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| train") or line.startswith("| resume")]
    assert lines[0].endswith("| skipped |") and "does not support bfloat16" in lines[0]
    assert lines[1].endswith("| NO |") and "DIFFERENT weights" in lines[1] and "roi_align_backward_kernel" in lines[1]
    assert all(line.count("|") == 7 for line in lines)  # no cell breaks the table


def test_gpu_script_reports_a_failing_part_and_keeps_the_others(tmp_path, monkeypatch, capsys):
    gpu = _load("gpu")

    def broken(head, sizes, device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu, "coco_train_step", broken)
    assert gpu.main(["--device", "cpu", "--tiny", "--skip", "train", "resume", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert [r["ok"] for r in rows if r["part"] == "inference"] == [True] * len(gpu.mask_heads())
    failed = [r for r in rows if r["part"] == "coco_train_step"]
    assert failed and all(not r["ok"] and "illegal memory access" in r["error"] for r in failed)
    assert "RuntimeError" in (tmp_path / "errors.txt").read_text()
    assert "| coco_train_step | refinemask | not run: RuntimeError" in capsys.readouterr().out


def test_transfer_writes_a_clean_set_of_other_shapes_and_high_bit_makes_it_faint_16_bit(tmp_path):
    from PIL import Image

    from refinemask.data.validation import iter_problems

    common = _load("common")
    train, val, images = common.make_transfer_set(tmp_path, 6, 2, 64, seed=0)
    data = json.loads(train.read_text())
    assert [c["name"] for c in data["categories"]] == ["cross", "crescent", "triangle", "arrow"]
    assert [c["id"] for c in data["categories"]] == [11, 21, 31, 41]  # ids with gaps, on purpose
    assert len(data["images"]) == 6 and data["annotations"] and not list(iter_problems(data))
    high_bit = _load("high_bit")
    high_bit.to_faint_16_bit(images)
    image = Image.open(images / data["images"][0]["file_name"])
    assert image.mode == "I;16" and max(image.getextrema()) <= 235


def test_memory_reports_the_peak_rss_of_a_prediction_with_the_asked_detections(tmp_path, capsys):
    memory = _load("memory")
    out = tmp_path / "rows.json"
    src = str(ROOT.parent / "src")
    memory.main(["--megapixels", "0.05", "--detections", "3", "--extra", "--code", src, "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["found"] == 3 and row["box_local"] and row["masks"] == "box-local masks"
    assert row["peak_bytes"] >= row["start_bytes"] > 0
    assert (row["height"], row["width"]) == memory.image_size(0.05) == (194, 258)
    assert "| box-local masks | 0.05 MP (258x194) | 3 |" in capsys.readouterr().out


def test_large_images_stitches_cells_into_mosaics_with_their_annotations_moved(tmp_path):
    from pycocotools import mask as mask_utils

    from refinemask.data.synthetic import make_synthetic
    from refinemask.data.validation import segmentation_to_rle

    large = _load("large_images")
    paths = make_synthetic(tmp_path / "cells", 4, size=64, seed=0, preset="easy")
    ann = paths.train if paths.train.is_file() else paths.root / "annotations.json"
    mosaic_json = large.stitch(ann, paths.images, 0, 2, 1, tmp_path / "mosaic", "train")
    cells, mosaic = json.loads(ann.read_text()), json.loads(mosaic_json.read_text())
    assert mosaic["images"][0]["width"] == 128 and len(mosaic["annotations"]) == len(cells["annotations"])
    # the last cell's objects sit in the bottom-right quarter, pixel for pixel
    last = cells["images"][3]["id"]
    for a, b in zip(cells["annotations"], mosaic["annotations"]):
        cell_mask = mask_utils.decode(_bytes(segmentation_to_rle(a["segmentation"], 64, 64)))
        big = mask_utils.decode(_bytes(b["segmentation"]))
        k = [im["id"] for im in cells["images"]].index(a["image_id"])
        top, left = (k // 2) * 64, (k % 2) * 64
        assert big.sum() == cell_mask.sum() and (big[top : top + 64, left : left + 64] == cell_mask).all()
        assert b["bbox"][:2] == [a["bbox"][0] + left, a["bbox"][1] + top]
    assert any(a["image_id"] == last for a in cells["annotations"])


def _bytes(rle):
    return {**rle, "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}


@pytest.mark.slow
def test_large_images_trains_on_crops_and_compares_tiled_with_whole_inference(tmp_path, capsys):
    large = _load("large_images")
    out = tmp_path / "rows.json"
    large.main(["--cell", "128", "--train-images", "1", "--train-cells", "2", "--val-cells", "3", "--iters", "2",
                "--tile", "128", "--set", "model.min_size=[128]", "model.max_size=128", "--out", str(tmp_path / "b"),
                "--json", str(out)])
    whole, tiled = json.loads(out.read_text())
    assert whole["inference"].startswith("whole") and tiled["inference"].startswith("tiled 128 px")
    assert tiled["peak_rss_bytes"] > 0 and "| tiled 128 px, overlap 0.25 |" in capsys.readouterr().out


def test_speed_compares_backbones_one_row_each_with_their_parameters(tmp_path, capsys):
    speed = _load("speed")
    out = tmp_path / "rows.json"
    speed.main(["--sizes", "64x96", "--detections", "3", "--repeats", "1", "--no-memory", "--threads", "1",
                "--backbones", "resnet18", "torchvision:mobilenet_v3_small", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["backbone"] for r in rows] == ["resnet18", "torchvision:mobilenet_v3_small"]
    for row in rows:
        assert row["detections_seen"] == [3] and row["detector_refinemask_s"] > 0
        # the same body under both heads; RefineMask's head has more parameters than Mask R-CNN's
        assert row["params_refinemask_m"] > row["params_maskrcnn_m"] > row["params_body_m"] > 0
    assert rows[1]["params_body_m"] < rows[0]["params_body_m"]  # MobileNetV3-Small is far smaller than ResNet-18
    assert "| torchvision:mobilenet_v3_small |" in capsys.readouterr().out


def test_runtimes_times_each_runtime_in_turns_with_the_same_detections(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    runtimes = _load("runtimes")
    rows = runtimes.speed_rows(runtimes.argparse.Namespace(
        sizes=["64x96"], detections=[2], heads=["maskrcnn"], runtimes=["eager", "ort-tuned", "openvino"],
        backbone="resnet18", threads=1, repeats=1, calibration_images=1, memory=False,
    ))
    (row,) = rows
    assert set(row["seconds"]) == {"eager", "ort-tuned", "openvino"}
    assert set(row["counts"].values()) == {2}  # the same fixed number of detections in every runtime
    assert row["speedup_vs_eager"]["eager"] == 1.0
    runtimes.print_speed_table(rows)
    assert "| maskrcnn | 64x96 | 2 |" in capsys.readouterr().out


def test_quality_study_entries_differ_from_refinemask_only_in_the_mask_losses():
    from refinemask.config import load_config

    quality = _load("quality")
    base = load_config("quickstart_refinemask").model
    for key, (config_name, _, overrides) in quality.STUDY.items():
        model = load_config(config_name, overrides).model
        changed = {k for k in vars(base) if getattr(base, k) != getattr(model, k)}
        assert changed and changed <= {"mask_loss_to_features", "bar_stage_weights", "semantic_loss_weight"}, key
    # Mask R-CNN trains on as many mask positives as RefineMask in the quickstart recipe
    assert load_config("quickstart_maskrcnn").model.mask_positives_per_image == base.mask_positives_per_image == 6
