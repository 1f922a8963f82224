"""The engine tests' data and their one shared training run.

One training run (``trained_run``) is shared by the tests that need trained weights; the tests
that train themselves keep to two to four iterations (:mod:`tests.tiny_runs`).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from refinemask.data.synthetic import SyntheticPaths, make_synthetic
from tests.scratch import scratch_dir
from tests.tiny_runs import write_config


@pytest.fixture(scope="session", autouse=True)
def one_thread_in_engine(one_thread):
    """The engine tests run with one torch thread (:func:`tests.conftest.one_thread`)."""


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> SyntheticPaths:
    """8 training and 3 validation images of 64 px, 5 categories."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), 8, size=64, seed=0, preset="easy", num_val_images=3)


@pytest.fixture(scope="package")
def trained_run(tmp_path_factory) -> Path:
    """The output folder of ``refinemask train`` on built-in synthetic data: 3 iterations of a
    batch of 2 (1 image x 2 accumulation steps), evaluated at the end, with TensorBoard."""
    with scratch_dir(tmp_path_factory, "trained") as root:
        yield _train(root)


def _train(root: Path) -> Path:
    from refinemask.cli import main

    config = write_config(
        root / "run.yaml",
        None,
        root / "out",
        data={"synthetic": {"num_images": 6, "num_val_images": 2, "size": 64, "preset": "easy"}},
        solver={"base_lr": 0.02, "reference_batch_size": 16, "max_iters": 3, "warmup_iters": 2},
        train={"grad_accum_steps": 2, "eval_at_end": True, "tensorboard": True, "checkpoint_every": 2},
    )
    assert main(["train", str(config)]) == 0
    return root / "out"
