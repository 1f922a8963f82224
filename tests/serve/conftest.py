"""A demo server on a free loopback port, with a tiny confident model and an example image."""
from __future__ import annotations

from pathlib import Path

import pytest

from refinemask.serve import make_server
from tests.serve.running import Running, write_png
from tests.tiny_models import confident_tiny_model


@pytest.fixture(scope="session", autouse=True)
def one_thread_in_serve(one_thread):
    """The serve tests run with one torch thread (:func:`tests.conftest.one_thread`)."""


@pytest.fixture(scope="module")
def model():
    return confident_tiny_model("refinemask")


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    return write_png(tmp_path_factory.mktemp("serve") / "example.png", 120, 160, seed=0)


@pytest.fixture(scope="module")
def running(model, example):
    running = Running(make_server(model, "127.0.0.1", 0, example=example, quiet=True))
    yield running
    running.stop()
