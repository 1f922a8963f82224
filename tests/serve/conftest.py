"""A demo server on a free loopback port, with a tiny confident model and an example image."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refinemask.serve import make_server
from tests.export.conftest import confident_tiny_model, smooth_image


def write_png(path: Path, height: int, width: int, seed: int) -> Path:
    Image.fromarray((smooth_image(height, width, seed) * 255).round().astype(np.uint8)).save(path)
    return path


class Running:
    """A server serving in a thread until the fixture ends."""

    def __init__(self, server):
        self.server = server
        self.url = server.url
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


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
