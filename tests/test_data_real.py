"""Dataset loaders against the real files (MNIST, Fashion-MNIST, MR).

The data root is $CLREPRO_DATA, else <repo>/../shared/data. Where the files are missing the tests skip,
except under CI (env CI set), where they fail: CI must not pass by skipping them.
"""
from __future__ import annotations

import collections
import os
import shutil

import pytest
import torch

import data
from data import mr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _candidate_roots() -> list[str]:
    roots = []
    env = os.environ.get("CLREPRO_DATA")
    if env:
        roots.append(env)
    roots.append(os.path.normpath(os.path.join(REPO, "..", "shared", "data")))
    return roots


def find_data_root(dataset: str) -> str:
    """First candidate root holding `dataset`; skip (or fail under CI) when none does."""
    roots = _candidate_roots()
    for root in roots:
        if os.path.isdir(root) and data.dataset_present(dataset, root):
            return root
    msg = f"dataset {dataset!r} not found under any of {roots} (set CLREPRO_DATA)"
    if os.environ.get("CI"):
        pytest.fail(msg + "; CI is set, so this is a failure rather than a skip")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", find_data_root("mnist"), download=False)


@pytest.fixture(scope="module")
def fashion():
    return data.load_dataset("fashion_mnist", find_data_root("fashion_mnist"), download=False)


@pytest.fixture(scope="module")
def mr_root():
    return find_data_root("mr")


@pytest.fixture(scope="module")
def mr_splits(mr_root):
    return data.load_dataset("mr", mr_root, download=False)


@pytest.fixture(scope="module")
def mr_sentences(mr_root):
    return mr.read_sentences(mr_root)


# ---------------- MNIST / Fashion-MNIST ----------------

def test_mnist_shapes_and_dtypes(mnist):
    assert mnist.name == "mnist" and mnist.kind == "image" and mnist.num_classes == 10
    assert tuple(mnist.x_train.shape) == (60000, 1, 28, 28) and mnist.x_train.dtype == torch.uint8
    assert tuple(mnist.x_test.shape) == (10000, 1, 28, 28) and mnist.x_test.dtype == torch.uint8
    assert tuple(mnist.y_train.shape) == (60000,) and mnist.y_train.dtype == torch.long
    assert tuple(mnist.y_test.shape) == (10000,) and mnist.y_test.dtype == torch.long
    assert mnist.in_shape == (1, 28, 28)
    assert int(mnist.x_train.max()) == 255 and int(mnist.x_train.min()) == 0


def test_mnist_labels_match_published_files(mnist):
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(mnist.y_train, minlength=10).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                                                    6265, 5851, 5949]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(mnist.y_test, minlength=10).sum() == 10000


def test_mnist_images_are_digits_not_transposed(mnist):
    # the first training image is an upright "5": ink in rows 5..24, its top bar reaches right (row 5, col 20)
    # and its bottom stroke left (row 24, col 4). A transposed or mirrored layout would still pass the shape test.
    img = mnist.x_train[0, 0]
    assert int(img[:5].sum()) == 0 and int(img[25:].sum()) == 0
    assert int(img[5, 20]) > 0 and int(img[24, 4]) > 0
    assert int(img[5, 4]) == 0 and int(img[24, 20]) == 0
    assert int(img[4, 24]) == 0 and int(img[20, 5]) == 0  # the transposed positions are blank
    assert mnist.x_train.is_contiguous()


def test_fashion_mnist_test_labels(fashion):
    assert fashion.name == "fashion_mnist"
    assert tuple(fashion.x_test.shape) == (10000, 1, 28, 28) and fashion.x_test.dtype == torch.uint8
    assert tuple(fashion.x_train.shape) == (60000, 1, 28, 28)
    assert fashion.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    # Fashion-MNIST is balanced: 6000 / 1000 per class
    assert torch.bincount(fashion.y_train, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(fashion.y_test, minlength=10).tolist() == [1000] * 10


# ---------------- MR ----------------

def test_mr_read_sentences(mr_sentences):
    texts, labels = mr_sentences
    assert len(texts) == len(labels) == 10662
    assert labels[:5331] == [0] * 5331 and labels[5331:] == [1] * 5331
    assert all(isinstance(t, str) and t == t.strip() and t for t in texts)


def test_mr_verify_passes_on_real_files(mr_root):
    mr.verify(mr_root)  # raises on mismatch


def test_mr_verify_detects_a_changed_file(mr_root, tmp_path):
    shutil.copytree(os.path.join(mr_root, "MR"), tmp_path / "MR")
    with open(tmp_path / mr.FOLDER / "rt-polarity.pos", "ab") as f:
        f.write(b"x")
    with pytest.raises(RuntimeError, match="sha256"):
        mr.verify(str(tmp_path))


def test_mr_split_sizes_stratified(mr_splits):
    s = mr_splits
    assert s.name == "mr" and s.kind == "text" and s.num_classes == 2
    assert len(s.y_train) + len(s.y_test) == 10662
    assert torch.bincount(s.y_test, minlength=2).tolist() == [533, 533]  # round(0.1 * 5331) per class
    assert torch.bincount(s.y_train, minlength=2).tolist() == [4798, 4798]
    assert set(s.y_train.unique().tolist()) == {0, 1} and s.y_train.dtype == torch.long
    assert s.x_train.dtype == torch.long and s.x_train.shape[0] == len(s.y_train)
    assert s.x_test.shape[0] == len(s.y_test)


def test_mr_split_is_identical_across_loads(mr_root, mr_splits):
    again = data.load_dataset("mr", mr_root, download=False)
    for a, b in ((mr_splits.x_train, again.x_train), (mr_splits.x_test, again.x_test),
                 (mr_splits.y_train, again.y_train), (mr_splits.y_test, again.y_test)):
        assert torch.equal(a, b)
    assert mr_splits.meta == again.meta


def test_mr_split_indices_disjoint_and_complete(mr_sentences):
    _, labels = mr_sentences
    tr, te = mr.split_indices(labels)
    tr2, te2 = mr.split_indices(labels)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    assert len(te) == 1066 and len(tr) == 9596
    assert not set(tr.tolist()) & set(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(10662))
    # the test set is not simply the first 10% of each class file
    assert te.tolist() != list(range(533)) + list(range(5331, 5331 + 533))


def _train_tokens(mr_sentences):
    texts, labels = mr_sentences
    tr, te = mr.split_indices(labels)
    tokens = [mr.clean_str(t).split() for t in texts]
    return tokens, tr, te


def test_mr_vocab_built_on_train_split(mr_sentences, mr_splits):
    tokens, tr, te = _train_tokens(mr_sentences)
    train_words = sorted({w for i in tr.tolist() for w in tokens[i]})
    assert mr_splits.meta["vocab_size"] > 10000
    assert mr_splits.meta["vocab_size"] == len(train_words) + 2  # + padding 0 + unknown 1
    assert int(mr_splits.x_train.max()) < mr_splits.meta["vocab_size"]
    assert int(mr_splits.x_test.max()) < mr_splits.meta["vocab_size"]
    # every training word is in the vocabulary, so no UNK in train; test has words never seen in training
    assert not bool((mr_splits.x_train == mr.UNK).any())
    assert bool((mr_splits.x_test == mr.UNK).any())


def test_mr_encoding_round_trips(mr_sentences, mr_splits):
    tokens, tr, te = _train_tokens(mr_sentences)
    train_words = sorted({w for i in tr.tolist() for w in tokens[i]})
    inv = {i + 2: w for i, w in enumerate(train_words)}
    for row in (0, 1, 500, 9595):
        ids = [v for v in mr_splits.x_train[row].tolist() if v != 0]
        assert [inv[v] for v in ids] == tokens[tr[row].item()]


def test_mr_padding_only_at_borders(mr_sentences, mr_splits):
    tokens, tr, te = _train_tokens(mr_sentences)
    max_len = max(len(t) for t in tokens)
    assert mr_splits.meta["max_len"] == max_len
    for x, idx in ((mr_splits.x_train, tr), (mr_splits.x_test, te)):
        assert x.shape[1] == max_len + 8
        assert not bool(x[:, :4].any())  # first 4 columns all padding
        assert not bool(x[:, -4:].any())  # last 4 columns all padding
        lengths = torch.tensor([len(tokens[i]) for i in idx.tolist()])
        nonzero = x != 0
        assert torch.equal(nonzero.sum(1), lengths)  # no token is encoded as 0
        # the non-padding tokens form one block starting at column 4
        cols = torch.arange(x.shape[1])
        block = (cols >= 4) & (cols < 4 + lengths[:, None])
        assert torch.equal(nonzero, block)


def test_mr_no_test_sentence_leaks_into_train(mr_sentences, mr_splits):
    # identical sentences can occur in both files; the check is on *indices*: the multiset of training rows is
    # exactly the sentences whose index is in the train split
    texts, labels = mr_sentences
    tokens, tr, te = _train_tokens(mr_sentences)
    assert len(mr_splits.y_train) == len(tr) and len(mr_splits.y_test) == len(te)
    assert mr_splits.y_train.tolist() == [labels[i] for i in tr.tolist()]
    assert mr_splits.y_test.tolist() == [labels[i] for i in te.tolist()]
    train_len = collections.Counter((mr_splits.x_train != 0).sum(1).tolist())
    assert train_len == collections.Counter(len(tokens[i]) for i in tr.tolist())


# ---------------- clean_str (Kim 2014, process_data.py) ----------------

@pytest.mark.parametrize("raw,cleaned", [
    ("It's a GREAT film, isn't it?", "it 's a great film , is n't it \\?"),
    ("I've seen (better) movies -- they'd say so; we'll see... you're right!",
     "i 've seen \\( better \\) movies they 'd say so we 'll see you 're right !"),
    ("don't, can't!", "do n't , ca n't !"),
    ("Caf\xe9 & `quotes` 100%", "caf `quotes` 100"),
    ("  tabs\tand\nnewlines  ", "tabs and newlines"),
])
def test_clean_str_kim_semantics(raw, cleaned):
    assert mr.clean_str(raw) == cleaned


def test_clean_str_emits_literal_backslash_escapes():
    # Kim's Python-2 code writes " \( " etc. as the replacement, which keeps the backslash
    out = mr.clean_str("(a)?")
    assert out.split() == ["\\(", "a", "\\)", "\\?"]
    assert "\\" in out


# ---------------- registry facts ----------------

def test_dataset_present(tmp_path):
    assert not data.dataset_present("mnist", str(tmp_path))
    assert not data.dataset_present("mr", str(tmp_path))
    root = find_data_root("mnist")
    assert data.dataset_present("mnist", root)
    assert data.dataset_present("fashion_mnist", find_data_root("fashion_mnist"))
    assert data.dataset_present("mr", find_data_root("mr"))


def test_registry_lists_kinds_and_rejects_unknown(tmp_path):
    assert {"mnist", "fashion_mnist", "mr"} <= set(data.list_datasets())
    assert data.dataset_kind("mr") == "text" and data.dataset_kind("mnist") == "image"
    with pytest.raises(KeyError) as e:
        data.load_dataset("cifar11", str(tmp_path), download=False)
    assert "cifar11" in str(e.value) and "mnist" in str(e.value)


def test_mr_missing_without_download_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.load_dataset("mr", str(tmp_path), download=False)


# ---------------- the root helper itself ----------------

def test_data_root_skips_locally_but_fails_under_ci(monkeypatch, tmp_path):
    import sys

    mod = sys.modules[__name__]
    monkeypatch.setattr(mod, "_candidate_roots", lambda: [str(tmp_path)])
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        find_data_root("mnist")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI"):
        find_data_root("mnist")


def test_data_root_prefers_clrepro_data(monkeypatch, tmp_path):
    monkeypatch.setenv("CLREPRO_DATA", str(tmp_path))
    assert _candidate_roots()[0] == str(tmp_path)
    monkeypatch.delenv("CLREPRO_DATA")
    assert _candidate_roots() == [os.path.normpath(os.path.join(REPO, "..", "shared", "data"))]
