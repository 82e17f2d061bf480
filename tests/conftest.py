import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def real_data_root() -> str | None:
    for cand in (os.environ.get("CLREPRO_DATA"), os.path.join(ROOT, "..", "shared", "data")):
        if cand and os.path.isdir(os.path.join(cand, "MNIST")):
            return os.path.abspath(cand)
    return None


@pytest.fixture(scope="session")
def data_root() -> str:
    root = real_data_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have the real data (../shared/data or CLREPRO_DATA)")
        pytest.skip("real data not found (set CLREPRO_DATA)")
    return root


_CACHE_DIR: str | None = None


def pytest_configure(config):
    """Decoded-dataset caches (data/cifar_webp.py) go to a temporary folder, never the user's ~/.cache."""
    global _CACHE_DIR
    import tempfile

    _CACHE_DIR = tempfile.mkdtemp(prefix="clrepro-test-cache-")
    os.environ["CLREPRO_CACHE"] = _CACHE_DIR


def pytest_unconfigure(config):
    import shutil

    if _CACHE_DIR:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)
