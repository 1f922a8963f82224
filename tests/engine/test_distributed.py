"""Two processes under torchrun (Gloo, CPU): sharded training, rank 0 writes, scans and gathers; a
signal to one rank stops both together."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest

from refinemask.data.coco import CocoDetection
from refinemask.data.synthetic import SyntheticPaths
from refinemask.tensor_files import read_checkpoint
from tests.tiny_runs import REPO, single_thread_env, write_config


def _with_a_broken_image(synthetic_data, root) -> tuple[SyntheticPaths, str]:
    """A copy of the data whose first training image file is not an image; its file name."""
    shutil.copytree(synthetic_data.images, root / "images")
    broken = json.loads(synthetic_data.train.read_text())["images"][0]["file_name"]
    (root / "images" / broken).write_bytes(b"not an image")
    return dataclasses.replace(synthetic_data, images=root / "images"), broken


def test_two_processes_train_on_different_images_and_rank_0_alone_writes(tmp_path, synthetic_data, monkeypatch):
    monkeypatch.setenv("REFINEMASK_CACHE", str(tmp_path / "cache"))  # a fresh scan, not a cached one
    synthetic_data, broken = _with_a_broken_image(synthetic_data, tmp_path)
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
    assert rank0["all_gathers"] == rank1["all_gathers"] == 0  # results and RNG states go to rank 0 alone
    # rank 0 scanned the files of both splits; rank 1 left out the broken file from rank 0's scan
    assert (rank0["scans"], rank1["scans"]) == (2, 0)
    assert rank0["datasets"] == rank1["datasets"]
    broken_id = next(i["id"] for i in json.loads(synthetic_data.train.read_text())["images"] if i["file_name"] == broken)
    assert broken_id not in rank1["datasets"]["train"] and len(rank1["datasets"]["train"]) == 7
    assert (tmp_path / "out" / "metrics.json").is_file()


def _stop_and_resume(tmp_path, synthetic_data, moments: list[dict], max_iters: int) -> tuple[dict, dict]:
    """Run ddp_stop_worker.py under torchrun with ``moments``; the two ranks' reports."""
    config = write_config(tmp_path / "stop.yaml", synthetic_data, tmp_path / "unused",
                          solver={"max_iters": max_iters}, train={"checkpoint_every": 1000, "keep_checkpoints": 0})
    reports = tmp_path / "reports"
    reports.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "tests" / "engine" / "ddp_stop_worker.py"), str(config), str(tmp_path / "out"),
               str(reports), json.dumps(moments)]
    # its own session: ranks that hang (what this test catches) are killed with torchrun
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=single_thread_env(), cwd=REPO, start_new_session=True)
    try:
        _, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
        raise AssertionError(f"the ranks hung (killed after 300 s):\n{err[-3000:]}") from None
    assert process.returncode == 0, err[-3000:]
    return tuple(json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1))


def _assert_stopped_together_and_resumed_exactly(rank0: dict, rank1: dict, moments: list[dict]) -> None:
    for moment, first, second in zip(moments, rank0["moments"], rank1["moments"]):
        where = f"SIGTERM to rank {moment}"
        assert first["status"] == second["status"] == 0, where
        assert first["stopped_after"] == second["stopped_after"], where  # the same iteration on both ranks
        if first["stopped_after"] is not None:
            assert first["checkpoints"] == [f"checkpoint_{first['stopped_after']:07d}.pth"], where
        assert first["resumed_status"] == second["resumed_status"] == 0, where
        assert first["resumed_equal"], where


def _random_moments(seed: int, count: int, max_iters: int) -> list[dict]:
    rng = random.Random(seed)
    # a signal at step n stops after step n (data: before the step's reduction) or n + 1 (after it)
    return [{"rank": rng.randrange(2), "at": rng.choice(["data", "after_reduce", "after_log"]),
             "call": rng.randrange(1, max_iters - 1)} for _ in range(count)]


def test_sigterm_to_one_rank_stops_both_after_the_same_iteration_and_resumes_exactly(tmp_path, synthetic_data):
    # the window right after the step's reduction is the one where the ranks used to part
    moments = [{"rank": 1, "at": "after_reduce", "call": 2}, *_random_moments(24, 2, max_iters=5)]
    rank0, rank1 = _stop_and_resume(tmp_path, synthetic_data, moments, max_iters=5)
    _assert_stopped_together_and_resumed_exactly(rank0, rank1, moments)
    for moment, entry in zip(moments, rank0["moments"]):  # the step under way finishes, then they stop
        assert entry["stopped_after"] == moment["call"] + (moment["at"] != "data"), moment


@pytest.mark.slow
def test_sigterm_to_one_rank_at_random_times_stops_both_together(tmp_path, synthetic_data):
    """The fast twin's check with SIGTERM at random wall-clock moments of the training loop."""
    rng = random.Random(7)
    moments = [{"rank": rng.randrange(2), "after_s": rng.uniform(0.05, 1.5)} for _ in range(6)]
    rank0, rank1 = _stop_and_resume(tmp_path, synthetic_data, moments, max_iters=8)
    _assert_stopped_together_and_resumed_exactly(rank0, rank1, moments)
    assert any(entry["stopped_after"] is not None for entry in rank0["moments"])
