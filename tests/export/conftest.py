import pytest


@pytest.fixture(scope="session", autouse=True)
def one_thread_in_export(one_thread):
    """The export tests run with one torch thread (:func:`tests.conftest.one_thread`)."""
