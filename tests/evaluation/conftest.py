"""Fixtures of the evaluation tests; the scenes themselves are in :mod:`tests.evaluation.scenes`."""

from __future__ import annotations

import pytest

from tests.evaluation.scenes import Scene, build_scene, write_fake_cityscapes


@pytest.fixture
def scene() -> Scene:
    return build_scene()


@pytest.fixture
def cityscapes_gt_dir(tmp_path):
    """A gtFine/val directory with one fake image (see :func:`write_fake_cityscapes`)."""
    return write_fake_cityscapes(tmp_path)
