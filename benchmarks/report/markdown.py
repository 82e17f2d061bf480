"""The aggregator: rewrites REPORT.md and the figures from result JSONs alone (never a live run).

For every target and budget it tabulates published vs measured accuracy (mean +- sample std over seeds, n),
their difference, and gives a verdict per claim from the seeds' uncertainty: the method's gain over its baseline
with a 95% t interval (paired by seed where possible, else Welch). Cells never run say "not run". Budget, seeds and device are stated with every table
and figure.
"""
from __future__ import annotations

import os
import tempfile

from benchmarks.report.performance import performance_section
from benchmarks.report.readings import saturation_lines
from benchmarks.report.stability import load_reruns, rerun_lines, rerun_summary
from benchmarks.report.stats import (_accs, _by_seed, _stats, claim_cells, claim_text, fmt_cell, gain_interval,
                                     read_epoch, single_seed_text, trend_interval,
                                      glance_word, interval_text, measured, seeds_text, verdict)
from benchmarks.run.store import cell_key, load_records
from benchmarks.targets.loader import ANALYTIC_FIGURES, BUDGETS, FIGURES, Target, figure_kind

FIG_DIR = "figures"


def _devices(recs: list[dict]) -> list[str]:
    return sorted({r["provenance"]["device"] for r in recs})


def data_sources(recs: list[dict]) -> list[str]:
    """One line per copy of the data the runs read (`provenance.data_source`, e.g. CIFAR's WebP mosaics)."""
    seen = {}
    for r in recs:
        src = r["provenance"].get("data_source")
        if src:
            key = (r["spec"]["data"]["dataset"], src.get("copy"), tuple(sorted((src.get("sha256") or {}).items())))
            seen[key] = src
    out = []
    for (name, copy, sha), src in sorted(seen.items()):
        if copy == "webp-mosaics":
            sums = ", ".join(f"{k} {v[:12]}…" for k, v in sha)
            out.append(f"{name}: this project's lossless WebP copy (`{os.path.basename(src['path'])}/`, decoded "
                       f"arrays' sha256 {sums}), not the published archive (see its README)")
        else:
            out.append(f"{name}: {copy}" + (f" ({src['url']}, md5 {src['md5']})" if src.get("url") else ""))
    return out


def external_rows(raw: dict, budget: str, by_cell: dict, labels: dict, n_epochs: list[int]) -> list[str]:
    """Outside anchors (YAML `external`) of this budget next to our measured mean."""
    ext = [e for e in raw.get("external", []) if e.get("budget", "full") == budget]
    if not ext:
        return []
    out = ["Outside anchors (numbers from outside the paper for the same network and recipe):", "",
           "| Row | Method | Reference | Source | Measured | Measured − reference | Check |", "|---|---|---|---|---|---|---|"]
    how: dict[tuple, str] = {}
    for e in ext:
        recs = next((rs for (row, v, _, rate), rs in by_cell.items() if row == e["row"] and v == e["variant"]
                     and rate == 0.0), [])
        accs = _accs(recs, (raw.get("measure") or {}).get("last_k"))
        diff, check = "—", "not run"
        if accs:
            d = _stats(accs)[0] - e["value"]
            diff = f"{d:+.2f}"
            tol = e.get("tolerance")
            check = ("—" if tol is None else
                     f"within {tol:g} points or above" if d >= -tol else
                     f"**more than {tol:g} points below: find out why (augmentation, normalisation, weight decay, "
                     f"schedule, evaluation mode)**")
        out.append(f"| {labels[e['row']]} | {e['variant']} | {e['value']:.2f} | {e['source']} | {fmt_cell(accs)} "
                   f"| {diff} | {check} |")
        if accs:
            how[(e["row"], e["variant"])] = f"{labels[e['row']]} {e['variant']}: {computed_with(recs)}"
    return out + [""] + [f"Computed with: {'; '.join(how.values())}.", ""] * bool(how)


# how `provenance.engine.amp` computed a run (engine/options.py AMP)
ARITHMETIC = {"none": "float32", "bf16": "bf16 autocast (weights and optimizer in float32)"}


def computed_with(recs: list[dict]) -> str:
    """Seeds, epochs, device and arithmetic of a cell's runs (`provenance.engine`): an outside anchor is a recipe
    check, so a reader must see whether it ran in float32 or under bf16 autocast."""
    ok = [r for r in recs if r["status"] == "ok"]
    arith = set()
    for r in ok:
        engine = r["provenance"].get("engine")
        if not engine:
            arith.add("float32 (engine options not recorded)")
        elif engine.get("amp", "none") not in ARITHMETIC:
            raise ValueError(f"run {r['run_id']}: provenance.engine.amp={engine.get('amp')!r}; "
                             f"allowed: {sorted(ARITHMETIC)}")
        else:
            arith.add(ARITHMETIC[engine.get("amp", "none")])
    seeds = sorted({r["spec"]["seed"] for r in ok})
    epochs = sorted({len(r["history"]) for r in ok})
    return (f"seed{'s' * (len(seeds) > 1)} {','.join(map(str, seeds))}, {'/'.join(map(str, epochs))} "
            f"epoch{'s' * (epochs != [1])}, {', '.join(sorted(arith))}, "
            f"{'; '.join(sorted({r['provenance']['device'] for r in ok}))}")


# figures that read files beside the JSONs (per-sample loss snapshots, embeddings): redrawn whenever every file is
# there, else the committed PNG is kept if the same runs stand behind it (_FileInputs)
READS_FILES = {"loss_embedding", "loss_groups"}


def draw_cached(kind, t, budget, by_cell, labels, out_dir, devices, spec, results) -> str | None:
    """`figures.draw`, skipped when the PNG exists and was drawn from the same inputs: the figure's kind, spec,
    target, budget, labels and devices, every record it reads (their full JSON) and the sources of the drawing and
    of what analytic figures compute (benchmarks/report/figures.py, engine/, methods/). matplotlib and seaborn are then
    not even imported, so `report` with nothing new takes well under a second of figure work."""
    import hashlib
    import json

    from benchmarks.cache import DiskCache as _DiskCache, source_digest as _source_digest

    path = os.path.join(out_dir, f"{budget}-{kind}.png")
    h = hashlib.sha256()
    h.update(json.dumps([kind, spec, t.name, t.raw, budget, labels, devices], sort_keys=True, default=str).encode())
    for cell, recs in sorted(by_cell.items(), key=lambda kv: json.dumps(kv[0], default=str)):
        h.update(json.dumps([cell, recs], sort_keys=True, default=str).encode())
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures.py"), "rb") as f:
        h.update(f.read())
    h.update((_source_digest("engine") + _source_digest("methods")).encode())
    key = h.hexdigest()
    cache = _DiskCache("figures.json")
    seen = cache._load().get(os.path.abspath(path))
    if kind not in READS_FILES and seen == key and os.path.isfile(path):
        return path
    if kind not in READS_FILES and seen == f"{key}:nothing":  # the same inputs drew nothing last time
        return None
    from benchmarks.report.figures import draw

    side = _FileInputs(path, by_cell, results, [kind, spec, labels, budget]) if kind in READS_FILES else None
    if side and side.kept():
        return path
    rel = draw(kind, t, budget, by_cell, labels, out_dir, devices, spec=spec, results=results)
    cache.put(os.path.abspath(path), key if rel else f"{key}:nothing")
    if side and rel:
        side.record()
    return rel


class _FileInputs:
    """A figure drawn from files beside the JSONs: snapshots over the git size limit live under checkpoints/, in
    the clone that trained them only. A sidecar `<png>.inputs.json` (in git) names the figure's settings and the
    runs with the sha256 of the files the PNG was drawn from; a clone missing any of those files keeps the
    committed PNG while the same settings and runs with the same files stand behind it, instead of redrawing it
    from fewer runs or dropping it. Only a PNG drawn from every run's files is recorded; one drawn from fewer
    (other settings, other runs) removes the sidecar."""

    def __init__(self, path: str, by_cell: dict, results: str, figure: list):
        import hashlib
        import json

        from benchmarks.run.store import snapshots_present

        recs = [r for rs in by_cell.values() for r in rs if r["status"] == "ok" and r["extras"].get("snapshots")]
        self.path, self.side = path, f"{path}.inputs.json"
        self.figure = hashlib.sha256(json.dumps(figure, sort_keys=True, default=str).encode()).hexdigest()
        self.used = sorted([r["run_id"], r["extras"]["snapshots"].get("sha256")] for r in recs)
        self.complete = all(snapshots_present(results, r) for r in recs)

    def kept(self) -> bool:
        import json

        if self.complete or not self.used or not os.path.isfile(self.path):
            return False
        try:
            with open(self.side) as f:
                seen = json.load(f)
        except (OSError, ValueError):
            return False
        return seen.get("figure") == self.figure and seen.get("runs") == self.used

    def record(self) -> None:
        from benchmarks.run.store import write_atomic

        if self.complete:  # drawn from every run's files: what the PNG stands for
            write_atomic(self.side, {"figure": self.figure, "runs": self.used})
        elif os.path.exists(self.side):  # drawn from fewer files: the PNG no longer stands for the sidecar
            os.remove(self.side)


def render_target(t: Target, cells: dict[str, list[dict]], results: str, report_dir: str,
                  glance: list[dict] | None = None, reruns: dict | None = None,
                  rerun_seen: list[dict] | None = None) -> str:
    """The target's section; each claim's verdict per budget is also appended to `glance` (the summary), and
    each rerun that covers the target (`reruns`: label -> cells, see stability.py) to `rerun_seen`."""
    raw = t.raw
    out = [f"## {t.name}: {raw['title']}", "",
           f"Source: {raw.get('source', raw['artifact'])}. Published aggregation: {raw.get('aggregation', 'n/a')}.",
           ""]
    if raw.get("notes"):
        out += [raw["notes"].strip(), ""]
    published = {(p["row"], p["variant"], float(p.get("rate", 0.0))): p for p in raw.get("published", [])}

    def pub(row: str, variant: str, rate: float):
        return published.get((row, variant, float(rate)))

    labels = {r["id"]: r.get("label", r["id"]) for r in raw["rows"]}
    last_k = (raw.get("measure") or {}).get("last_k")
    scale_of = {r["id"]: r["scale_of"] for r in raw["rows"] if r.get("scale_of")}
    # a claim on another metric than test accuracy (Data Parameters' memorisation: training accuracy) shows it in the
    # Measured cell too, read the same way (last epoch, or the mean of the `measure`'s last k)
    other_metrics = sorted({c["metric"] for c in raw.get("claims", []) if c.get("metric", "test_acc") != "test_acc"})

    def pub_for(row: str, variant: str, rate: float):
        """(published entry, True when it is the paper's row that a CPU-sized row is shown next to for scale)."""
        own = pub(row, variant, rate)
        if own is not None or row not in scale_of:
            return own, False
        return pub(scale_of[row], variant, rate), True
    for budget in BUDGETS:
        if budget not in raw["budgets"]:
            continue
        plans = t.plans(budget)
        by_cell: dict[tuple, list[dict]] = {}
        plan_keys: dict[tuple, str] = {}
        for p in plans:
            key = (p.row, p.variant, p.compare_as, p.spec["data"]["noise"]["rate"])
            plan_keys.setdefault(key, cell_key(p.spec))
            by_cell.setdefault(key, cells.get(cell_key(p.spec), []))
        recs_all = [r for rs in by_cell.values() for r in rs]
        if not recs_all and budget != "full":
            continue
        seeds = sorted({r["spec"]["seed"] for r in recs_all})
        devices = _devices(recs_all)
        epochs = sorted({p.spec["recipe"]["epochs"] for p in plans})
        full_text = " (the study's full setting)" if raw["paper"] == "ext" else " (the paper's settings)"
        out += [f"### Budget `{budget}`" + (full_text if budget == "full" else ""), "",
                f"Seeds run: {', '.join(map(str, seeds)) or 'none'}; device: {'; '.join(devices) or 'n/a'}; "
                f"epochs: {', '.join(map(str, epochs))}. "
                + (f"Measured is each run's mean test accuracy (%) over its last {last_k} epochs (the target's "
                   f"`measure`: its learning rate is constant, so the last epoch alone jumps from epoch to epoch); "
                   if last_k else "Measured is the test accuracy (%) after the last epoch; ")
                + "the best epoch's is shown for reference only (chosen on the test set, so optimistic)."
                + "".join(f" The claims compare `{m}`, read the same way and shown after the test accuracy."
                          for m in other_metrics),
                ""]
        sources = data_sources(recs_all)
        if sources:
            out += ["Data: " + "; ".join(sources) + ".", ""]
        reason = (raw["budgets"][budget] or {}).get("reason")
        if budget == "smoke":
            out += ["*Not the paper's setting: these numbers say that the pipeline runs, not whether the paper "
                    "reproduces; no verdicts at this budget.*", ""]
        elif budget != "full":
            full_epochs = sorted({p.spec["recipe"]["epochs"] for p in t.plans("full")})
            out += [f"*Not the paper's setting: {', '.join(map(str, epochs))} epochs instead of "
                    f"{', '.join(map(str, full_epochs))}" + (f" ({reason})" if reason else "") + ". "
                    "'Published' is the paper's full-budget number, shown for scale, not as the same setting; the "
                    "claim verdicts below are for this budget's runs.*", ""]
        unplanned = [r for r in raw["rows"] if r.get("not_planned")]
        if plans or unplanned:
            out += ["| Row | Method | Published | Measured | Measured − published | Best epoch (test-selected) "
                    "| Teacher (measured) | Time per run |", "|---|---|---|---|---|---|---|---|"]
        else:
            out = out[:-2] + ["Analytic: this target trains nothing; its figures are computed from the suite's code.", ""]
        for (row, variant, comp, rate), recs in by_cell.items():
            entry, for_scale = pub_for(row, comp, rate)
            pub_s = ("—" if entry is None else f"{entry['value']:.2f}"
                     + (f" ± {entry['std']:.2f}" if entry.get("std") is not None else "")
                     + (" (alignment uncertain)" if entry.get("uncertain") else "")
                     + (f" (the paper's {labels[scale_of[row]]}; for scale)" if for_scale else ""))
            accs = _accs(recs, last_k)
            diff = ("—" if (entry is None or not accs or entry.get("uncertain") or for_scale)
                    else f"{_stats(accs)[0] - entry['value']:+.2f}")
            ok = [r for r in recs if r["status"] == "ok"]
            teacher = [x for r in ok if (x := r["extras"].get("teacher_final_test_acc")) is not None]
            wall = [r["provenance"]["wall_seconds"] for r in ok]
            resumed = [e for r in ok if (e := r["provenance"].get("engine", {}).get("resumed_from_epoch"))]
            took = (f"{sum(wall) / len(wall):.0f} s" if wall else "—") + (  # a resumed run's wall is its last process's
                f" ({len(resumed)} of {len(wall)} runs resumed, at epoch {', '.join(map(str, resumed))}: "
                "the time of the last process only)" if resumed else "")
            meas = fmt_cell(accs)
            for m in other_metrics:
                vals = list(_by_seed(recs, last_k, m).values())
                if vals:
                    meas += f"; {m}: {fmt_cell(vals)}"
            at = raw.get("read_at_epoch")
            if at and accs:  # e.g. Data Parameters' README reads its noisy runs at epoch 84 (of 120)
                e, said = read_epoch(at, ok[0]["spec"]["recipe"]["epochs"])
                vals = [h["test_acc"] for r in ok for h in r["history"] if h["epoch"] == e]
                meas += f"; {said}: {fmt_cell(vals) if vals else 'not reached'}"
            bad = [r["status"] for r in recs if r["status"] != "ok"]
            if bad:
                meas += f" [{', '.join(sorted(set(bad)))}: {len(bad)}]"
            teachers_used = {r["extras"].get("teacher_checkpoint_sha256") for r in ok} - {None}
            if len(teachers_used) > len({r["spec"]["seed"] for r in ok}):
                meas += " [students of one seed used different teacher weights: a teacher was retrained]"
            name = variant if variant == comp else f"{variant} (as {comp})"
            rowname = labels[row] + (f", noise {rate:g}" if rate else "")
            best = fmt_cell([r["best_test_acc"] for r in ok]) if accs else "—"
            out.append(f"| {rowname} | {name} | {pub_s} | {meas} | {diff} | {best} "
                       f"| {fmt_cell(teacher) if teacher else '—'} | {took} |")
        quoted = raw.get("published_only") or {}
        for p in raw.get("published", []):  # baselines the paper quotes and this suite never runs
            if p["variant"] in quoted:
                rate = float(p.get("rate", 0.0))
                rowname = labels[p["row"]] + (f", noise {rate:g}" if rate else "")
                unc = " (alignment uncertain)" if p.get("uncertain") else ""
                out.append(f"| {rowname} | {quoted[p['variant']]} | {p['value']:.2f}{unc} | published only: "
                           f"not a method of this suite | — | — | — | — |")
        for row in unplanned:  # paper rows the suite does not build: their published values and the reason
            entries = [p for p in raw.get("published", []) if p["row"] == row["id"]] or [None]
            for p in entries:
                value = "—" if p is None else f"{p['value']:.2f}"
                out.append(f"| {labels[row['id']]} | {'—' if p is None else p['variant']} | {value} | not planned: "
                           f"{row['not_planned'].strip()} | — | — | — | — |")
        out.append("")
        sized = [r for r in raw["rows"] if r.get("reason") and any(p.row == r["id"] for p in plans)]
        if sized:
            out += ["Rows sized for a 2-core CPU (not the paper's setting; the paper's numbers are shown next to "
                    "them for scale only):", ""]
            out += [f"- {labels[r['id']]}: {r['reason'].strip()}" for r in sized] + [""]
        out += external_rows(raw, budget, by_cell, labels, epochs)
        out += saturation_lines(by_cell, labels)
        claims = raw.get("claims", []) if budget != "smoke" and (budget == "full" or recs_all) else []
        if claims:
            pub_head = "Published gain" if budget == "full" else "Published gain (full budget)"
            out += [f"| Claim | Variant | {pub_head} | Measured gain [95% interval] | Verdict (budget `{budget}`) |",
                    "|---|---|---|---|---|"]
            trends: dict[int, list] = {}  # claim index -> (rate, method seed -> acc, baseline seed -> acc)
            for c, row, v, comp, rate, recs, base in claim_cells(raw, by_cell):
                (pm, scaled), (pb, _) = pub_for(row, comp, rate), pub_for(row, t.compare_as(c["baseline"]), rate)
                metric = c.get("metric", "test_acc")
                # a value whose row alignment the source lost gives no published gain; published values are test
                # accuracies, so a claim on another metric has none
                pg = (pm["value"] - pb["value"] if pm and pb and metric == "test_acc"
                      and not (pm.get("uncertain") or pb.get("uncertain")) else None)
                a, b = _by_seed(recs, last_k, metric), _by_seed(base, last_k, metric)
                trends.setdefault(raw["claims"].index(c), []).append((rate, a, b))
                iv = gain_interval(a, b)
                meas = interval_text(iv) if iv else (single_seed_text(a, b) or "—")
                text = claim_text(c, rate, raw)
                pg_s = "—" if pg is None else f"{pg:+.2f}" + (
                    f" (the paper's {labels[scale_of[row]]}; for scale)" if scaled else "")
                # a CPU-sized row's verdict never tests the paper's gain of another backbone
                said = verdict(None if scaled else pg, iv, len(a), len(b))
                out.append(f"| {text} | {v} vs {c['baseline']} | {pg_s} | {meas} | {said} |")
                if glance is not None:
                    glance.append({"target": t.name, "paper": raw["paper"], "budget": budget, "claim": text,
                                   "verdict": glance_word(said), "measured": meas, "published": pg_s,
                                   "epochs": sorted({p.spec["recipe"]["epochs"] for p in plans if p.row == row}),
                                   "seeds": seeds_text(a, b)})
            for i, points in trends.items():
                c = raw["claims"][i]
                if not c.get("trend"):
                    continue
                iv = trend_interval(points)
                paired = sorted({k for _, a, b in points for k in set(a) & set(b)})
                n_a, n_b = sum(len(a) for _, a, _ in points), sum(len(b) for *_, b in points)
                meas = interval_text(iv)
                said = verdict(None, iv, n_a, n_b) if iv or not (n_a and n_b) else \
                    "too few runs for a verdict (need 3+ paired seeds over 2+ noise rates)"
                out.append(f"| {c['trend']} | {c['method']} vs {c['baseline']}: gain's slope over the noise rate | — "
                           f"| {meas} | {said} |")
                if glance is not None:
                    glance.append({"target": t.name, "paper": raw["paper"], "budget": budget, "claim": c["trend"],
                                   "verdict": glance_word(said), "measured": meas, "published": "—",
                                   "epochs": sorted({p.spec["recipe"]["epochs"] for p in plans if p.row == c["row"]}),
                                   "seeds": ",".join(map(str, paired))})
            out.append("")
            out += rerun_lines(t, budget, plan_keys, by_cell, reruns or {}, rerun_seen)
        for fig in raw.get("figures", []):
            kind = figure_kind(fig)
            rel = None
            if recs_all or kind in ANALYTIC_FIGURES:
                rel = draw_cached(kind, t, budget, by_cell, labels, os.path.join(results, FIG_DIR, t.name), devices,
                                  spec=fig if isinstance(fig, dict) else {}, results=results)
            if rel:
                out += [f"![{kind} ({budget})]({os.path.relpath(rel, report_dir)})", ""]
            else:
                when = f", epochs {fig['epochs']}" if isinstance(fig, dict) and fig.get("epochs") else ""
                out += [f"*Figure `{kind}`{when}: not drawn yet (no finished run with its data at this budget). "
                        f"It will show {FIGURES[kind]}.*", ""]
    return "\n".join(out)


PAPER_NAMES = {"blcl": "BLCL", "dataparams": "Data Parameters", "superloss": "SuperLoss", "dcd": "DCD",
               "ext": "Our own studies"}


def claims_at_a_glance(glance: list[dict], after_totals: list[str] = ()) -> list[str]:
    """The report's first section: one line per claim (per noise rate) of the four papers and of our studies, with
    its verdict and measured gain per budget that has runs (a claim with none says "not run"), the published gain
    and a link to its target's section."""
    out = ["## Claims at a glance", "",
           "One line per claim (noise rates separately). Verdicts per budget run: *reproduced* (the measured gain's "
           "95% interval over seeds lies above zero), *not reproduced* (it contains zero), *contradicted* (it lies "
           "below zero), *too few runs* (fewer than 2 seeds a side), *not run*. A reduced budget or a CPU-sized row "
           "is not the paper's setting: its verdict is about that run, and the published gain is the paper's "
           "full-budget one, shown for scale.", ""]
    lines: dict[tuple, list[dict]] = {}
    for g in glance:
        lines.setdefault((g["paper"], g["target"], g["claim"]), []).append(g)
    counts: dict[str, int] = {}
    for entries in lines.values():
        ran = [g for g in entries if g["verdict"] != "not run"]
        for g in ran or entries[:1]:
            counts[g["verdict"]] = counts.get(g["verdict"], 0) + 1
    out += ["Totals (claim x budget run): " + ", ".join(
        f"{n} {w}" for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) + ".", ""]
    out += list(after_totals)
    for paper, name in PAPER_NAMES.items():
        keys = [k for k in lines if k[0] == paper]
        if not keys:
            continue
        out += [f"### {name}", "", "| Claim | Verdict per budget run: measured gain [95% interval] | Published gain "
                "| Target |", "|---|---|---|---|"]
        for key in keys:
            entries = lines[key]
            ran = [g for g in entries if g["verdict"] != "not run"]
            cells = [f"`{g['budget']}` ({', '.join(map(str, g['epochs']))} ep, seeds "
                     f"{g['seeds']}): **{g['verdict']}** {g['measured']}" for g in ran]
            full = next((g for g in entries if g["budget"] == "full"), entries[0])
            out.append(f"| {key[2]} | {'; '.join(cells) or 'not run'} | {full['published']} | "
                       f"[{key[1]}](#{key[1]}) |")
        out.append("")
    return out


def published_consistency(targets: dict[str, Target]) -> list[str]:
    """Lines flagging published numbers that two tables give for the same run (same spec at the full budget):
    equal (a reused result, e.g. Table VI's ERM-CE is Table I's) or different (an internal inconsistency)."""
    by_cell: dict[str, list[tuple[str, dict]]] = {}
    for t in targets.values():
        plans = [p for p in t.plans("full") if p.spec["seed"] == t.raw["seeds"][0]] or t.plans("full")
        for p in t.raw.get("published", []):
            rate = float(p.get("rate", 0.0))
            match = [q for q in plans if q.row == p["row"] and q.variant == p["variant"]
                     and q.spec["data"]["noise"]["rate"] == rate]
            if match:
                by_cell.setdefault(cell_key(match[0].spec), []).append((t.name, p))
    out = []
    for entries in by_cell.values():
        if len({name for name, _ in entries}) < 2:
            continue
        values = {p["value"] for _, p in entries}
        where = "; ".join(f"{name} {p['source']}: {p['value']:.2f}" for name, p in entries)
        verdict = "**inconsistent**" if len(values) > 1 else "consistent (the same result reused)"
        out.append(f"| {entries[0][1]['variant']} | {where} | {verdict} |")
    if not out:
        return []
    return (["## Published values that several tables give for the same run", "",
             "| Method | Where | Consistency |", "|---|---|---|"] + out + [""])


def write_report(targets: dict[str, Target], results: str, path: str) -> str:
    cells, skipped = load_records(results)
    report_dir = os.path.dirname(os.path.abspath(path))
    parts = ["# clrepro reproduction report", "",
             "Generated from the result JSONs under `results/runs/` by `./reproduce.sh report` (also after every "
             "run); do not edit by hand. Every number below comes from a run recorded there, with its budget, "
             "seeds and device; a cell never run says \"not run\". Verdicts compare the measured gain of a method "
             "over its baseline with the published gain, using a 95% t interval over seeds: paired by seed when "
             "both sides ran the same seeds (same initial weights, batch order and labels per seed), else Welch. "
             "Published values are the papers' own; their sources are in `benchmarks/targets/*.yaml`.", ""]
    parts += ["| Target | Artifact | Full-budget runs done |", "|---|---|---|"]
    for t in targets.values():
        plans = t.plans("full")
        done = sum(1 for p in plans if any(r["spec"]["seed"] == p.spec["seed"] and r["status"] in ("ok", "diverged")
                                           for r in cells.get(cell_key(p.spec), [])))
        parts.append(f"| [{t.name}](#{t.name}) | {t.raw['paper'].upper()} {t.raw['artifact']} | {done} / {len(plans)} |")
    parts.append("")
    if skipped:
        parts += ["**Result files skipped** (unreadable or breaking the schema; the runner archives and reruns them):", ""]
        parts += [f"- `{os.path.relpath(p, report_dir)}`: {why}" for p, why in sorted(skipped.items())] + [""]
    parts += published_consistency(targets)
    glance: list[dict] = []
    reruns, rerun_seen = load_reruns(results), []
    sections = []
    for t in targets.values():
        sections += [f'<a id="{t.name}"></a>', "",
                     render_target(t, cells, results, report_dir, glance, reruns, rerun_seen), ""]
    parts[2:2] = claims_at_a_glance(glance, rerun_summary(rerun_seen))
    parts += sections
    parts += [performance_section(results)]  # from results/bench/*.json (./reproduce.sh bench)
    text = "\n".join(parts).rstrip() + "\n"
    os.makedirs(report_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=report_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return text


__all__ = ["write_report", "load_records", "cell_key", "gain_interval", "verdict", "fmt_cell", "measured"]
