"""Report lines on where two readings of a method can differ in a run, counted by the run itself (history extras).

Data Parameters' sparse update (issue 19): the official `SparseSGD` skips rows whose gradient is exactly zero, the
paper's text skips rows "not present in the mini-batch"; the two differ only on in-batch rows whose gradient is
exactly zero in float32 (`saturated_rows_<level>`, methods/data_parameters.py). How often that happens decides how
much the choice can matter."""
from __future__ import annotations


def saturation_lines(by_cell: dict[tuple, list[dict]], labels: dict[str, str]) -> list[str]:
    """Per cell with data-parameter runs: in-batch rows with an exactly zero gradient, summed over training, the
    epochs where any occurred, and the run's `skip_rows` reading."""
    out = []
    for (row, variant, _comp, rate), recs in by_cell.items():
        for level in ("instance", "class"):
            key = f"saturated_rows_{level}"
            runs = [r for r in recs if r["status"] == "ok"
                    and any(key in (h.get("extras") or {}) for h in r["history"])]
            if not runs:
                continue
            parts = []
            for r in sorted(runs, key=lambda r: r["spec"]["seed"]):
                per = [(h["epoch"], (h.get("extras") or {}).get(key, 0)) for h in r["history"]]
                hit = [e for e, n in per if n]
                where = f", epochs {hit[0]}-{hit[-1]} ({len(hit)} of {len(per)})" if hit else ""
                parts.append(f"seed {r['spec']['seed']}: {sum(n for _, n in per):,} rows{where}")
            skip = sorted({str(r["spec"]["method"].get("skip_rows", "default")) for r in runs})
            out.append(f"- {labels[row]}{f', noise {rate:g}' if rate else ''}, {variant} ({level} level, "
                       f"skip_rows {'/'.join(skip)}): {'; '.join(parts)}")
    if not out:
        return []
    return ["In-batch rows whose data-parameter gradient was exactly zero in float32 (where the official "
            "`SparseSGD`, which skips them, and the paper's text, which moves them, differ), summed over "
            "training (each epoch has one in-batch row per training sample):", ""] + out + [""]
