"""Session-wide test settings."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def scan_cache_in_tmp(tmp_path_factory):
    """The image-scan cache (refinemask.data.scan) of every test, subprocesses included, in a tmp dir."""
    before = os.environ.get("REFINEMASK_CACHE")
    os.environ["REFINEMASK_CACHE"] = str(tmp_path_factory.mktemp("refinemask-cache"))
    yield
    if before is None:
        os.environ.pop("REFINEMASK_CACHE", None)
    else:
        os.environ["REFINEMASK_CACHE"] = before
