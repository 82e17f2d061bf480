"""Verdicts that survive a rerun: a study trained again, from a clean checkout with the same thread count, into
`results/reruns/<label>/runs/<target>/` (`./reproduce.sh <target> --results results/reruns/<label>`), compared
with the committed runs of `results/runs/`.

Same run id means same spec, so a rerun differs only by the engine (e.g. the fused CPU optimizer's rounding) and
by what that difference grows into under label noise. For each target the rerun covers, the report says per claim
whether its verdict changes between the two sets of runs, under the target's measure (the last-k mean of a
constant-lr target) and under the final epoch alone, and how far the runs themselves moved.
"""
from __future__ import annotations

import glob
import os

from benchmarks.report.stats import (_by_seed, _stats, claim_cells, claim_text, gain_interval, glance_word,
                                     interval_text, measured, verdict)
from benchmarks.run.store import load_records

RERUN_DIR = "reruns"


def load_reruns(results: str) -> dict[str, dict[str, list[dict]]]:
    """label -> (cell key -> records) for every folder `<results>/reruns/<label>/` that holds runs."""
    out = {}
    for folder in sorted(glob.glob(os.path.join(results, RERUN_DIR, "*", ""))):
        cells, _ = load_records(folder)
        if cells:
            out[os.path.basename(os.path.normpath(folder))] = cells
    return out


def _verdicts(raw: dict, by_cell: dict, last_k: int | None) -> dict[str, tuple[str, str]]:
    """claim text -> (one-word verdict, measured gain [interval])."""
    out = {}
    for c, _row, _v, _comp, rate, recs, base in claim_cells(raw, by_cell):
        metric = c.get("metric", "test_acc")
        a, b = _by_seed(recs, last_k, metric), _by_seed(base, last_k, metric)
        iv = gain_interval(a, b)
        out[claim_text(c, rate, raw)] = (glance_word(verdict(None, iv, len(a), len(b))), interval_text(iv))
    return out


def _compare(raw: dict, before_cells: dict, after_cells: dict, last_k: int | None):
    """(verdicts before, verdicts after, claims whose verdict changed, claims run in both)."""
    before, after = _verdicts(raw, before_cells, last_k), _verdicts(raw, after_cells, last_k)
    both = [c for c in before if c in after and "not run" not in (before[c][0], after[c][0])]
    return before, after, [c for c in both if before[c][0] != after[c][0]], len(both)


def _run_moves(committed: dict, rerun: dict, last_k: int | None) -> dict:
    """How far the rerun's runs moved from the committed runs of the same spec and seed."""
    pairs = []
    for key, recs in committed.items():
        again = {r["spec"]["seed"]: r for r in rerun.get(key, []) if r["status"] == "ok"}
        pairs += [(r, again[r["spec"]["seed"]]) for r in recs if r["status"] == "ok" and r["spec"]["seed"] in again]
    moves = {"pairs": len(pairs),
             "identical": sum(1 for a, b in pairs if [h["test_acc"] for h in a["history"]]
                              == [h["test_acc"] for h in b["history"]])}
    for name, k in (("final", None), ("measure", last_k)):
        d = [abs(measured(b, k) - measured(a, k)) for a, b in pairs
             if measured(a, k) is not None and measured(b, k) is not None]
        moves[name] = (_stats(d)[0], max(d)) if d else None
    return moves


def rerun_lines(t, budget: str, plan_keys: dict[tuple, str], committed_by_cell: dict, reruns: dict,
                summary: list[dict] | None = None) -> list[str]:
    """The report's "Verdicts on a rerun" block for one target and budget (empty when no rerun covers it).
    `plan_keys`: (row, variant, compare_as, rate) -> cell key, the same cells the target's tables show."""
    raw = t.raw
    if not raw.get("claims") or budget == "smoke":
        return []
    last_k = (raw.get("measure") or {}).get("last_k")
    out = []
    for label, cells in reruns.items():
        rerun_by_cell = {k: cells.get(ck, []) for k, ck in plan_keys.items()}
        recs = [r for rs in rerun_by_cell.values() for r in rs]
        if not recs:
            continue
        seeds = sorted({r["spec"]["seed"] for r in recs})
        committed = {k: [r for r in rs if r["spec"]["seed"] in seeds] for k, rs in committed_by_cell.items()}
        shas = sorted({r["provenance"]["git_sha"][:10] for r in recs})
        days = sorted({r["provenance"]["start"][:10] for r in recs})
        moves = _run_moves({ck: committed[k] for k, ck in plan_keys.items()},
                           {ck: rerun_by_cell[k] for k, ck in plan_keys.items()}, last_k)
        measures = ([(f"mean of last {last_k} epochs (the target's measure)", last_k)] if last_k else []) \
            + [("final epoch", None)]
        table, changed = [], {}
        for name, k in measures:
            before, after, flips, n = _compare(raw, committed, rerun_by_cell, k)
            changed[name] = (flips, n)
            for c in before:
                if c in after:
                    flag = " **changed**" if c in changed[name][0] else ""
                    table.append(f"| {c} | {name} | {before[c][0]} {before[c][1]} | {after[c][0]} {after[c][1]}{flag} |")
        counts = "; ".join(f"{name}: **{len(ch)} of {n}** verdicts change" for name, (ch, n) in changed.items())
        more = sorted({r["spec"]["seed"] for rs in committed_by_cell.values() for r in rs} - set(seeds))
        if more:  # the study at all its seeds, the rerun's runs standing in for the committed ones of their seeds
            swapped = {k: rerun_by_cell[k] + [r for r in rs if r["spec"]["seed"] in more]
                       for k, rs in committed_by_cell.items()}
            subs = []
            for name, k in measures:
                _, _, flips, n = _compare(raw, committed_by_cell, swapped, k)
                subs.append(f"{name}: **{len(flips)} of {n}**" + (f" ({'; '.join(flips)})" if flips else ""))
                changed[name] += (len(flips), n)
            counts += (f". At all the study's seeds ({', '.join(map(str, seeds + more))}), with the rerun's runs in "
                       f"place of the committed ones of seeds {', '.join(map(str, seeds))}, the verdicts that change: "
                       + "; ".join(subs))
        out += [f"#### Verdicts on a rerun (`{RERUN_DIR}/{label}`, budget `{budget}`)", "",
                f"{len(recs)} runs (seeds {', '.join(map(str, seeds))}) trained again ({', '.join(days)}; engine at "
                f"git {', '.join(shas)}; {'; '.join(sorted({r['provenance']['device'] for r in recs}))}), each "
                f"compared with the committed run of the same spec and seed ({sum(map(len, committed.values()))} "
                f"runs): only the engine's rounding differs. {counts}.", ""]
        mv = [f"{moves['identical']} of {moves['pairs']} reruns identical to their committed run (every epoch's test "
              "accuracy)"]
        for name, key in (("final-epoch accuracy", "final"), (f"last-{last_k} mean", "measure")):
            if moves.get(key) and (key == "final" or last_k):
                mv.append(f"{name} moved by {moves[key][0]:.2f} points on average, at most {moves[key][1]:.2f}")
        out += ["Runs: " + "; ".join(mv) + ".", "",
                "| Claim | Measure | Committed runs | Rerun |", "|---|---|---|---|"] + table + [""]
        if summary is not None:
            summary.append({"target": t.name, "budget": budget, "label": label, "changed": changed})
    return out


def rerun_summary(summary: list[dict]) -> list[str]:
    """One line per rerun study for the top of the report."""
    if not summary:
        return []
    out = ["Verdicts on a rerun (the same runs trained again with today's engine; details in each target's section):",
           ""]
    for s in summary:
        parts = [f"{name}: {len(v[0])} of {v[1]} change at the rerun's seeds"
                 + (f", {v[2]} of {v[3]} at all the study's seeds" if len(v) > 2 else "") for name, v in s["changed"].items()]
        out.append(f"- [{s['target']}](#{s['target']}) `{s['budget']}`, rerun `{s['label']}`: " + "; ".join(parts) + ".")
    return out + [""]
