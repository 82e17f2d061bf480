"""Targets: one YAML file per paper artifact (benchmarks/targets/<paper>-<artifact>.yaml).

A target holds the run matrix (rows of backbone x dataset x noise rates, each with method variants, times
seeds), the training recipes, the budgets (`full` = the paper's settings), the published numbers with their
source, the claims to give a verdict on, and the figures to draw. Everything is validated before anything runs:
a bad key or value raises UsageError naming it and what is allowed.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field

import yaml

from benchmarks.errors import UsageError
from benchmarks.targets.spec import flat, run_id, versioned

TARGET_DIR = os.path.dirname(os.path.abspath(__file__))  # the YAMLs live beside their loader
PAPERS = ("blcl", "dataparams", "superloss", "dcd", "ext")  # ext: studies of our own, beyond the papers
BUDGETS = ("full", "reduced", "smoke")
FIGURES = {  # kind -> what it shows (drawn by benchmarks/report/figures.py; the report's placeholder until runs exist)
    "loss_curves": "train CE and test loss per epoch per variant, mean over seeds with a +-1 sd band",
    "quartile_shares": "share of the summed training loss carried by each difficulty quartile per epoch, stacked",
    "noise_curves": "test accuracy against the label-noise rate per method (last and best epoch), seed spread",
    "sigma_clean_noisy": "Data Parameters' mean instance sigma of clean vs corrupted samples per epoch, per noise rate",
    "loss_embedding": "every training example as a dot on a fixed 2-D embedding, shaded by its loss at chosen epochs",
    "r_sweep": "final test accuracy and alpha (the hardest quarter's loss share) against BLCL's r, per reading",
    "acc_curves": "train, validation and test accuracy per epoch per variant",
    "class_sigma": "Data Parameters' class sigma per epoch for four fixed classes, mean +- sd over seeds",
    "loss_groups": "mean per-sample loss per epoch of easy, hard (clean) and noisy samples",
    "dcd_window": "DCD's difficulty window (rank fractions) per epoch",
    "lr_schedules": "the learning rate per epoch of each named schedule (no training)",
    "superloss_surface": "SuperLoss's confidence-aware loss over (loss, sigma), sigma* and SL (no training)",
}
ANALYTIC_FIGURES = {"lr_schedules", "superloss_surface"}  # drawn from code alone, never from runs
FIGURE_KEYS = {"kind", "epochs", "schedules", "lr", "lam", "tau", "split_epoch"}  # a kind, or {kind, epochs: [...], ...}
TOP_KEYS = {"name", "paper", "artifact", "title", "source", "aggregation", "seeds", "variants", "recipes", "rows",
            "budgets", "published", "claims", "figures", "notes", "published_only", "read_at_epoch", "external",
            "include", "include_published", "measure"}
# `measure: {last_k: k}`: a run's measured accuracy is the mean test accuracy of its last k epochs (the report names
# it); every target whose recipes keep the learning rate constant declares one (tests/test_report.py).
# `include: <target>`: that target's variants and recipes are available by name (a local entry of the same name must
# be identical), its seeds and budgets are the defaults, and a row `{use: <its row id>, ...}` is its row with the
# keys given here replaced (e.g. `variants`; `key: null` removes one). One place per recipe: a figure target, or a researcher's own target,
# names Table I's rows instead of copying them, so the runs stay the same runs. `include_published: true` also
# shows the included target's published numbers for the rows used (a researcher's target beside the paper's).
ROW_KEYS = {"id", "label", "model", "dataset", "noise", "recipe", "variants", "val", "pixel_noise", "not_planned",
            "seeds", "scale_of", "reason"}
# A row sized for a 2-core CPU next to the paper's rows (issue 19, e.g. `cpu-cifar10`): `seeds` overrides the
# target's, `scale_of` names the paper's row whose published numbers it is shown next to (for scale: a different
# backbone or budget, so no measured-minus-published difference and no published gain in its verdicts), `reason`
# says why this backbone and these epochs.
VARIANT_RESERVED = ("method", "compare_as", "roles")  # the other keys of a variant are the method's parameters
ROLE_KEYS = {"model", "from", "recipe"}  # a role restored from another run: its model, that run's method, recipe
RECIPE_KEYS = {"epochs", "batch_size", "optimizer", "schedule", "augment", "normalize"}
BUDGET_KEYS = {"epochs", "train_subset", "test_subset", "schedule", "val_size", "rates", "reason"}  # rates: a subset of the rows'
PUBLISHED_KEYS = {"row", "variant", "rate", "value", "std", "source", "uncertain"}  # rate: the noise rate (default 0)
CLAIM_KEYS = {"row", "method", "baseline", "text", "metric", "trend"}
# a claim's `metric`: the accuracy it compares (test by default; train: memorisation of random labels); `trend`: the
# text of a second verdict, on how the gain changes with the noise rate ("by more as the noise grows")
CLAIM_METRICS = ("test_acc", "train_acc")
# outside anchors (issue 18): another paper's or implementation's number for one of our cells, e.g. He et al.'s
# ResNet-20 on CIFAR-10; `tolerance`: how far below it a measured mean may land before the report asks why
EXTERNAL_KEYS = {"row", "variant", "value", "source", "budget", "tolerance"}


@dataclass(frozen=True)
class Plan:
    """One run of a target: its spec and where it sits in the target's table."""

    target: str
    row: str
    variant: str
    compare_as: str
    spec: dict = field(hash=False)

    @property
    def run_id(self) -> str:
        return run_id(self.spec)

    def matches(self, pattern: re.Pattern) -> bool:
        text = f"{self.run_id} target={self.target} row={self.row} variant={self.variant} {flat(self.spec)}"
        return pattern.search(text) is not None


@dataclass
class Target:
    raw: dict
    path: str
    cached: dict | None = field(default=None, repr=False, compare=False)  # budget -> default-seed plans (catalog)

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def datasets(self) -> list[str]:
        return sorted({r["dataset"] for r in self.raw["rows"] if "dataset" in r})

    def variant(self, name: str) -> dict:
        return self.raw["variants"][name]

    def compare_as(self, variant: str) -> str:
        return self.raw["variants"][variant].get("compare_as", variant)

    def plans(self, budget: str = "full", seeds: list[int] | None = None) -> list[Plan]:
        if budget not in self.raw["budgets"]:
            raise UsageError(f"target {self.name!r} has no budget {budget!r}; allowed: {sorted(self.raw['budgets'])}")
        if seeds is None and self.cached is not None and budget in self.cached:
            return list(self.cached[budget])
        over = self.raw["budgets"][budget] or {}
        explicit = None if seeds is None else list(seeds)
        out = []
        for row in self.raw["rows"]:
            if row.get("not_planned"):  # a paper row this suite does not build (the reason is in the YAML)
                continue
            seeds = explicit if explicit is not None else list(row.get("seeds", self.raw["seeds"]))
            recipe = self._recipe(row["recipe"], over)
            model = _model_spec(row["model"])
            for rate in row["noise"]["rates"]:
                if "rates" in over and rate not in over["rates"]:  # e.g. a smoke budget runs two noise rates
                    continue
                data = {"dataset": row["dataset"],
                        "noise": {"kind": row["noise"]["kind"] if rate else "none", "rate": float(rate),
                                  **({"drop_corrupted": True} if row["noise"].get("drop_corrupted") else {})},
                        "train_subset": over.get("train_subset"), "test_subset": over.get("test_subset")}
                if row.get("pixel_noise"):  # DCD Table II: Gaussian noise (alpha, 0-255 units) on the raw images
                    data["pixel_noise"] = float(row["pixel_noise"])
                if row.get("val"):  # only when set, so the ids of runs without a validation split never change
                    data.update(val_size=over.get("val_size", row["val"]["size"]), val_seed=row["val"].get("seed", 0))
                for v in row["variants"]:
                    method = _method_spec(self.variant(v))
                    for seed in seeds:
                        spec = {"budget": budget, "data": data, "method": method, "model": model,
                                "recipe": recipe, "seed": int(seed)}
                        roles = self._roles(self.variant(v), row, over, spec)
                        if roles:
                            spec["roles"] = roles
                        out.append(Plan(self.name, row["id"], v, self.compare_as(v), versioned(spec)))
        return out

    def _recipe(self, name: str, over: dict) -> dict:
        recipe = dict(self.raw["recipes"][name])
        if "epochs" in over and "schedule" not in over and over["epochs"] != recipe["epochs"]:
            recipe["schedule"] = scale_schedule(recipe["schedule"], recipe["epochs"], over["epochs"])
        recipe.update({k: v for k, v in over.items() if k in RECIPE_KEYS})
        return recipe

    def _roles(self, variant: dict, row: dict, over: dict, spec: dict) -> dict:
        """Per-role blocks: a role restored from another run (`from`: that run's method, default ERM) gets its
        model and the full spec of that run (same data, noise, seed and budget), which enters the run id."""
        out = {}
        for role, block in (variant.get("roles") or {}).items():
            tmodel = _model_spec(block.get("model", row["model"]))
            tspec = {**spec, "method": _method_spec(block.get("from", {"method": "erm"})), "model": tmodel,
                     "recipe": self._recipe(block.get("recipe", row["recipe"]), over)}
            out[role] = {"model": tmodel, "from_run": versioned(tspec)}
        return out


def teacher_plans(plan: Plan) -> dict[str, Plan]:
    """role -> the plan of the run whose checkpoint the role is restored from."""
    return {role: Plan(plan.target, plan.row, role, role, block["from_run"])
            for role, block in plan.spec.get("roles", {}).items() if "from_run" in block}


def _method_spec(variant: dict) -> dict:
    """The method's name plus every hyper-parameter with its default filled in."""
    from methods import config_dict, make_config  # torch: only when specs are built, not from the catalog
    params = {k: x for k, x in variant.items() if k not in VARIANT_RESERVED}
    return {"name": variant["method"], **config_dict(make_config(variant["method"], params))}


def _model_spec(model: dict) -> dict:
    """The model's name plus every option with its default filled in, so defaults are part of the run id."""
    from models import model_entry
    entry = model_entry(model["name"])
    sig = inspect.signature(entry.fn)
    full = {p: sig.parameters[p].default for p in entry.options()}
    full.update({k: v for k, v in model.items() if k != "name"})
    return {"name": model["name"], **{k: list(v) if isinstance(v, tuple) else v for k, v in sorted(full.items())}}


def _keys(where: str, d, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(d, dict):
        raise UsageError(f"{where}: expected a mapping, got {type(d).__name__}")
    bad = sorted(set(d) - allowed)
    if bad:
        raise UsageError(f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(d))
    if missing:
        raise UsageError(f"{where}: missing key {missing[0]!r}")


def validate(raw: dict, path: str) -> None:
    """Check a target; raise UsageError naming the bad key or value (also for values of the wrong type)."""
    try:
        _validate(raw, path)
    except UsageError:
        raise
    except (TypeError, AttributeError, KeyError, ValueError, IndexError) as e:
        raise UsageError(f"{os.path.basename(path)}: malformed target ({type(e).__name__}: {e})") from None


def _dry_build(where: str, model: dict, kind: str) -> None:
    """Build the model on the meta device (no memory, no compute), so bad option values fail now."""
    import torch

    from models import create_model

    kw = {k: v for k, v in model.items() if k != "name"}
    shape, vocab = ((1, 28, 28), None) if kind == "image" else ((16,), 10)
    try:
        with torch.device("meta"):
            create_model(model["name"], 2, shape, vocab, **kw)
    except (TypeError, ValueError, KeyError) as e:
        raise UsageError(f"{where}.model: {model!r} cannot be built: {e}") from None


def _validate(raw: dict, path: str) -> None:
    from data import NOISE_KINDS, dataset_kind, list_datasets  # torch: only when a target is validated
    from models import model_entry
    w = os.path.basename(path)
    _keys(w, raw, TOP_KEYS, {"name", "paper", "artifact", "title", "seeds", "variants", "recipes", "rows", "budgets"})
    for key, typ in (("variants", dict), ("recipes", dict), ("budgets", dict), ("rows", list), ("seeds", list),
                     ("published", list), ("claims", list), ("figures", list)):
        if key in raw and not isinstance(raw[key], typ):
            raise UsageError(f"{w}: {key} must be a {'mapping' if typ is dict else 'list'}")
    if "measure" in raw:
        _keys(f"{w}: measure", raw["measure"], {"last_k"}, {"last_k"})
        k = raw["measure"]["last_k"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UsageError(f"{w}: measure.last_k must be a number of epochs >= 1, got {k!r}")
    at = raw.get("read_at_epoch")
    if isinstance(at, dict):  # {epoch: 84, of: 120}: a run of another length is read at the same fraction
        _keys(f"{w}: read_at_epoch", at, {"epoch", "of"}, {"epoch", "of"})
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in at.values()) \
                or at["epoch"] > at["of"]:
            raise UsageError(f"{w}: read_at_epoch needs epoch and of as epoch numbers >= 1 with epoch <= of, "
                             f"got {at!r}")
    elif at is not None and (not isinstance(at, int) or isinstance(at, bool) or at < 1):
        raise UsageError(f"{w}: read_at_epoch must be an epoch number >= 1 or {{epoch, of}}, got {at!r}")
    if raw["paper"] not in PAPERS:
        raise UsageError(f"{w}: paper {raw['paper']!r}; allowed: {', '.join(PAPERS)}")
    if not re.fullmatch(rf"{raw['paper']}-[a-z0-9-]+", raw["name"]):
        raise UsageError(f"{w}: name {raw['name']!r} must read <paper>-<artifact>, e.g. {raw['paper']}-table1")
    if not raw["seeds"] or not all(isinstance(s, int) for s in raw["seeds"]):
        raise UsageError(f"{w}: seeds must be a non-empty list of integers")
    for name, v in raw["variants"].items():
        _keys(f"{w}: variants.{name}", v, set(v) | {"method"} if isinstance(v, dict) else set(), {"method"})
        try:
            _method_spec(v)
        except (KeyError, ValueError, TypeError) as e:
            msg = e.args[0] if e.args else e
            if isinstance(e, KeyError) and str(msg).startswith("unknown method"):
                msg = f"{msg} (a method of your own: load its file with --plugin; README: Benchmark your own method)"
            raise UsageError(f"{w}: variants.{name}: {msg}") from None
        _validate_roles(f"{w}: variants.{name}", v, raw)
    for name, r in raw["recipes"].items():
        _check_recipe(f"{w}: recipes.{name}", r, RECIPE_KEYS, {"epochs", "batch_size", "optimizer", "schedule"})
    for b, over in raw["budgets"].items():
        if b not in BUDGETS:
            raise UsageError(f"{w}: budget {b!r}; allowed: {', '.join(BUDGETS)}")
        _check_recipe(f"{w}: budgets.{b}", over or {}, BUDGET_KEYS, set())
    if "full" not in raw["budgets"]:
        raise UsageError(f"{w}: budgets must include 'full' (the paper's settings)")
    ids = set()
    for i, row in enumerate(raw["rows"]):
        where = f"{w}: rows[{i}]"
        if isinstance(row, dict) and "not_planned" in row:
            _keys(where, row, {"id", "label", "not_planned", "variants"}, {"id", "not_planned"})
            if not isinstance(row["not_planned"], str) or not row["not_planned"].strip():
                raise UsageError(f"{where}: not_planned must say why the row is not built")
            if row["id"] in ids:
                raise UsageError(f"{where}: id {row['id']!r} must be unique within the target")
            ids.add(row["id"])
            continue
        _keys(where, row, ROW_KEYS, {"id", "model", "dataset", "noise", "recipe", "variants"})
        if not isinstance(row["id"], str) or row["id"] in ids:
            raise UsageError(f"{where}: id {row['id']!r} must be a string, unique within the target")
        ids.add(row["id"])
        _keys(f"{where}.model", row["model"], {"name"} | set(row["model"]), {"name"})
        try:
            entry = model_entry(row["model"]["name"])
        except KeyError as e:
            raise UsageError(f"{where}.model: {e.args[0]}") from None
        bad = sorted(set(row["model"]) - {"name"} - entry.options())
        if bad:
            raise UsageError(f"{where}.model: {entry.name} has no option {bad[0]!r}; allowed: {sorted(entry.options())}")
        if row["dataset"] not in list_datasets():
            raise UsageError(f"{where}: unknown dataset {row['dataset']!r}; known: {', '.join(list_datasets())}")
        if entry.input_kind != dataset_kind(row["dataset"]):
            raise UsageError(f"{where}: model {entry.name} reads {entry.input_kind} data, {row['dataset']} is "
                             f"{dataset_kind(row['dataset'])}")
        _keys(f"{where}.noise", row["noise"], {"kind", "rates", "drop_corrupted"}, {"kind", "rates"})
        if row["noise"]["kind"] not in NOISE_KINDS:
            raise UsageError(f"{where}.noise: kind {row['noise']['kind']!r}; allowed: {', '.join(NOISE_KINDS)}")
        rates = row["noise"]["rates"]
        if not isinstance(rates, list) or not rates or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r <= 1 for r in rates):
            raise UsageError(f"{where}.noise: rates must be a list of numbers in [0, 1], got {rates!r}")
        if row["noise"]["kind"] == "none" and any(rates):
            raise UsageError(f"{where}.noise: kind 'none' with a non-zero rate {rates!r}; name the kind "
                             f"({', '.join(k for k in NOISE_KINDS if k != 'none')})")
        if "pixel_noise" in row and (not isinstance(row["pixel_noise"], (int, float)) or
                                     isinstance(row["pixel_noise"], bool) or not 0 <= row["pixel_noise"] <= 255):
            raise UsageError(f"{where}: pixel_noise must be a number in [0, 255] (the Gaussian noise's standard "
                             f"deviation in pixel units), got {row['pixel_noise']!r}")
        if "val" in row:
            _keys(f"{where}.val", row["val"], {"size", "seed"}, {"size"})
            if not all(isinstance(row["val"].get(k, 0), int) and not isinstance(row["val"].get(k, 0), bool)
                       and row["val"].get(k, 0) >= 0 for k in ("size", "seed")) or row["val"]["size"] < 1:
                raise UsageError(f"{where}.val: size must be a positive integer and seed an integer >= 0, "
                                 f"got {row['val']!r}")
        if not isinstance(row["variants"], list) or not row["variants"]:
            raise UsageError(f"{where}: variants must be a non-empty list")
        _dry_build(where, row["model"], entry.input_kind)
        if row["recipe"] not in raw["recipes"]:
            raise UsageError(f"{where}: unknown recipe {row['recipe']!r}; known: {', '.join(raw['recipes'])}")
        for v in row["variants"]:
            if v not in raw["variants"]:
                raise UsageError(f"{where}: unknown variant {v!r}; known: {', '.join(raw['variants'])}")
        if "seeds" in row and (not isinstance(row["seeds"], list) or not row["seeds"] or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in row["seeds"])):
            raise UsageError(f"{where}: seeds must be a non-empty list of integers, got {row['seeds']!r}")
        if "reason" in row and (not isinstance(row["reason"], str) or not row["reason"].strip()):
            raise UsageError(f"{where}: reason must be a non-empty string")
    row_ids = [r["id"] for r in raw["rows"] if isinstance(r, dict) and "id" in r]
    for i, row in enumerate(raw["rows"]):
        if "scale_of" in row and (row["scale_of"] not in row_ids or row["scale_of"] == row["id"]):
            raise UsageError(f"{w}: rows[{i}]: scale_of {row['scale_of']!r} must name another row of the target; "
                             f"rows: {', '.join(x for x in row_ids if x != row['id'])}")
    names = set(raw["variants"]) | {v.get("compare_as", k) for k, v in raw["variants"].items()}
    quoted = raw.get("published_only") or {}  # baselines a paper quotes that this suite never runs: name -> label
    if not isinstance(quoted, dict) or set(quoted) & names:
        raise UsageError(f"{w}: published_only must map names that are not variants to labels, got {quoted!r}")
    for i, p in enumerate(raw.get("published", [])):
        _keys(f"{w}: published[{i}]", p, PUBLISHED_KEYS, {"row", "variant", "value", "source"})
        if not isinstance(p["value"], (int, float)) or isinstance(p["value"], bool):
            raise UsageError(f"{w}: published[{i}].value {p['value']!r} must be a number")
        if p["row"] not in ids or p["variant"] not in names | set(quoted):
            raise UsageError(f"{w}: published[{i}] names row {p['row']!r} / variant {p['variant']!r}; "
                             f"rows: {sorted(ids)}, variants: {sorted(names | set(quoted))}")
    if not isinstance(raw.get("external", []), list):
        raise UsageError(f"{w}: external must be a list")
    for i, p in enumerate(raw.get("external", [])):
        _keys(f"{w}: external[{i}]", p, EXTERNAL_KEYS, {"row", "variant", "value", "source"})
        for k in ("value", "tolerance"):
            if k in p and (not isinstance(p[k], (int, float)) or isinstance(p[k], bool)):
                raise UsageError(f"{w}: external[{i}].{k} {p[k]!r} must be a number")
        if p["row"] not in ids or p["variant"] not in raw["variants"]:
            raise UsageError(f"{w}: external[{i}] names row {p['row']!r} / variant {p['variant']!r}; "
                             f"rows: {sorted(ids)}, variants: {sorted(raw['variants'])}")
        if p.get("budget", "full") not in raw["budgets"]:
            raise UsageError(f"{w}: external[{i}].budget {p['budget']!r}; allowed: {sorted(raw['budgets'])}")
    for i, c in enumerate(raw.get("claims", [])):
        _keys(f"{w}: claims[{i}]", c, CLAIM_KEYS, {"row", "method", "baseline"})
        if c["row"] not in ids or c["method"] not in names or c["baseline"] not in names:
            raise UsageError(f"{w}: claims[{i}] names an unknown row or variant; rows: {sorted(ids)}, "
                             f"variants: {sorted(names)}")
        if c.get("metric", "test_acc") not in CLAIM_METRICS:
            raise UsageError(f"{w}: claims[{i}].metric {c['metric']!r}; allowed: {', '.join(CLAIM_METRICS)}")
        if "trend" in c and not (isinstance(c["trend"], str) and c["trend"].strip()):
            raise UsageError(f"{w}: claims[{i}].trend must be the trend claim's text, got {c['trend']!r}")
        if "trend" in c and len(set(next(r for r in raw["rows"] if r["id"] == c["row"])["noise"]["rates"])) < 2:
            raise UsageError(f"{w}: claims[{i}].trend needs a row with 2+ noise rates; row {c['row']!r} has one")
    for i, f in enumerate(raw.get("figures", [])):
        if isinstance(f, dict):
            _keys(f"{w}: figures[{i}]", f, FIGURE_KEYS, {"kind"})
            eps = f.get("epochs", [])
            ok = eps == "all" or (isinstance(eps, list) and all(
                isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in eps))
            if not ok:
                raise UsageError(f"{w}: figures[{i}].epochs must be a list of epoch numbers >= 1 or 'all', got {eps!r}")
        if figure_kind(f) not in FIGURES:
            raise UsageError(f"{w}: figure {figure_kind(f)!r}; allowed: {', '.join(FIGURES)}")


def _validate_roles(where: str, variant: dict, raw: dict) -> None:
    from methods import method_class
    from models import model_entry

    roles = variant.get("roles") or {}
    frozen = set(method_class(variant["method"]).frozen)
    if frozen and not roles:
        raise UsageError(f"{where}: method {variant['method']!r} restores {sorted(frozen)} from another run; give "
                         f"roles: {{{sorted(frozen)[0]}: {{from: {{method: erm}}, model: ...}}}}")
    _keys(f"{where}.roles", roles, frozen, frozen)
    for role, block in roles.items():
        _keys(f"{where}.roles.{role}", block, ROLE_KEYS, {"from"})
        if "model" in block:
            try:
                entry = model_entry(block["model"]["name"])
            except (KeyError, TypeError) as e:
                raise UsageError(f"{where}.roles.{role}.model: {e.args[0] if e.args else e}") from None
            bad = sorted(set(block["model"]) - {"name"} - entry.options())
            if bad:
                raise UsageError(f"{where}.roles.{role}.model: {entry.name} has no option {bad[0]!r}; "
                                 f"allowed: {sorted(entry.options())}")
        if "from" in block:
            _keys(f"{where}.roles.{role}.from", block["from"], set(block["from"]) | {"method"}, {"method"})
            try:
                _method_spec(block["from"])
            except (KeyError, ValueError, TypeError) as e:
                raise UsageError(f"{where}.roles.{role}.from: {e.args[0] if e.args else e}") from None
            if method_class(block["from"]["method"]).frozen:
                raise UsageError(f"{where}.roles.{role}.from: method {block['from']['method']!r} needs a teacher "
                                 f"itself; a restored role must come from a run that trains from scratch")
        if "recipe" in block and block["recipe"] not in raw["recipes"]:
            raise UsageError(f"{where}.roles.{role}: unknown recipe {block['recipe']!r}; known: "
                             f"{', '.join(raw['recipes'])}")


def figure_kind(f) -> str:
    return f.get("kind") if isinstance(f, dict) else f


def _check_recipe(where: str, r: dict, allowed: set[str], required: set[str]) -> None:
    from engine import AUGMENTS, check_optimizer, check_schedule

    _keys(where, r, allowed, required)
    try:
        if "optimizer" in r:
            check_optimizer(r["optimizer"])
        if "schedule" in r:
            check_schedule(r["schedule"])
    except ValueError as e:
        raise UsageError(f"{where}: {e}") from None
    if "optimizer" in r:
        import torch

        from engine.optim import build_optimizer

        try:  # values, not only names: build it on a dummy parameter
            build_optimizer(r["optimizer"], [torch.zeros(1, requires_grad=True)])
        except (TypeError, ValueError) as e:
            raise UsageError(f"{where}: optimizer {r['optimizer']!r}: {e}") from None
    if "normalize" in r and r["normalize"] not in (None, "dataset") and not (
            isinstance(r["normalize"], list) and len(r["normalize"]) == 2):
        raise UsageError(f"{where}: normalize must be [mean, std] (numbers or per-channel lists) or 'dataset' (the "
                         f"dataset entry's own mean/std), got {r['normalize']!r}")
    if "augment" in r and r["augment"] not in AUGMENTS:
        raise UsageError(f"{where}: augment {r['augment']!r}; allowed: {', '.join(AUGMENTS)}")
    if "rates" in r and (not isinstance(r["rates"], list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in r["rates"])):
        raise UsageError(f"{where}: rates must be a list of noise rates in [0, 1], got {r['rates']!r}")
    for k in ("epochs", "batch_size", "train_subset", "test_subset", "val_size"):
        if k in r and r[k] is not None and (not isinstance(r[k], int) or isinstance(r[k], bool) or r[k] < 1):
            raise UsageError(f"{where}: {k} must be a positive integer, got {r[k]!r}")


def _read_yaml(path: str) -> dict:
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML: {e}") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{os.path.basename(path)}: a target must be a YAML mapping")
    return raw


def _include_path(name, path: str) -> str:
    """The included target's file: beside the including one, else among the built-in targets."""
    w = os.path.basename(path)
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9-]+", name):
        raise UsageError(f"{w}: include must name a target, e.g. blcl-table1, got {name!r}")
    for folder in (os.path.dirname(os.path.abspath(path)), TARGET_DIR):
        cand = os.path.join(folder, f"{name}.yaml")
        if os.path.isfile(cand):
            return cand
    raise UsageError(f"{w}: include {name!r}: no target of that name beside it or in {TARGET_DIR}")


def expand_include(raw: dict, path: str, seen: tuple[str, ...] = ()) -> dict:
    """`raw` with its `include` resolved (see TOP_KEYS); the included target may include another (no cycles)."""
    if "include" not in raw:
        return raw
    w = os.path.basename(path)
    inc_path = _include_path(raw["include"], path)
    if os.path.abspath(inc_path) in seen + (os.path.abspath(path),):
        raise UsageError(f"{w}: include {raw['include']!r} makes a cycle")
    base = expand_include(_read_yaml(inc_path), inc_path, seen + (os.path.abspath(path),))
    out = {k: v for k, v in raw.items()}
    for key in ("variants", "recipes"):
        own = raw.get(key) or {}
        if not isinstance(own, dict):
            raise UsageError(f"{w}: {key} must be a mapping")
        for name, value in own.items():
            if name in base.get(key, {}) and base[key][name] != value:
                raise UsageError(f"{w}: {key}.{name} differs from {raw['include']}'s {key}.{name}: give it another "
                                 f"name, or drop it here to use {raw['include']}'s")
        out[key] = {**base.get(key, {}), **own}
    for key in ("seeds", "budgets"):
        out.setdefault(key, base.get(key))
    rows = raw.get("rows")
    if not isinstance(rows, list):
        raise UsageError(f"{w}: rows must be a list")
    by_id = {r.get("id"): r for r in base.get("rows", []) if isinstance(r, dict)}
    out["rows"] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict) and "use" in row:
            if row["use"] not in by_id:
                raise UsageError(f"{w}: rows[{i}]: use {row['use']!r} is not a row of {raw['include']}; rows: "
                                 f"{', '.join(map(str, by_id))}")
            row = {**by_id[row["use"]], **{k: v for k, v in row.items() if k != "use"}}
            row = {k: v for k, v in row.items() if v is not None}  # `key: null` here drops the included row's key
        out["rows"].append(row)
    if raw.get("include_published"):
        used = {r.get("id") for r in out["rows"] if isinstance(r, dict)}
        names = set(out["variants"]) | {v.get("compare_as", k) for k, v in out["variants"].items()
                                        if isinstance(v, dict)}
        out["published"] = list(raw.get("published") or []) + [
            p for p in base.get("published") or [] if p.get("row") in used and p.get("variant") in names]
    out.pop("include_published", None)
    return out


def load_target(path: str) -> Target:
    raw = expand_include(_read_yaml(path), path)
    validate(raw, path)
    return Target(raw, path)


def load_targets(directory: str = TARGET_DIR) -> dict[str, Target]:
    if not os.path.isdir(directory):
        raise UsageError(f"targets folder {directory!r} does not exist")
    out = {}
    for fn in sorted(os.listdir(directory)):
        if fn.endswith(".yaml"):
            t = load_target(os.path.join(directory, fn))
            if t.name in out or t.name != fn[: -len(".yaml")]:
                raise UsageError(f"{fn}: target name {t.name!r} must equal the file name and be unique")
            out[t.name] = t
    return out


def resolve(name: str, targets: dict[str, Target]) -> list[Target]:
    """`blcl-table4`, a bare `table4` (BLCL's), a paper name (all its targets) or `all`."""
    if name == "all":
        return list(targets.values())
    if name in PAPERS:
        return [t for t in targets.values() if t.raw["paper"] == name]
    for cand in (name, f"blcl-{name}"):
        if cand in targets:
            return [targets[cand]]
    raise UsageError(f"unknown target {name!r}; known: {', '.join(sorted(targets))}, a paper name "
                     f"({', '.join(PAPERS)}) or all")


def scale_schedule(schedule: dict, epochs: int, new_epochs: int) -> dict:
    """The schedule of a budget that trains `new_epochs` instead of the recipe's `epochs` (issue 18): the same
    learning-rate curve over the fraction of training. Multistep milestones move to the same fractions (rounded,
    at least epoch 1, distinct: 80 and 120 of 160 become 15 and 22 of 30); a periodic cosine's period scales
    likewise; an exponential decay's per-epoch gamma becomes gamma ** (epochs / new_epochs), so the last epoch's
    lr is unchanged; cosine (T_max = the run's epochs) and constant need nothing. A budget that names its own
    `schedule` keeps it as written."""
    out, f = dict(schedule), new_epochs / epochs
    if out["name"] == "multistep":
        ms = sorted({max(1, round(m * f)) for m in out["milestones"]})
        out["milestones"] = ms
    elif out["name"] == "cosine_restarts":
        out["period"] = max(1, round(out["period"] * f))
    elif out["name"] == "exponential":
        out["gamma"] = float(out["gamma"] ** (epochs / new_epochs))
    return out


def snapshot_epochs(targets: dict[str, Target], seeds: list[int] | None = None) -> dict[str, set[int]]:
    """run id -> epochs at which some target's figure wants that run's per-example losses (BLCL Figs. 3/4/10/11),
    over every target and budget, so a table run saves what a figure sharing it needs. An epoch beyond a short
    budget's last becomes the last."""
    out: dict[str, set[int]] = {}
    for t in targets.values():
        specs = [f.get("epochs", []) for f in t.raw.get("figures", []) if isinstance(f, dict)]
        if not any(specs):
            continue
        for budget in t.raw["budgets"]:
            for p in t.plans(budget, seeds):
                last = p.spec["recipe"]["epochs"]
                for eps in specs:
                    out.setdefault(p.run_id, set()).update(range(1, last + 1) if eps == "all"
                                                           else (min(e, last) for e in eps))
    return out
