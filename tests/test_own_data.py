"""The README's own-data path, offline, from an export to predictions.

Microscopy label images are imported, checked, trained on with the bundled offline config
(EfficientNet-Lite0 with the ImageNet weights of a pip package: nothing is downloaded), scored
and predicted on; every step is the CLI a user types, shrunk to tiny sizes.
"""
from __future__ import annotations

import json

import numpy as np
import tifffile

from refinemask.cli import main

TINY = [
    "model.min_size=[64]", "model.max_size=64", "model.rpn_pre_nms_top_n_train=50",
    "model.rpn_post_nms_top_n_train=20", "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20",
    "model.box_batch_size_per_image=16", "model.box_score_thresh=0.0", "model.mask_positives_per_image=4", "solver.max_iters=2",
    "solver.warmup_iters=1", "train.batch_size=1", "train.num_threads=1", "train.log_every=1",
    "train.tensorboard=false", "train.progress_bar=false", "data.num_workers=0", "train.device=cpu",
]


def _nuclei(root, count=4):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in range(count):
        labels = np.zeros((64, 64), dtype=np.uint16)
        for k in range(1, 6):
            y, x = rng.integers(4, 52, size=2)
            labels[y:y + 9, x:x + 9] = k
        image = (labels > 0) * 3000 + rng.integers(0, 400, (64, 64))
        tifffile.imwrite(root / "images" / f"cells_{n}.tif", image.astype(np.uint16))
        tifffile.imwrite(root / "masks" / f"cells_{n}.tif", labels)


def test_label_images_import_train_offline_and_predict(tmp_path, capsys):
    _nuclei(tmp_path / "nuclei")
    coco, run = tmp_path / "coco", tmp_path / "run"
    assert main(["import", "label-images", str(tmp_path / "nuclei"), str(coco), "--val-fraction", "0.25",
                 "--category", "nucleus"]) == 0
    assert main(["check-data", str(coco / "train.json"), "--images", str(tmp_path / "nuclei")]) == 0
    images = str(tmp_path / "nuclei")
    assert main([
        "train", "finetune_lite0_refinemask", f"data.train_annotations={coco / 'train.json'}",
        f"data.train_images={images}", f"data.val_annotations={coco / 'val.json'}", f"data.val_images={images}",
        f"train.output_dir={run}", *TINY,
    ]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"segm", "bbox"} <= set(metrics)
    # the weights carry their model (Lite0, a 128-channel FPN): any config's data and eval settings score them
    assert main([
        "eval", "finetune_r50_refinemask", "--weights", str(run / "model_final.safetensors"),
        f"data.val_annotations={coco / 'val.json'}", f"data.val_images={images}", "train.device=cpu",
        "model.detections_per_img=7", "--out", str(tmp_path / "val_metrics.json"),
    ]) == 0
    assert json.loads((tmp_path / "val_metrics.json").read_text())["segm"]["AP"] >= 0
    capsys.readouterr()
    assert main(["predict", "--weights", str(run / "model_final.safetensors"), str(tmp_path / "nuclei" / "images"),
                 "--out", str(tmp_path / "predictions"), "--score-thresh", "0"]) == 0
    results = json.loads((tmp_path / "predictions" / "results.json").read_text())
    assert results and {(r["category_id"], r["category_name"]) for r in results} == {(1, "nucleus")}
    assert len(list((tmp_path / "predictions").glob("*.png"))) == 4  # one overlay per image
