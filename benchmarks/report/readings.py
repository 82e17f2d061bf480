"""Report lines on where two readings of a method can differ in a run, counted by the run itself (history extras).

Data Parameters' sparse update (issue 19): the official `SparseSGD` skips rows whose gradient is exactly zero, the
paper's text skips rows "not present in the mini-batch"; the two differ only on in-batch rows whose gradient is
exactly zero in float32 (`saturated_rows_<level>`, methods/data_parameters.py). How often that happens decides how
much the choice can matter."""
from __future__ import annotations

from benchmarks.report.stats import epoch_extras

# what one epoch's in-batch rows are, per level (methods/data_parameters.py: the rows a step touches)
ROWS_PER_EPOCH = {"instance": "an epoch's in-batch rows are one per training sample",
                  "class": "a step's in-batch rows are its batch's distinct classes"}


def saturation_lines(by_cell: dict[tuple, list[dict]], labels: dict[str, str]) -> list[str]:
    """Per cell and level with data-parameter runs: in-batch rows with an exactly zero gradient per seed, summed
    over training, the epochs where any occurred, and the runs' `skip_rows` reading."""
    per: dict[tuple, dict[str, list]] = {}  # (row, variant, rate, level) -> run id -> [seed, reading, [(epoch, n)]]
    for row, variant, rate, r, h, ex in epoch_extras(by_cell):
        for level in ROWS_PER_EPOCH:
            if f"saturated_rows_{level}" in ex:
                run = per.setdefault((row, variant, rate, level), {}).setdefault(
                    r["run_id"], [r["spec"]["seed"], r["spec"]["method"].get("skip_rows", "default"), []])
                run[2].append((h["epoch"], ex[f"saturated_rows_{level}"]))
    out = []
    for (row, variant, rate, level), runs in per.items():
        parts = []
        for seed, _skip, counts in sorted(runs.values(), key=lambda v: v[0]):
            hit = [e for e, n in counts if n]
            where = f", epochs {hit[0]}-{hit[-1]} ({len(hit)} of {len(counts)})" if hit else ""
            parts.append(f"seed {seed}: {sum(n for _, n in counts):,} rows{where}")
        skip = "/".join(sorted({str(v[1]) for v in runs.values()}))
        out.append(f"- {labels[row]}{f', noise {rate:g}' if rate else ''}, {variant} ({level} level: "
                   f"{ROWS_PER_EPOCH[level]}; skip_rows {skip}): {'; '.join(parts)}")
    if not out:
        return []
    return ["In-batch rows whose data-parameter gradient was exactly zero in float32 (where the official "
            "`SparseSGD`, which skips them, and the paper's text, which moves them, differ), summed over "
            "training:", ""] + out + [""]
