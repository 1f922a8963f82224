"""Temporary folders for fixtures that outlive one test.

The suite writes several GB of full-size model files (ResNet-50 weights, checkpoints with their
optimizer state, ONNX graphs). pytest keeps every test's ``tmp_path`` until the session ends
unless told otherwise, and a CI machine's disk may be small, so:

- ``tmp_path_retention_policy = "failed"`` (pyproject.toml) removes a passing test's own folder
  when the test ends;
- a fixture that lives for a module or a folder of tests makes its folder with
  :func:`scratch_dir`, which removes it when the fixture is torn down.
"""
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_dir(tmp_path_factory, name: str):
    """A new folder under pytest's base temp, removed on exit (use it around a fixture's ``yield``)."""
    path: Path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
