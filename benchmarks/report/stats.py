"""The statistics of the report: a run's measured accuracy, mean +- std over seeds, a method's gain over its
baseline with a 95% t interval (paired by seed where possible, else Welch) and the verdict it gives; and which
cells each of a target's claims compares. Torch-free; used by the report, the rerun comparison and the nightly."""
from __future__ import annotations

import math

def _stats(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std, n


def fmt_cell(values: list[float]) -> str:
    if not values:
        return "not run"
    mean, std, n = _stats(values)
    return f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{mean:.2f} (n=1)"


def gain_interval(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, str] | None:
    """Mean gain of a over b (seed -> accuracy) with a 95% t interval: paired over seeds when both sides ran the
    same seeds (same initial weights, batch order and labels per seed), else Welch. None with < 2 runs a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.special import stdtrit  # the t quantile (scipy.stats.t.ppf's own routine; a lighter import)

    if set(a) == set(b):
        d = [a[k] - b[k] for k in sorted(a)]
        gain, sd, n = _stats(d)
        half = float(stdtrit(n - 1, 0.975)) * sd / math.sqrt(n)
        return gain, gain - half, gain + half, "paired"
    ma, sa, na = _stats(list(a.values()))
    mb, sb, nb = _stats(list(b.values()))
    va, vb = sa**2 / na, sb**2 / nb
    se = math.sqrt(va + vb)
    gain = ma - mb
    if se == 0:
        return gain, gain, gain, "Welch"
    df = (va + vb) ** 2 / ((va**2 / (na - 1) if va else 0) + (vb**2 / (nb - 1) if vb else 0))
    half = float(stdtrit(df, 0.975)) * se
    return gain, gain - half, gain + half, "Welch"


def interval_text(iv) -> str:
    return "—" if iv is None else f"{iv[0]:+.2f} [{iv[1]:+.2f}, {iv[2]:+.2f}] ({iv[3]})"


def verdict(published_gain: float | None, interval, n_a: int, n_b: int) -> str:
    if n_a == 0 or n_b == 0:
        return "not run"
    if interval is None:
        return "too few runs for a verdict (need 2+ seeds per side)"
    gain, lo, hi = interval[:3]
    if published_gain is None:
        size = ""
    elif lo <= published_gain <= hi:
        size = "; the published gain lies within the interval"
    else:
        size = "; the published gain lies outside the interval"
    if lo > 0:
        return "gain reproduced (significant)" + size
    if hi < 0:
        return "contradicted: the method is significantly worse" + size
    return "not significant: gain indistinguishable from zero" + size


def measured(rec: dict, last_k: int | None = None, metric: str = "test_acc") -> float | None:
    """A run's measured accuracy: its last epoch's test accuracy, or with the target's `measure: {last_k: k}` the
    mean test accuracy of its last k epochs (a constant learning rate under label noise moves the last epoch's by
    points from one epoch to the next; the mean of k does not depend on which epoch happens to be last). A claim's
    `metric: train_acc` reads the training accuracy instead (memorisation of random labels, Data Parameters)."""
    if not last_k and metric == "test_acc":
        return rec["final_test_acc"]
    tail = [h.get(metric) for h in rec["history"][-(last_k or 1):]]
    return sum(tail) / len(tail) if tail and None not in tail else None


def _accs(recs: list[dict], last_k: int | None = None) -> list[float]:
    vals = [measured(r, last_k) for r in recs if r["status"] == "ok"]
    return [v for v in vals if v is not None]


def _by_seed(recs: list[dict], last_k: int | None = None, metric: str = "test_acc") -> dict[int, float]:
    out = {r["spec"]["seed"]: measured(r, last_k, metric) for r in recs if r["status"] == "ok"}
    return {k: v for k, v in out.items() if v is not None}


def single_seed_text(a: dict[int, float], b: dict[int, float]) -> str | None:
    """The difference of one run a side on the same seed, said as such (no interval exists): a one-seed row such as
    Data Parameters' random-label experiment still shows its measured difference."""
    if len(a) == 1 and set(a) == set(b):
        (s,) = a
        return f"{a[s] - b[s]:+.2f} (one seed: no interval)"
    return None


def trend_interval(points: list[tuple[float, dict[int, float], dict[int, float]]]):
    """How the gain changes with the noise rate (a claim's `trend`: "by more as the noise grows"): the least-squares
    slope of the per-seed paired differences on the rate, per +0.1 of noise, with a 95% t interval (n - 2 degrees of
    freedom, every paired difference one observation). `points`: (rate, method seed -> acc, baseline seed -> acc).
    None with fewer than 3 paired differences or fewer than 2 rates."""
    xy = [(rate, a[s] - b[s]) for rate, a, b in points for s in sorted(set(a) & set(b))]
    if len(xy) < 3 or len({x for x, _ in xy}) < 2:
        return None
    from scipy.special import stdtrit

    n = len(xy)
    mx, my = sum(x for x, _ in xy) / n, sum(y for _, y in xy) / n
    sxx = sum((x - mx) ** 2 for x, _ in xy)
    slope = sum((x - mx) * (y - my) for x, y in xy) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in xy)
    half = float(stdtrit(n - 2, 0.975)) * math.sqrt(resid / (n - 2) / sxx)
    how = f"per +0.1 noise; least squares over {n} paired differences"
    return 0.1 * slope, 0.1 * (slope - half), 0.1 * (slope + half), how


def read_epoch(at, epochs: int) -> tuple[int, str]:
    """The epoch a target's `read_at_epoch` reads a run of `epochs` at, and how to say it: an int is absolute;
    {epoch, of} is the paper's epoch of its run length, so a shorter run (a CPU row, a cut budget) is read at the same
    fraction of training, as budgets scale their milestones (Data Parameters: epoch 84 of 120 -> 14 of 20)."""
    if not isinstance(at, dict):
        return at, f"at epoch {at}"
    if epochs == at["of"]:
        return at["epoch"], f"at epoch {at['epoch']}"
    e = max(1, round(at["epoch"] * epochs / at["of"]))
    return e, f"at epoch {e} ({at['epoch']}/{at['of']} of training)"


GLANCE = {"gain reproduced": "reproduced", "not significant": "not reproduced", "contradicted": "contradicted",
          "not run": "not run", "too few runs": "too few runs"}


def glance_word(verdict_text: str) -> str:
    """The one-word verdict of the summary: reproduced, not reproduced, contradicted, not run, too few runs."""
    return next(w for prefix, w in GLANCE.items() if verdict_text.startswith(prefix))


def claim_cells(raw: dict, by_cell: dict[tuple, list[dict]]):
    """Yield (claim, row, variant, compare_as, rate, method records, baseline records) for every cell a claim of the
    target compares. A claim names a variant (only its cells) or a published column (every variant compared as it);
    its baseline is the variant of the same row and noise rate. `by_cell`: (row, variant, compare_as, rate) -> runs."""
    for c in raw.get("claims", []):
        by_variant = c["method"] in raw["variants"]
        for (row, v, comp, rate), recs in by_cell.items():
            if row != c["row"] or (v if by_variant else comp) != c["method"]:
                continue
            base = next((rs for (r2, v2, _, rate2), rs in by_cell.items()
                         if r2 == row and v2 == c["baseline"] and rate2 == rate), [])
            yield c, row, v, comp, rate, recs, base


def seeds_text(a: dict, b: dict) -> str:
    """The seeds a verdict rests on: "0,1,2", or "0,1 vs 0,1,2" when the method and its baseline ran different ones."""
    sa, sb = ",".join(map(str, sorted(a))), ",".join(map(str, sorted(b)))
    return sa if sa == sb else f"{sa} vs {sb}"


def claim_text(c: dict, rate: float, raw: dict | None = None) -> str:
    """The claim's words for one noise rate; the clean cell of a row that sweeps the noise says "(noise 0)" too, so a
    claim "under label noise" never reads as if its clean cell were noisy."""
    rates = next((r["noise"]["rates"] for r in (raw or {}).get("rows", []) if r["id"] == c["row"]), [])
    return c.get("text", c["method"] + " vs " + c["baseline"]) + (
        f" (noise {rate:g})" if rate or len(set(rates)) > 1 else "")


def epoch_extras(by_cell: dict[tuple, list[dict]]):
    """(row, variant, noise rate, run record, epoch record, the epoch's method extras) over every ok run."""
    for (row, variant, _c, rate), recs in by_cell.items():
        for r in recs:
            for h in r["history"] if r["status"] == "ok" else []:
                yield row, variant, rate, r, h, h.get("extras") or {}
