"""A run killed or interrupted mid-way loses at most one checkpoint interval and resumes exactly."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from refinemask.config import load_config
from refinemask.tensor_files import read_checkpoint
from refinemask.engine.train import train
from refinemask.engine.training_checkpoints import find_last_checkpoint
from refinemask.errors import RefineMaskError
from tests.tiny_runs import REPO, single_thread_env, write_config


def _start_training(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "refinemask.cli", "train", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=single_thread_env(), cwd=REPO,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 90, contains: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and (contains is None or contains in path.read_text()):
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended before {path} appeared:\n{process.stderr.read()}")
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"{path} did not appear within {timeout} s")


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, synthetic_data):
    settings = {"solver": {"max_iters": 4}, "train": {"checkpoint_every": 2}}
    uninterrupted = train(load_config(write_config(tmp_path / "whole.yaml", synthetic_data, tmp_path / "whole", **settings)))

    config = write_config(tmp_path / "killed.yaml", synthetic_data, tmp_path / "killed", **settings)
    process = _start_training(config)
    _wait_for(tmp_path / "killed" / "checkpoint_0000002.pth", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model_final.safetensors").exists()  # it really stopped half-way

    resumed = train(load_config(config, ["train.resume=true"]))
    expected, actual = load_file(str(uninterrupted)), load_file(str(resumed))
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    log = (tmp_path / "killed" / "log.txt").read_text()
    assert "resumed from" in log and "checkpoint_0000002.pth at iteration 2" in log


def test_ctrl_c_saves_a_checkpoint_before_exiting(tmp_path, synthetic_data):
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                          solver={"max_iters": 100}, train={"checkpoint_every": 1000})
    process = _start_training(config)
    _wait_for(tmp_path / "out" / "log.txt", process, contains="iter 1/100")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err
    checkpoint = find_last_checkpoint(tmp_path / "out")
    assert checkpoint is not None
    iteration = read_checkpoint(checkpoint)["iteration"]
    assert 1 <= iteration < 100
    assert f"stopped at iteration {iteration}" in (tmp_path / "out" / "log.txt").read_text()


def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path, synthetic_data):
    """SIGTERM is how clusters preempt: a clean stop (status 0), so torchrun and requeues see no failure."""
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                          solver={"max_iters": 100}, train={"checkpoint_every": 1000})
    process = _start_training(config)
    _wait_for(tmp_path / "out" / "log.txt", process, contains="iter 1/100")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    iteration = read_checkpoint(find_last_checkpoint(tmp_path / "out"))["iteration"]
    assert process.returncode == 0 and f"stopped at iteration {iteration} (SIGTERM)" in err
    assert 1 <= iteration < 100 and not (tmp_path / "out" / "model_final.safetensors").exists()


def test_the_time_limit_ends_training_with_weights_and_resume_goes_on(tmp_path, synthetic_data):
    settings = {"solver": {"max_iters": 4}, "train": {"checkpoint_every": 100, "max_minutes": 1e-6}}
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out", **settings)
    final = train(load_config(config))  # the limit passes during the first step
    assert final.is_file()
    assert read_checkpoint(find_last_checkpoint(tmp_path / "out"))["iteration"] == 1
    assert "time limit reached (train.max_minutes=1e-06): training ends at iteration 1 of 4" in (
        tmp_path / "out" / "log.txt").read_text()

    resumed = train(load_config(config, ["train.resume=true", "train.max_minutes=0"]))
    assert read_checkpoint(find_last_checkpoint(tmp_path / "out"))["iteration"] == 4
    whole = train(load_config(write_config(tmp_path / "whole.yaml", synthetic_data, tmp_path / "whole",
                                           solver={"max_iters": 4}, train={"checkpoint_every": 100})))
    expected, actual = load_file(str(whole)), load_file(str(resumed))
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_a_negative_time_limit_is_a_config_error(tmp_path, synthetic_data):
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out", train={"max_minutes": -1})
    with pytest.raises(RefineMaskError, match="train.max_minutes must be 0"):
        load_config(config)


def test_the_stop_message_repeats_the_real_command_with_resume(tmp_path):
    from types import SimpleNamespace

    from refinemask.engine.train import Trainer

    run = SimpleNamespace(
        command=("refinemask", "train", "my config.yaml", "train.output_dir=runs/a", "--resume"),
        output_dir=tmp_path, context=SimpleNamespace(world_size=1),
    )
    assert Trainer.resume_command(run, ("train.max_minutes=0",)) == (
        "refinemask train 'my config.yaml' train.output_dir=runs/a train.max_minutes=0 --resume"
    )
    run.command, run.context.world_size = None, 4
    assert Trainer.resume_command(run) == (
        f"torchrun --nproc_per_node=4 -m refinemask.cli train {tmp_path / 'config.yaml'} --resume"
    )


def test_stop_at_ends_the_run_at_that_iteration_and_turns_of_it_equal_one_run(tmp_path, synthetic_data):
    settings = {"solver": {"max_iters": 3}, "train": {"checkpoint_every": 100, "stop_at": 1}}
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out", **settings)
    assert train(load_config(config)).is_file()
    assert read_checkpoint(find_last_checkpoint(tmp_path / "out"))["iteration"] == 1
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "train.stop_at=1: training ends at iteration 1 of 3" in log
    train(load_config(config, ["train.resume=true", "train.stop_at=2"]))
    resumed = train(load_config(config, ["train.resume=true", "train.stop_at=0"]))
    assert read_checkpoint(find_last_checkpoint(tmp_path / "out"))["iteration"] == 3
    assert "resuming with a changed config" not in (tmp_path / "out" / "log.txt").read_text()
    whole = train(load_config(write_config(tmp_path / "whole.yaml", synthetic_data, tmp_path / "whole",
                                           solver={"max_iters": 3}, train={"checkpoint_every": 100})))
    expected, actual = load_file(str(whole)), load_file(str(resumed))
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
