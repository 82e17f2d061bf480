"""Label noise (data.noise.corrupt_labels): counts, ranges, determinism, flip distribution, errors."""
from __future__ import annotations

import pytest
import torch

from data import corrupt_labels

C = 10


def _labels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


# (N, rate, round(rate * N)) written out by hand
@pytest.mark.parametrize("n,rate,count", [(1000, 0.2, 200), (1000, 0.45, 450), (1003, 0.45, 451),
                                          (999, 0.1, 100), (500, 0.8, 400), (777, 1.0, 777), (10, 0.04, 0)])
def test_symmetric_corrupts_exactly_round_rate_n(n, rate, count):
    clean = _labels(n)
    noisy, mask = corrupt_labels(clean, C, "symmetric", rate, seed=3, dataset="toy")
    assert mask.dtype == torch.bool and mask.shape == clean.shape
    assert int(mask.sum()) == count
    # the mask is exactly "label differs"; every selected label was changed
    assert torch.equal(mask, noisy != clean)
    assert int((noisy != clean).sum()) == count


def test_symmetric_never_keeps_the_clean_label_even_at_rate_one():
    clean = _labels(5000)
    noisy, mask = corrupt_labels(clean, C, "symmetric", 1.0, seed=0)
    assert bool(mask.all())
    assert bool((noisy != clean).all())


def test_symmetric_binary_flips_to_the_other_class():
    clean = torch.tensor([0, 1] * 50)
    noisy, mask = corrupt_labels(clean, 2, "symmetric", 1.0, seed=0)
    assert torch.equal(noisy, 1 - clean)


def test_uniform_changes_about_one_minus_one_over_c_of_selected():
    # N = 40000, rate 0.5 -> m = 20000 selected; each stays unchanged with prob 1/C = 0.1, so the changed
    # count is Binomial(20000, 0.9): mean 18000, sd sqrt(20000 * 0.9 * 0.1) ~ 42.4. Tolerance 0.01 of m = 200
    # = ~4.7 sd. A "symmetric"-like implementation (always changes) would give exactly 20000, and one that
    # ignores `rate` would give ~36000.
    n, rate = 40000, 0.5
    clean = _labels(n)
    noisy, mask = corrupt_labels(clean, C, "uniform", rate, seed=1)
    m = round(rate * n)
    changed = int(mask.sum())
    assert changed < m  # some selected samples keep their label by chance
    assert abs(changed / m - (1 - 1 / C)) < 0.01
    assert torch.equal(mask, noisy != clean)


def test_uniform_rate_one_gives_labels_independent_of_clean():
    # rate 1.0 = random labels: with all clean labels 0, the noisy labels are ~uniform over all C classes
    # (including 0, about 1/C of the time). Each cell ~ Binomial(20000, 0.1): sd ~42, tolerance 250 (~6 sd).
    clean = torch.zeros(20000, dtype=torch.long)
    noisy, mask = corrupt_labels(clean, C, "uniform", 1.0, seed=2)
    counts = torch.bincount(noisy, minlength=C)
    assert counts.numel() == C
    assert bool(((counts - 2000).abs() < 250).all()), counts.tolist()
    assert int(mask.sum()) == 20000 - int(counts[0])


@pytest.mark.parametrize("kind", ["symmetric", "uniform"])
def test_corrupted_labels_in_range_and_long(kind):
    clean = _labels(3000)
    noisy, _ = corrupt_labels(clean, C, kind, 0.7, seed=5)
    assert noisy.dtype == torch.long
    assert int(noisy.min()) >= 0 and int(noisy.max()) < C


def test_symmetric_flips_uniform_over_other_classes():
    # N = 20000, rate 0.9 -> 18000 flips; the offset (noisy - clean) mod C must be uniform on 1..C-1, i.e.
    # 9 cells of expected 2000. Chi-square with 8 dof: the 99.9% quantile is 26.12. A biased flip (e.g.
    # always to (y + 1) mod C, or pair-flip) gives a chi-square in the tens of thousands.
    clean = _labels(20000)
    noisy, mask = corrupt_labels(clean, C, "symmetric", 0.9, seed=7)
    offset = (noisy[mask] - clean[mask]) % C
    counts = torch.bincount(offset, minlength=C).double()
    assert counts[0] == 0
    expected = mask.sum().double() / (C - 1)
    chi2 = float((((counts[1:] - expected) ** 2) / expected).sum())
    assert chi2 < 26.12, counts.tolist()
    # and per clean class the target is spread too: for clean class 3, each of the other 9 classes is hit
    sub = noisy[mask & (clean == 3)]
    assert set(sub.tolist()) == set(range(C)) - {3}


def test_deterministic_for_same_arguments_and_independent_of_global_rng():
    clean = _labels(5000)
    torch.manual_seed(123)
    a = corrupt_labels(clean, C, "symmetric", 0.4, seed=11, dataset="mnist")
    torch.manual_seed(999)
    torch.rand(17)
    b = corrupt_labels(clean, C, "symmetric", 0.4, seed=11, dataset="mnist")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("change", [{"seed": 12}, {"rate": 0.41}, {"dataset": "fashion_mnist"},
                                    {"kind": "uniform"}])
def test_different_arguments_give_different_corruption(change):
    clean = _labels(5000)
    base = dict(kind="symmetric", rate=0.4, seed=11, dataset="mnist")
    a, ma = corrupt_labels(clean, C, **base)
    b, mb = corrupt_labels(clean, C, **{**base, **change})
    assert not torch.equal(a, b)
    assert not torch.equal(ma, mb)  # a different set of samples is corrupted, not just different new labels


def test_input_labels_are_not_modified():
    clean = _labels(1000)
    before = clean.clone()
    noisy, _ = corrupt_labels(clean, C, "symmetric", 0.5, seed=0)
    assert torch.equal(clean, before)
    assert noisy.data_ptr() != clean.data_ptr()


@pytest.mark.parametrize("kind,rate", [("none", 0.0), ("none", 0.5), ("symmetric", 0.0), ("uniform", 0.0)])
def test_rate_zero_or_kind_none_unchanged_with_empty_mask(kind, rate):
    clean = _labels(1000)
    noisy, mask = corrupt_labels(clean, C, kind, rate, seed=0)
    assert torch.equal(noisy, clean)
    assert mask.dtype == torch.bool and mask.shape == clean.shape and not bool(mask.any())


def test_int32_labels_are_returned_as_long():
    clean = _labels(100).to(torch.int32)
    noisy, _ = corrupt_labels(clean, C, "none", 0.0, seed=0)
    assert noisy.dtype == torch.long and torch.equal(noisy, clean.long())


def test_bad_kind_raises_naming_it():
    with pytest.raises(ValueError, match="pairflip"):
        corrupt_labels(_labels(10), C, "pairflip", 0.2, seed=0)


@pytest.mark.parametrize("rate", [1.5, -0.1])
def test_bad_rate_raises_naming_it(rate):
    with pytest.raises(ValueError, match=str(rate)):
        corrupt_labels(_labels(10), C, "symmetric", rate, seed=0)


# ---------------- shuffle (the official Data Parameters code) ----------------


def test_shuffle_permutes_labels_among_the_first_floor_rate_n_only():
    clean = _labels(1003)
    noisy, mask = corrupt_labels(clean, C, "shuffle", 0.45, seed=1, dataset="toy")
    k = int(0.45 * 1003)  # 451: floor, not round
    assert torch.equal(noisy[k:], clean[k:])  # the rest untouched
    assert sorted(noisy[:k].tolist()) == sorted(clean[:k].tolist())  # a permutation: class counts kept
    assert torch.equal(mask, noisy != clean)
    # some keep their label by chance (about 1/C of them), most do not
    assert 0.6 * k < int(mask.sum()) < k


def test_shuffle_is_deterministic_and_seeded():
    clean = _labels(500)
    a, _ = corrupt_labels(clean, C, "shuffle", 0.4, seed=2, dataset="toy")
    b, _ = corrupt_labels(clean, C, "shuffle", 0.4, seed=2, dataset="toy")
    c, _ = corrupt_labels(clean, C, "shuffle", 0.4, seed=3, dataset="toy")
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------- Gaussian pixel (acquisition) noise, DCD Table II ----------------


def test_pixel_noise_statistics_range_and_determinism():
    from data import add_pixel_noise

    x = torch.full((400, 3, 8, 8), 128, dtype=torch.uint8)
    y = add_pixel_noise(x, 20.0, seed=0, dataset="toy")
    assert y.dtype == torch.uint8 and y.shape == x.shape
    d = y.float() - 128
    assert abs(d.mean().item()) < 0.5 and abs(d.std().item() - 20.0) < 0.5  # 76,800 draws: sd error ~0.05
    assert torch.equal(y, add_pixel_noise(x, 20.0, seed=0, dataset="toy"))
    assert not torch.equal(y, add_pixel_noise(x, 20.0, seed=1, dataset="toy"))
    assert not torch.equal(y, add_pixel_noise(x, 20.0, seed=0, dataset="toy", split="test"))
    edge = add_pixel_noise(torch.full((100, 1, 4, 4), 250, dtype=torch.uint8), 30.0, seed=0)
    assert int(edge.max()) == 255  # clipped, not wrapped around
    assert add_pixel_noise(x, 0.0, seed=0) is x
    with pytest.raises(ValueError, match="alpha"):
        add_pixel_noise(x, -1.0, seed=0)
