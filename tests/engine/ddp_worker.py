"""One rank of the two-process test in test_distributed.py (started by torchrun).

Usage: ddp_worker.py CONFIG REPORT_DIR. Trains with the config and writes
REPORT_DIR/rank<R>.json: the image ids this rank trained on, the image ids it evaluated,
whether it saved checkpoints or final weights, the image ids of the gathered results, how many
times it scanned image files and gathered objects onto every rank, and the image ids of its datasets.
"""
import json
import os
import sys
from pathlib import Path

import torch

import refinemask.data.scan as data_scan
import refinemask.engine.data as engine_data
import refinemask.engine.evaluate as engine_evaluate
import refinemask.engine.train as engine_train
from refinemask.config import load_config

torch.set_num_threads(1)
config_path, report_dir = sys.argv[1], Path(sys.argv[2])
report = {"trained": [], "evaluated": [], "checkpoints": 0, "final_weights": 0, "gathered": [], "scans": 0,
          "all_gathers": 0, "datasets": {}}

original_getitem = engine_data.TrainingSamples.__getitem__


def recording_getitem(self, key):
    report["trained"].append(int(self.dataset.ids[key[0]]))
    return original_getitem(self, key)


original_predict = engine_evaluate.predict_dataset


def recording_predict(*args, **kwargs):
    results, image_ids = original_predict(*args, **kwargs)
    report["evaluated"].extend(image_ids)
    return results, image_ids


original_evaluate = engine_evaluate.evaluate


def recording_evaluate(*args, **kwargs):
    metrics, results = original_evaluate(*args, **kwargs)
    report["gathered"] = sorted({r["image_id"] for r in results})
    report["metrics"] = sorted(metrics)
    return metrics, results


original_save_checkpoint = engine_train.save_training_checkpoint
original_save_weights = engine_train.save_weights


def counting_save_checkpoint(*args, **kwargs):
    report["checkpoints"] += 1
    return original_save_checkpoint(*args, **kwargs)


def counting_save_weights(*args, **kwargs):
    report["final_weights"] += 1
    return original_save_weights(*args, **kwargs)


original_scan = data_scan.scan_image_files
original_all_gather = torch.distributed.all_gather_object
original_build_dataset = engine_data.build_dataset  # what setup_datasets calls


def counting_scan(*args, **kwargs):
    report["scans"] += 1
    return original_scan(*args, **kwargs)


def counting_all_gather(*args, **kwargs):
    report["all_gathers"] += 1
    return original_all_gather(*args, **kwargs)


def recording_build_dataset(config, split):
    dataset = original_build_dataset(config, split)
    report["datasets"][split] = sorted(int(i) for i in dataset.ids)
    return dataset


data_scan.scan_image_files = counting_scan
torch.distributed.all_gather_object = counting_all_gather
engine_data.build_dataset = recording_build_dataset
engine_data.TrainingSamples.__getitem__ = recording_getitem
engine_evaluate.predict_dataset = recording_predict
engine_train.evaluate = recording_evaluate
engine_train.save_training_checkpoint = counting_save_checkpoint
engine_train.save_weights = counting_save_weights

engine_train.train(load_config(config_path))
report["world_size"] = int(os.environ["WORLD_SIZE"])
(report_dir / f"rank{os.environ['RANK']}.json").write_text(json.dumps(report))
