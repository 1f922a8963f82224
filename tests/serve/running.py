"""A demo server serving in a thread, and example images for it."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from tests.tiny_models import smooth_image


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
