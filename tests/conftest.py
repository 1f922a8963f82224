"""Session-wide test settings and the fixtures that several test folders use."""
import os

import pytest
import torch


def pytest_configure(config):
    # with pytest-xdist each worker is a process of its own: one torch thread each keeps the
    # workers from competing for the same cores
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


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


# not autouse: the folders of tiny-model tests (engine, export, serve) ask for it with an
# autouse fixture of their own, so the other folders keep torch's default thread count
@pytest.fixture(scope="session")
def one_thread():
    """One thread: on a loaded 2-core machine torch's 2 threads run these tiny models slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
