"""Image dataset loaders (CIFAR-10/100, SVHN, CINIC-10, imagefolder) on tiny files written here in the real on-disk
formats, read through the registered loaders (`data.load_dataset`). Nothing is fetched: the network calls of
torchvision's downloader are replaced by a local copy, everything after them (MD5 check, unpacking) is real.

torchvision checks each CIFAR / SVHN file against the MD5 of the published file, which a tiny file cannot match.
The tests therefore replace those class-level tables (`train_list`, `test_list`, `meta`, `split_list`, `tgz_md5`)
with the MD5s of the tiny files they wrote, so torchvision's own check still runs (and catches a truncated file).
"""
from __future__ import annotations

import glob
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
import torchvision.datasets.utils as tv_utils
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

import data
from data import cinic10, folder, imagefolder
from fixtures_data import (CIFAR10_NAMES, PIXEL, _cifar_images, _patch_cifar_md5, md5, write_cifar10,  # noqa: F401
                           write_cifar100,
                           write_svhn, write_tree)


# ---------------- offline downloads ----------------

@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every URL is "served" from `served[url]` (a local file); an unexpected fetch fails the test."""
    served: dict[str, str] = {}
    fetched: list[str] = []

    def urlretrieve(url, filename, chunk_size=0):
        if url not in served:
            raise AssertionError(f"unexpected download of {url}")
        fetched.append(url)
        shutil.copy(served[url], filename)

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", urlretrieve)
    return served, fetched


def _tar_gz(path, src_dir, arc_prefix=""):
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(os.listdir(src_dir)):
            tar.add(os.path.join(src_dir, name), arcname=os.path.join(arc_prefix, name))
    return str(path)


# ---------------- CIFAR: the python-version pickles ----------------

@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    train, test = write_cifar10(tmp_path)
    _patch_cifar_md5(monkeypatch, CIFAR10, tmp_path / "cifar-10-batches-py")
    return str(tmp_path), train, test


def test_written_cifar_pickles_have_the_real_keys(cifar10_root):
    root, _, _ = cifar10_root
    with open(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (2, 3072)


def test_cifar10_shapes_labels_channel_order(cifar10_root):
    root, train, test = cifar10_root
    s = data.load_dataset("cifar10", root, download=False)
    assert s.name == "cifar10" and s.kind == "image" and s.num_classes == 10
    assert tuple(s.x_train.shape) == (10, 3, 32, 32) and tuple(s.x_test.shape) == (3, 3, 32, 32)
    assert s.x_train.dtype == torch.uint8 and s.y_train.dtype == torch.long and s.x_train.is_contiguous()
    assert s.y_train.tolist() == train and s.y_test.tolist() == test
    r, c = PIXEL
    assert s.x_train[0, :, r, c].tolist() == [1, 2, 3]  # R, G, B planes -> channels 0, 1, 2, not transposed
    assert s.x_test[0, :, r, c].tolist() == [1, 2, 3]
    assert s.x_train[0, :, c, r].tolist() != [1, 2, 3]
    # every other pixel is the row of the pickle, reshaped 3 x 32 x 32
    assert torch.equal(s.x_train[2].flatten(), torch.from_numpy(_cifar_images(2, 2)[0]))
    assert s.meta["classes"] == CIFAR10_NAMES
    assert s.meta["mean"] == [0.4914, 0.4822, 0.4465] and len(s.meta["std"]) == 3


def test_cifar100_fine_labels(tmp_path, monkeypatch):
    train, test = write_cifar100(tmp_path)
    _patch_cifar_md5(monkeypatch, CIFAR100, tmp_path / "cifar-100-python")
    s = data.load_dataset("cifar100", str(tmp_path), download=False)
    assert s.num_classes == 100 and s.name == "cifar100"
    assert tuple(s.x_train.shape) == (4, 3, 32, 32) and s.x_train.dtype == torch.uint8
    assert s.y_train.tolist() == train and s.y_test.tolist() == test  # fine, not coarse, labels
    assert s.x_train[0, :, PIXEL[0], PIXEL[1]].tolist() == [1, 2, 3]
    assert len(s.meta["classes"]) == 100 and len(s.meta["mean"]) == 3


@pytest.mark.parametrize("download", [False, True])
def test_cifar_truncated_file_is_a_clear_error(cifar10_root, download):
    root, _, _ = cifar10_root
    path = os.path.join(root, "cifar-10-batches-py", "data_batch_3")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    # files present: no download is tried (no_network would fail it), the bad file is named with the fix
    with pytest.raises(RuntimeError, match="data_batch_3") as e:
        data.load_dataset("cifar10", root, download=download)
    assert "download=True" in str(e.value) and "data_batch_1" not in str(e.value)


def test_cifar_downloads_once_and_refuses_a_bad_archive(tmp_path, monkeypatch, no_network):
    served, fetched = no_network
    src = tmp_path / "src"
    train, _ = write_cifar10(src)
    archive = _tar_gz(tmp_path / "cifar-10-python.tar.gz", src)
    _patch_cifar_md5(monkeypatch, CIFAR10, src / "cifar-10-batches-py")
    served[CIFAR10.url] = archive
    root = tmp_path / "root"
    # the archive is not the published one: torchvision's MD5 check refuses it, once, naming it
    with pytest.raises(RuntimeError, match="cifar-10-python.tar.gz"):
        data.load_dataset("cifar10", str(root), download=True)
    assert fetched == [CIFAR10.url]
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(archive))
    # the copy already fetched now passes the check: unpacked without a second fetch
    s = data.load_dataset("cifar10", str(root), download=True)
    assert s.y_train.tolist() == train and len(fetched) == 1
    data.load_dataset("cifar10", str(root), download=True)  # present: nothing fetched
    assert len(fetched) == 1


# ---------------- SVHN: MATLAB files ----------------

@pytest.fixture
def svhn_root(tmp_path, monkeypatch):
    digits = {"train": [0, 1, 2, 0, 9], "test": [5, 0, 3], "extra": [7, 0]}
    for i, (split, d) in enumerate(digits.items()):
        write_svhn(tmp_path, split, d, i)
    table = {k: [url, f, md5(tmp_path / "SVHN" / f)] for k, (url, f, _) in SVHN.split_list.items()}
    monkeypatch.setattr(SVHN, "split_list", table)
    return str(tmp_path), digits


def test_svhn_maps_ten_to_zero(svhn_root):
    root, digits = svhn_root
    s = data.load_dataset("svhn", root, download=False)
    assert s.num_classes == 10 and s.name == "svhn" and s.meta["train_splits"] == ["train"]
    assert tuple(s.x_train.shape) == (5, 3, 32, 32) and tuple(s.x_test.shape) == (3, 3, 32, 32)
    assert s.x_train.dtype == torch.uint8 and s.y_train.dtype == torch.long and s.x_train.is_contiguous()
    assert s.y_train.tolist() == digits["train"] and s.y_test.tolist() == digits["test"]
    assert s.x_train[0, :, PIXEL[0], PIXEL[1]].tolist() == [1, 2, 3]  # X[row, col, channel, n]


def test_svhn_extra_is_train_plus_extra(svhn_root):
    root, digits = svhn_root
    plain = data.load_dataset("svhn", root, download=False)
    s = data.load_dataset("svhn_extra", root, download=False)
    assert s.y_train.tolist() == digits["train"] + digits["extra"] and s.meta["train_splits"] == ["train", "extra"]
    assert torch.equal(s.x_train[:5], plain.x_train) and torch.equal(s.x_test, plain.x_test)
    assert s.x_train[5, :, PIXEL[0], PIXEL[1]].tolist() == [1, 2, 3]


def test_svhn_truncated_file_is_a_clear_error(svhn_root):
    root, _ = svhn_root
    path = os.path.join(root, "SVHN", "test_32x32.mat")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(RuntimeError, match="test_32x32.mat"):
        data.load_dataset("svhn", root, download=True)  # present: no download, a clear error


# ---------------- CINIC-10: PNG tree ----------------

CINIC_COUNTS = {"train": 2, "valid": 1, "test": 1}


@pytest.fixture(autouse=True)
def tiny_cinic(monkeypatch):
    """The real CINIC-10 has 90,000 images per split; these tiny trees do not (see the count test below)."""
    monkeypatch.setattr(cinic10, "EXPECTED_PER_SPLIT", None)


@pytest.fixture
def cinic_root(tmp_path):
    write_tree(tmp_path / "CINIC-10", CINIC_COUNTS, cinic10.CLASSES[::-1])  # created in reverse: order is by name
    return str(tmp_path)


def test_cinic10_labels_follow_sorted_class_names(cinic_root):
    s = data.load_dataset("cinic10", cinic_root, download=False)
    assert s.name == "cinic10" and s.num_classes == 10 and s.meta["classes"] == sorted(cinic10.CLASSES)
    assert tuple(s.x_train.shape) == (20, 3, 32, 32) and tuple(s.x_test.shape) == (10, 3, 32, 32)
    assert s.x_train.dtype == torch.uint8 and s.y_train.dtype == torch.long
    assert s.y_train.tolist() == [c for c in range(10) for _ in range(2)]
    assert s.x_train[:, 0, 0, 0].tolist() == s.y_train.tolist()  # the image in class folder c has label c
    assert set(s.x_train[:, 1, 0, 0].tolist()) == {0} and set(s.x_test[:, 1, 0, 0].tolist()) == {2}
    assert s.x_train[:, 2, 0, 0].tolist() == [0, 1] * 10 and int(s.x_train[0, 0, 5, 5]) == 100
    assert s.meta["mean"][0] == pytest.approx(0.47889522)


def test_cinic10_trainval_is_train_plus_valid(cinic_root):
    plain = data.load_dataset("cinic10", cinic_root, download=False)
    tv = data.load_dataset("cinic10_trainval", cinic_root, download=False)
    assert tuple(tv.x_train.shape) == (30, 3, 32, 32) and tv.meta["train_splits"] == ["train", "valid"]
    assert torch.equal(tv.x_train[:20], plain.x_train) and torch.equal(tv.y_train[:20], plain.y_train)
    assert tv.y_train[20:].tolist() == list(range(10)) and set(tv.x_train[20:, 1, 0, 0].tolist()) == {1}
    assert torch.equal(tv.x_test, plain.x_test)


def test_cinic10_cache_built_once_and_rebuilt_when_the_tree_changes(cinic_root, monkeypatch):
    cache = os.path.join(cinic_root, "CINIC-10", "cinic10-uint8.pt")
    first = data.load_dataset("cinic10", cinic_root, download=False)
    assert os.path.isfile(cache)
    assert [f for f in os.listdir(os.path.dirname(cache)) if f.endswith(".tmp")] == []  # atomic write left nothing
    stamp = os.stat(cache).st_mtime_ns
    real_read = folder.read_image

    def no_read(*a, **k):
        raise AssertionError("an image was decoded although the cache matches")

    monkeypatch.setattr(folder, "read_image", no_read)
    for name in ("cinic10", "cinic10_trainval"):  # one cache serves both settings
        again = data.load_dataset(name, cinic_root, download=False)
        assert torch.equal(again.x_test, first.x_test)
    assert os.stat(cache).st_mtime_ns == stamp
    # one more image: the recorded count disagrees, so the cache is rebuilt
    monkeypatch.setattr(folder, "read_image", real_read)
    shutil.copy(os.path.join(cinic_root, "CINIC-10", "test", "cat", "img0.png"),
                os.path.join(cinic_root, "CINIC-10", "test", "cat", "img9.png"))
    assert len(data.load_dataset("cinic10", cinic_root, download=False).y_test) == 11
    # a truncated cache is rebuilt, not an error
    with open(cache, "r+b") as f:
        f.truncate(50)
    assert len(data.load_dataset("cinic10", cinic_root, download=False).y_test) == 11


def test_cinic10_wrong_class_folders_is_an_error(tmp_path):
    write_tree(tmp_path / "CINIC-10", CINIC_COUNTS, [f"class{i}" for i in range(10)])
    with pytest.raises(RuntimeError, match="airplane"):
        data.load_dataset("cinic10", str(tmp_path), download=False)


@pytest.mark.parametrize("prefix", ["", "CINIC-10"])
def test_cinic10_download_unpacks_once(tmp_path, monkeypatch, no_network, prefix):
    served, fetched = no_network
    write_tree(tmp_path / "src", CINIC_COUNTS, cinic10.CLASSES)
    archive = _tar_gz(tmp_path / "CINIC-10.tar.gz", tmp_path / "src", prefix)  # splits at the top or one down
    served[cinic10.URL] = archive
    monkeypatch.setattr(cinic10, "MD5", md5(archive))
    root = tmp_path / "root"
    s = data.load_dataset("cinic10", str(root), download=True)
    assert len(s.y_train) == 20 and os.path.isdir(root / "CINIC-10" / "valid" / "truck")
    assert data.dataset_present("cinic10", str(root)) and fetched == [cinic10.URL]
    data.load_dataset("cinic10_trainval", str(root), download=True)
    assert fetched == [cinic10.URL]


def test_cinic10_bad_archive_is_a_clear_error(tmp_path, no_network):
    served, fetched = no_network
    write_tree(tmp_path / "src", CINIC_COUNTS, cinic10.CLASSES)
    archive = _tar_gz(tmp_path / "CINIC-10.tar.gz", tmp_path / "src")
    with open(archive, "r+b") as f:
        f.truncate(os.path.getsize(archive) // 2)
    served[cinic10.URL] = archive
    with pytest.raises(RuntimeError, match="CINIC-10.tar.gz") as e:  # the recorded MD5 is not this file's
        data.load_dataset("cinic10", str(tmp_path / "root"), download=True)
    assert cinic10.MD5 in str(e.value) and "third-party" in str(e.value)
    assert fetched == [cinic10.URL]  # tried once, no retry loop


# ---------------- imagefolder ----------------

def test_imagefolder_resized_to_32(tmp_path):
    base = tmp_path / "imagefolder"
    write_tree(base, {"train": 2, "val": 1}, ["n01", "n02", "n03"], size=(64, 48))
    Image.new("L", (20, 90), 77).save(base / "train" / "n02" / "gray.jpeg")  # other size, grayscale, JPEG
    (base / "train" / "n01" / "notes.txt").write_text("not an image")
    s = data.load_dataset("imagefolder", str(tmp_path), download=False)
    assert s.name == "imagefolder" and s.num_classes == 3 and s.meta["classes"] == ["n01", "n02", "n03"]
    assert tuple(s.x_train.shape) == (7, 3, 32, 32) and tuple(s.x_test.shape) == (3, 3, 32, 32)
    assert s.x_train.dtype == torch.uint8 and s.y_train.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert int(s.x_train[0, 0, 31, 31]) == 100  # a flat image stays flat under the box filter
    gray = s.x_train[2]  # sorted file names: gray.jpeg before img0.png
    assert abs(int(gray.float().mean()) - 77) <= 1 and torch.equal(gray[0], gray[2])
    assert os.path.isfile(base / "imagefolder-uint8.pt") and s.meta["size"] == imagefolder.SIZE == 32


def test_imagefolder_missing_or_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagefolder") as e:
        data.load_dataset("imagefolder", str(tmp_path), download=True)  # never downloaded
    assert str(tmp_path / "imagefolder" / "train") in str(e.value)
    write_tree(tmp_path / "imagefolder", {"train": 1}, ["a", "b"])
    write_tree(tmp_path / "imagefolder", {"val": 1}, ["a", "c"])
    with pytest.raises(RuntimeError, match="class folders"):
        data.load_dataset("imagefolder", str(tmp_path), download=False)


# ---------------- registry facts ----------------

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "svhn": "SVHN", "svhn_extra": "SVHN",
           "cinic10": "CINIC-10", "cinic10_trainval": "CINIC-10", "imagefolder": "imagefolder", "imagenet": "imagenet",
           "webvision": "webvision"}


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_absent_on_an_empty_folder(tmp_path, name):
    assert name in data.list_datasets() and data.dataset_kind(name) == "image"
    assert not data.dataset_present(name, str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        data.load_dataset(name, str(tmp_path), download=False)
    assert os.path.join(str(tmp_path), FOLDERS[name]) in str(e.value)


def test_present_once_written(tmp_path, svhn_root):
    root, _ = svhn_root
    write_cifar10(root)
    write_tree(os.path.join(root, "CINIC-10"), CINIC_COUNTS, cinic10.CLASSES)
    for name in ("cifar10", "svhn", "svhn_extra", "cinic10", "cinic10_trainval"):
        assert data.dataset_present(name, root), name
    assert not data.dataset_present("cifar100", root)


def test_cinic10_incomplete_split_and_unreadable_image_are_clear_errors(cinic_root, monkeypatch):
    monkeypatch.setattr(cinic10, "EXPECTED_PER_SPLIT", 20)  # the tiny tree holds 2 x 10 train images
    with pytest.raises(RuntimeError, match="valid holds 10 images, expected 20"):
        data.load_dataset("cinic10", cinic_root, download=False)
    monkeypatch.setattr(cinic10, "EXPECTED_PER_SPLIT", None)
    bad = os.path.join(cinic_root, "CINIC-10", "test", "cat", "img0.png")
    for cache in glob.glob(os.path.join(cinic_root, "CINIC-10", "*.pt")):
        os.remove(cache)
    with open(bad, "r+b") as f:
        f.truncate(40)
    with pytest.raises(RuntimeError, match="img0.png"):
        data.load_dataset("cinic10", cinic_root, download=False)
