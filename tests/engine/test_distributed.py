"""Two processes under torchrun (Gloo, CPU): sharded training, rank 0 writes, evaluation gathers."""
from __future__ import annotations

import json
import subprocess
import sys

from refinemask.data.coco import CocoDetection
from refinemask.tensor_files import read_checkpoint
from tests.tiny_runs import REPO, single_thread_env, write_config


def test_two_processes_train_on_different_images_and_rank_0_alone_writes(tmp_path, synthetic_data):
    config = write_config(tmp_path / "ddp.yaml", synthetic_data, tmp_path / "out",
                          solver={"max_iters": 2}, train={"eval_at_end": True, "checkpoint_every": 2})
    reports = tmp_path / "reports"
    reports.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "tests" / "engine" / "ddp_worker.py"), str(config), str(reports)]
    finished = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180, env=single_thread_env(), cwd=REPO)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rank0, rank1 = (json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1))

    assert rank0["world_size"] == rank1["world_size"] == 2
    # 2 iterations of 1 image per rank, from disjoint shards of the epoch
    assert len(rank0["trained"]) == len(rank1["trained"]) == 2
    assert set(rank0["trained"]).isdisjoint(rank1["trained"])
    # only rank 0 writes the checkpoint and the final weights
    assert (rank0["checkpoints"], rank0["final_weights"]) == (1, 1)
    assert (rank1["checkpoints"], rank1["final_weights"]) == (0, 0)
    checkpoint = read_checkpoint(tmp_path / "out" / "checkpoint_0000002.pth")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2  # both ranks' RNG states
    # each rank evaluated its share; rank 0 scored the results of all validation images
    val_ids = set(CocoDetection(synthetic_data.val, synthetic_data.images).ids)
    assert set(rank0["evaluated"]).isdisjoint(rank1["evaluated"])
    assert set(rank0["evaluated"]) | set(rank1["evaluated"]) == val_ids
    assert set(rank0["gathered"]) == val_ids and rank1["gathered"] == []
    assert rank0["metrics"] == rank1["metrics"]  # every rank gets the metrics
    assert (tmp_path / "out" / "metrics.json").is_file()
