"""Tiny training runs: a config of 64 px synthetic images, a ResNet-18 with frozen body, few RoIs,
and the CLI in a fresh one-thread process."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

from refinemask.data.synthetic import SyntheticPaths

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = {
    "model": {
        "num_classes": 5,
        "backbone": "resnet18",
        "trainable_backbone_layers": 0,
        "min_size": [64],
        "max_size": 64,
        "rpn_pre_nms_top_n_train": 50,
        "rpn_post_nms_top_n_train": 20,
        "rpn_pre_nms_top_n_test": 50,
        "rpn_post_nms_top_n_test": 20,
        "rpn_batch_size_per_image": 32,
        "box_batch_size_per_image": 16,
        "box_score_thresh": 0.0,
        "detections_per_img": 5,
    },
    "data": {"num_workers": 0},
    "solver": {"base_lr": 0.001, "reference_batch_size": 1, "max_iters": 2, "warmup_iters": 2},
    "train": {
        "batch_size": 1,
        "num_threads": 1,
        "checkpoint_every": 2,
        "log_every": 1,
        "eval_at_end": False,
        "tensorboard": False,
        "progress_bar": False,
    },
    "eval": {"boundary_dilations": [0.02, 0.008]},
}


def _merge(base: dict, changes: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(path: Path, dataset: SyntheticPaths | None, output_dir: Path, **sections: dict) -> Path:
    """A tiny run config at ``path``, on ``dataset`` (train.json/val.json), writing to ``output_dir``."""
    config = _merge(TINY_CONFIG, {"train": {"output_dir": str(output_dir)}})
    if dataset is not None:
        config = _merge(config, {"data": {
            "train_annotations": str(dataset.train),
            "train_images": str(dataset.images),
            "val_annotations": str(dataset.val),
            "val_images": str(dataset.images),
        }})
    config = _merge(config, sections)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m refinemask.cli ARGS`` in a fresh process with one CPU thread."""
    return subprocess.run(
        [sys.executable, "-m", "refinemask.cli", *args],
        check=False, capture_output=True, text=True, timeout=timeout, env=single_thread_env(), cwd=REPO,
    )


def single_thread_env() -> dict:
    env = dict(os.environ)
    # this checkout's package first (an installed copy may be another checkout's), then tests.*
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    return env
