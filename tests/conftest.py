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
