"""CIFAR-10/100 from the WebP-mosaic copy (data/cifar_webp.py): format, sha256, damaged files, cache, provenance."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from data import cifar_webp, dataset_present, load_dataset
from tests.fixtures_data import write_cifar_webp


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    return str(root), write_cifar_webp(str(root))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_webp_copy_decodes_tiles_in_row_major_order(tmp_path, monkeypatch, name):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    arrays = write_cifar_webp(str(tmp_path), name)
    assert dataset_present(name, str(tmp_path))
    s = load_dataset(name, str(tmp_path), download=False)
    assert s.x_train.dtype == torch.uint8 and tuple(s.x_train.shape) == (12, 3, 32, 32)
    assert tuple(s.x_test.shape) == (5, 3, 32, 32)
    # N x 32 x 32 x 3 in file order, as NCHW: image 7 is file 1, tile 1 (row 0, column 1)
    np.testing.assert_array_equal(s.x_train.permute(0, 2, 3, 1).numpy(), arrays["x_train"])
    np.testing.assert_array_equal(s.x_test.permute(0, 2, 3, 1).numpy(), arrays["x_test"])
    assert s.y_train.dtype == torch.long and s.y_train.tolist() == arrays["y_train"].tolist()
    assert s.num_classes == (10 if name == "cifar10" else 100)
    src = s.meta["source"]
    assert src["copy"] == "webp-mosaics" and src["sha256"]["x_train"] == cifar_webp.sha256(arrays["x_train"])
    assert "mean" in s.meta and "std" in s.meta


def test_archive_layout_stays_the_first_choice(tmp_path, monkeypatch):
    from tests.fixtures_data import _patch_cifar_md5, write_cifar10
    from torchvision.datasets import CIFAR10

    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    write_cifar_webp(str(tmp_path))
    write_cifar10(str(tmp_path), per_batch=2)
    _patch_cifar_md5(monkeypatch, CIFAR10, os.path.join(str(tmp_path), "cifar-10-batches-py"))
    s = load_dataset("cifar10", str(tmp_path), download=False)
    assert s.meta["source"]["copy"] == "torchvision-archive" and len(s.x_train) == 10


def test_sha256_mismatch_names_the_files(tiny):
    root, _ = tiny
    meta_path = os.path.join(root, "CIFAR10", "meta.json")
    meta = json.load(open(meta_path))
    meta["sha256"]["x_train"] = "0" * 64
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(RuntimeError, match=r"train_0\.webp.*train_1\.webp.*sha256"):
        load_dataset("cifar10", root, download=False)


def test_altered_mosaic_fails_the_sha256(tiny):
    from PIL import Image

    root, _ = tiny
    path = os.path.join(root, "CIFAR10", "test_0.webp")
    m = np.asarray(Image.open(path).convert("RGB")).copy()
    m[0, 0] ^= 1
    Image.fromarray(m).save(path, lossless=True)
    with pytest.raises(RuntimeError, match="test_0.webp.*sha256"):
        load_dataset("cifar10", root, download=False)


def test_truncated_mosaic_is_named(tiny):
    root, _ = tiny
    path = os.path.join(root, "CIFAR10", "train_1.webp")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match=r"train_1\.webp"):
        load_dataset("cifar10", root, download=False)


def test_missing_mosaic_is_named(tiny):
    root, _ = tiny
    os.remove(os.path.join(root, "CIFAR10", "train_0.webp"))
    with pytest.raises(RuntimeError, match=r"train_0\.webp is missing"):
        load_dataset("cifar10", root, download=False)


def test_wrong_mosaic_size_is_named(tiny):
    from PIL import Image

    root, _ = tiny
    Image.new("RGB", (96, 64)).save(os.path.join(root, "CIFAR10", "test_0.webp"), lossless=True)
    with pytest.raises(RuntimeError, match=r"test_0\.webp is 96 x 64 pixels"):
        load_dataset("cifar10", root, download=False)


def test_decoded_once_then_read_from_the_cache(tiny, monkeypatch):
    root, arrays = tiny
    first = load_dataset("cifar10", root, download=False)
    cached = [f for f in os.listdir(os.environ["CLREPRO_CACHE"]) if f.endswith(".pt")]
    assert len(cached) == 1 and cached[0].startswith("cifar10-webp-")
    calls = []
    monkeypatch.setattr(cifar_webp, "decode_mosaic", lambda *a: calls.append(a))
    again = load_dataset("cifar10", root, download=False)
    assert calls == [] and torch.equal(first.x_train, again.x_train) and torch.equal(first.x_test, again.x_test)


def test_stale_or_damaged_cache_is_rebuilt(tiny):
    root, arrays = tiny
    load_dataset("cifar10", root, download=False)
    cache = os.path.join(os.environ["CLREPRO_CACHE"], os.listdir(os.environ["CLREPRO_CACHE"])[0])
    blob = torch.load(cache, weights_only=True)
    blob["x"]["train"][0, 0, 0, 0] ^= 1  # right key, wrong pixels: the sha256 check on read catches it
    torch.save(blob, cache)
    s = load_dataset("cifar10", root, download=False)
    np.testing.assert_array_equal(s.x_train.permute(0, 2, 3, 1).numpy(), arrays["x_train"])
    open(cache, "wb").write(b"garbage")
    s = load_dataset("cifar10", root, download=False)
    np.testing.assert_array_equal(s.x_train.permute(0, 2, 3, 1).numpy(), arrays["x_train"])


def test_bad_meta_json_names_the_file(tiny):
    root, _ = tiny
    meta_path = os.path.join(root, "CIFAR10", "meta.json")
    meta = json.load(open(meta_path))
    del meta["files"]
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(RuntimeError, match=r"meta\.json.*files"):
        load_dataset("cifar10", root, download=False)


def test_real_cifar10_copy(data_root):
    """The copy in ../shared/data: counts, sha256 (checked by the loader), known original pixels, class balance."""
    if not os.path.isfile(os.path.join(data_root, "CIFAR10", "meta.json")):
        pytest.skip("no CIFAR10 copy in the data folder")
    s = load_dataset("cifar10", data_root, download=False)
    assert tuple(s.x_train.shape) == (50000, 3, 32, 32) and tuple(s.x_test.shape) == (10000, 3, 32, 32)
    assert torch.bincount(s.y_train).tolist() == [5000] * 10 and torch.bincount(s.y_test).tolist() == [1000] * 10
    # data_batch_1's first images, channel-planar bytes as printed in public notes (README of the copy)
    assert s.x_train[0].flatten()[:3].tolist() == [59, 43, 50] and s.x_train[0].flatten()[-3:].tolist() == [140, 84, 72]
    assert s.x_train[1].flatten()[:3].tolist() == [154, 126, 105]
    assert s.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # frog, truck, truck, deer, automobile, ...
    mean = s.x_train.float().div(255).mean((0, 2, 3))
    assert torch.allclose(mean, torch.tensor(s.meta["mean"]), atol=1e-4)


def test_a_run_records_the_copy_it_read_and_the_report_says_so(tiny, tmp_path):
    from benchmarks.cli import main

    root, arrays = tiny
    results = tmp_path / "results"
    rc = main(["blcl-table1", "--budget", "smoke", "--filter", "row=resnet8 variant=erm ", "--seeds", "0",
               "--device", "cpu", "--data", root, "--no-download", "--results", str(results),
               "--report", str(tmp_path / "REPORT.md")])
    assert rc == 0
    (path,) = list((results / "runs" / "blcl-table1").glob("*.json"))
    rec = json.load(open(path))
    assert rec["status"] == "ok"
    src = rec["provenance"]["data_source"]
    assert src["copy"] == "webp-mosaics" and src["sha256"]["x_train"] == cifar_webp.sha256(arrays["x_train"])
    report = open(tmp_path / "REPORT.md").read()
    assert f"x_train {src['sha256']['x_train'][:12]}…" in report and "not the published archive" in report
