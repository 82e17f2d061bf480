"""The MR downloader on a local copy of the original archive layout (rt-polaritydata.tar.gz holding
rt-polaritydata/rt-polarity.{pos,neg}): it unpacks where the loader reads, and a corrupted file is refused."""
import os
import tarfile

import pytest

import shutil

import torchvision.datasets.utils as tv_utils

import data.mr as mr


@pytest.fixture
def offline_url(monkeypatch):
    """Serve `mr.URL` from a local archive: torchvision's HTTP fetch is replaced by a copy, the rest is real."""

    def use(archive):
        def fake_download_url(url, root, filename=None, md5=None, **kw):
            assert url == mr.URL
            os.makedirs(root, exist_ok=True)
            shutil.copy(archive, os.path.join(root, filename or os.path.basename(url)))

        monkeypatch.setattr(tv_utils, "download_url", fake_download_url)

    return use


def _archive(tmp_path, data_root, corrupt=False):
    src = os.path.join(data_root, "MR", "rt-polaritydata")
    path = tmp_path / "rt-polaritydata.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("rt-polarity.pos", "rt-polarity.neg"):
            if corrupt and name.endswith("neg"):
                bad = tmp_path / name
                bad.write_bytes(open(os.path.join(src, name), "rb").read()[:-10])
                tar.add(bad, arcname=f"rt-polaritydata/{name}")
            else:
                tar.add(os.path.join(src, name), arcname=f"rt-polaritydata/{name}")
    return path


def test_download_unpacks_and_verifies(tmp_path, data_root, offline_url):
    offline_url(_archive(tmp_path, data_root))
    root = tmp_path / "root"
    splits = mr.mr(str(root), True)  # files missing: downloads, unpacks, checks sha256, loads
    assert (root / "MR" / "rt-polaritydata" / "rt-polarity.pos").is_file()
    assert len(splits.y_train) + len(splits.y_test) == 10662


def test_download_refuses_a_corrupted_file(tmp_path, data_root, offline_url):
    offline_url(_archive(tmp_path, data_root, corrupt=True))
    with pytest.raises(RuntimeError, match="sha256"):
        mr.mr(str(tmp_path / "root"), True)


def test_missing_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="rt-polaritydata"):
        mr.mr(str(tmp_path), False)
