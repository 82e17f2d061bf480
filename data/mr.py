"""MR: sentence polarity dataset v1.0 (Pang & Lee 2005), 5,331 positive + 5,331 negative sentences; BLCL Table V.

The BLCL paper gives no split (Kim 2014 used 10-fold cross-validation). We use one fixed, seeded split of
`test_fraction` of each class as the test set (default 10%, i.e. one CV fold), the same for every run and method.
Tokenisation follows Kim's `clean_str` (CNN_sentence/process_data.py); the vocabulary is built on the training
split only (index 0 = padding, 1 = unknown). Sentences are padded to the longest sentence plus 4 zeros on each
side (Kim: filter_h - 1 with filter_h = 5).
"""
from __future__ import annotations

import collections
import hashlib
import os
import re

import torch

from .registry import Splits, register_dataset

URL = "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
FOLDER = os.path.join("MR", "rt-polaritydata")
SHA256 = {
    "rt-polarity.pos": "4134882974a28d0c7b5151256f0e33a6169984ee7372c279e673f1114f475d58",
    "rt-polarity.neg": "2d11cfbc790f1cd96d78339f41ce53ced1efa83cd22d37d6788fa3fe3d17e2fd",
}
PAD, UNK = 0, 1
SPLIT_SEED = 12345  # fixed: the test sentences do not depend on the run seed
TEST_FRACTION = 0.1
EDGE_PAD = 4


def clean_str(s: str) -> str:
    """Kim (2014) tokeniser: keep [A-Za-z0-9(),!?'`], split clitics, space out punctuation, lowercase."""
    s = re.sub(r"[^A-Za-z0-9(),!?\'\`]", " ", s)
    s = re.sub(r"\'s", " 's", s)
    s = re.sub(r"\'ve", " 've", s)
    s = re.sub(r"n\'t", " n't", s)
    s = re.sub(r"\'re", " 're", s)
    s = re.sub(r"\'d", " 'd", s)
    s = re.sub(r"\'ll", " 'll", s)
    s = re.sub(r",", " , ", s)
    s = re.sub(r"!", " ! ", s)
    s = re.sub(r"\(", r" \( ", s)
    s = re.sub(r"\)", r" \) ", s)
    s = re.sub(r"\?", r" \? ", s)
    s = re.sub(r"\s{2,}", " ", s)
    return s.strip().lower()


def _present(root: str) -> bool:
    return all(os.path.isfile(os.path.join(root, FOLDER, f)) for f in SHA256)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(root: str) -> None:
    """Fetch and unpack the original tar.gz into <root>/MR, then check both files' sha256."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, download_root=os.path.join(root, "MR"))
    verify(root)


def verify(root: str) -> None:
    for name, digest in SHA256.items():
        path = os.path.join(root, FOLDER, name)
        got = _sha256(path)
        if got != digest:
            raise RuntimeError(f"{path}: sha256 {got} does not match the published file ({digest})")


def read_sentences(root: str) -> tuple[list[str], list[int]]:
    """All sentences (negative first, then positive) and labels 0 = negative, 1 = positive."""
    texts, labels = [], []
    for label, name in ((0, "rt-polarity.neg"), (1, "rt-polarity.pos")):
        with open(os.path.join(root, FOLDER, name), encoding="latin-1") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        texts += lines
        labels += [label] * len(lines)
    return texts, labels


def split_indices(labels: list[int], test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
    """Stratified, seeded train/test split: the same `test_fraction` of each class goes to test."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    train, test = [], []
    for c in sorted(set(labels)):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(test_fraction * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def encode(tokens: list[list[str]], vocab: dict[str, int], length: int) -> torch.Tensor:
    out = torch.full((len(tokens), length + 2 * EDGE_PAD), PAD, dtype=torch.long)
    for i, toks in enumerate(tokens):
        ids = [vocab.get(t, UNK) for t in toks[:length]]
        out[i, EDGE_PAD : EDGE_PAD + len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


@register_dataset("mr", _present, kind="text")
def mr(root: str, download_missing: bool = True) -> Splits:
    if not _present(root):
        if not download_missing:
            raise FileNotFoundError(f"MR not found under {os.path.join(root, FOLDER)}")
        download(root)
    texts, labels = read_sentences(root)
    tokens = [clean_str(t).split() for t in texts]
    tr, te = split_indices(labels)
    counts = collections.Counter(t for i in tr.tolist() for t in tokens[i])
    vocab = {w: i + 2 for i, w in enumerate(sorted(counts))}
    length = max(len(t) for t in tokens)
    x = encode(tokens, vocab, length)
    y = torch.tensor(labels, dtype=torch.long)
    return Splits(
        name="mr",
        x_train=x[tr],
        y_train=y[tr],
        x_test=x[te],
        y_test=y[te],
        num_classes=2,
        kind="text",
        meta={"vocab_size": len(vocab) + 2, "max_len": length, "split_seed": SPLIT_SEED,
              "test_fraction": TEST_FRACTION, "tokenizer": "kim2014.clean_str", "vocab": "train split"},
    )
