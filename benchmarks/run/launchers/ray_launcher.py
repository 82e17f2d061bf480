"""The Ray launcher (issue 12): the same matrix as the local launcher, each pending run, or packed group of runs,
one Ray task with declared resources.

- Resources: `num_cpus` (`--cpus-per-run`, default 1) and, on GPU clusters, `num_gpus` from `GPU_SHARE` by model
  name (a fraction for small networks, so several ResNet-20 runs share one GPU; whole GPUs for WRN/DenseNet;
  a packed group of K runs asks for min(1, K x share)); `--gpus-per-run F` overrides the table.
- Teachers: a KD student's task takes its teacher's task's second return value, the teacher checkpoint's bytes,
  as an ObjectRef argument: Ray starts the student only once the teacher has finished (no polling). A teacher
  whose checkpoint is already valid in the results folder is read by the driver and `ray.put`. The student's
  record names the teacher's run id and the sha256 of exactly those bytes, which the driver writes verbatim as
  checkpoints/<teacher_id>.pt.
- Results: tasks return records (`runner.train_records`); the driver alone writes JSONs, snapshots and
  checkpoints into its results folder (`runner.write_records`, atomic), so workers need no shared filesystem
  for results. Mid-run checkpoints go to `--checkpoints DIR` (a folder every node reaches); without one, a
  retried task restarts its run (a local instance, no `--address`, uses checkpoints/ beside the results).
- Data: a worker reads its own `$CLREPRO_DATA` (else the driver's `--data` path); a local instance passes the
  driver's data root to its workers.
- Faults: a task whose worker or node dies is retried up to `--max-retries` times (default 2); after that the
  driver records its runs `failed` with the cause. The driver holds the runner's per-run flock from before a
  run is submitted until its JSON is written, so two drivers on one results folder never train a spec twice,
  and a driver killed with kill -9 and restarted skips what is finished (`runner.todo_plans`).
- Fault injection (tests): `$CLREPRO_FAULT_KILL_AT_EPOCH` (cli.engine_options) makes the task SIGKILL its worker
  after that epoch; with `$CLREPRO_FAULT_ONCE_DIR` set on the driver, only a group's first attempt does (a marker
  file per group in that folder), so the retry finishes.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types

from tqdm import tqdm

from benchmarks.targets.loader import Plan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# GPU share of one run by model name (the largest over the run's roles, teachers included); unknown: a whole GPU.
GPU_SHARE = {
    "mlp500": 0.25, "wordcnn": 0.25, "resnet8": 0.25, "resnet20": 0.25, "resnet32": 0.25,
    "resnet56": 0.5, "resnet110": 0.5, "vgg11_bn": 0.5,
    "resnet18": 1.0, "vgg16_bn": 1.0, "wrn28_10": 1.0, "wrn40_10": 1.0,
    "densenet_bc_100_12": 1.0, "densenet_bc_190_40": 1.0,
}
# What a remote cluster's working_dir upload leaves out (results and weights stay with the driver).
UPLOAD_EXCLUDES = [".git", ".venv", "results", "checkpoints", "*.pt", "*.npz", "__pycache__", ".pytest_cache"]


def model_names(spec: dict) -> list[str]:
    names = [spec["model"]["name"]]
    for block in spec.get("roles", {}).values():
        if isinstance(block.get("model"), dict):
            names.append(block["model"]["name"])
        if "from_run" in block:
            names += model_names(block["from_run"])
    return names


def gpus_for(plans: list[Plan], per_run: float | None = None) -> float:
    """GPUs one task of `plans` (one run, or a packed group) asks for on a GPU cluster."""
    share = per_run if per_run is not None else max(GPU_SHARE.get(n, 1.0) for p in plans for n in model_names(p.spec))
    return share if share >= 1.0 else min(1.0, share * len(plans))


# ---- the task (runs on a worker) ------------------------------------------------------------------------------

_WORKER_CACHE: dict = {}  # datasets a worker process has loaded, reused by its later tasks


def _failed_outs(plans, env: dict, error: str):
    from benchmarks.run.runner import failed_record

    return [(failed_record(p, env, error), None, None) for p in plans], [None] * len(plans)


def train_task(job: dict, *teacher_blobs):
    """One Ray task: train `job["plans"]` (one run or a packed group) and return (per run (record, snapshots,
    None), per run the checkpoint bytes of a run other runs restore from, else None). `teacher_blobs`: the
    checkpoint-byte lists of the teacher tasks (ObjectRefs resolved by Ray before this starts)."""
    import torch

    from benchmarks.run.provenance import environment
    from benchmarks.run.runner import checkpoint_bytes, resolve_device, state_from_checkpoint, teacher_extras, train_records

    plans: list[Plan] = job["plans"]
    torch.set_num_threads(max(1, int(job["cpus"])))
    data_root = os.environ.get("CLREPRO_DATA") or job["data_root"]
    download = job["download"] and not os.environ.get("CLREPRO_NO_DOWNLOAD")
    try:
        device = resolve_device(job["device"])
    except RuntimeError as e:
        return _failed_outs(plans, environment(torch.device("cpu")), f"RuntimeError: {e}")
    env = {**environment(device), **job["driver"], "launcher": "ray"}  # the code is the driver's tree
    options = job["options"]
    once = job.get("fault_once_dir")
    if options.kill_at_epoch and once:  # fault injection: only the first attempt of this group dies
        marker = os.path.join(once, f"{plans[0].run_id}.attempted")
        if os.path.exists(marker):
            options = dataclasses.replace(options, kill_at_epoch=None)
        else:
            os.makedirs(once, exist_ok=True)
            open(marker, "w").close()
    role_states, extras = [], []
    for plan, roles in zip(plans, job["teachers"]):
        states, used = {}, {}
        for role, (arg, slot, rid) in roles.items():
            blob = teacher_blobs[arg][slot]
            if blob is None:
                return _failed_outs(plans, env, f"RuntimeError: teacher run {rid} ended without a checkpoint "
                                                f"(see its record)")
            states[role] = state_from_checkpoint(blob)
            used.update(teacher_extras(role, rid, blob))
        role_states.append(states or None)
        extras.append(used)
    cache = _WORKER_CACHE.setdefault(data_root, {})
    outs = train_records(plans, data_root, device, env, cache, download=download, keep_state=job["keep_state"],
                         role_states=role_states, snapshot_epochs=job["snapshots"], add_extras=extras,
                         options=options, checkpoint=job["checkpoint"], have_embeddings=job["have_embeddings"])
    blobs = [None if state is None else checkpoint_bytes(state) for _, _, state in outs]
    return [(rec, snaps, None) for rec, snaps, _ in outs], blobs


def dataset_info(name: str, data_root: str, download: bool):
    """What packing decisions need to know about a dataset (read on a worker when the driver has no data)."""
    from data import load_dataset

    root = os.environ.get("CLREPRO_DATA") or data_root
    s = load_dataset(name, root, download=download and not os.environ.get("CLREPRO_NO_DOWNLOAD"))
    return types.SimpleNamespace(num_classes=s.num_classes, in_shape=s.in_shape,
                                 meta={"vocab_size": s.meta.get("vocab_size")})


# ---- the driver -----------------------------------------------------------------------------------------------

def init_kwargs(address: str | None, data_root: str, num_cpus: int | None = None) -> dict:
    """ray.init arguments: connect to `address` (auto | HOST:PORT) shipping this source tree as the job's
    working_dir, or start a new local instance (even where a cluster already runs on this machine) whose workers
    import this tree and read the driver's data root."""
    if address:
        return {"address": address, "runtime_env": {"working_dir": ROOT, "excludes": UPLOAD_EXCLUDES}}
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return {"address": "local", "num_cpus": num_cpus or os.cpu_count(), "include_dashboard": False,
            "runtime_env": {"env_vars": {"PYTHONPATH": path, "CLREPRO_DATA": os.path.abspath(data_root)}}}


class _Blocked(Exception):
    """A teacher this run needs is held by another driver."""


@dataclasses.dataclass
class _Node:
    plans: list[Plan]
    refs: list  # [records ref, checkpoint-bytes ref]
    locks: list
    teachers: list  # nodes whose checkpoints this one waits for
    resume: str | None
    done: bool = False


def check_feasible(cpus: float, gpus: float, nodes: list[dict]) -> None:
    """A task no node can hold would wait forever: refuse it up front."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in alive) or "none"
        raise RuntimeError(f"no Ray node can hold a task of {cpus:g} CPU and {gpus:g} GPU (nodes: {have}); "
                           f"lower --cpus-per-run / --gpus-per-run or add nodes")


def run_plans_ray(plans: list[Plan], data_root: str, results: str, device: str = "auto", fail_fast: bool = False,
                  download: bool = True, cache: dict | None = None, snapshots: dict[str, set[int]] | None = None,
                  pack: int | str = "auto", options=None, address: str | None = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float | None = None, max_retries: int = 2, checkpoints: str | None = None,
                  num_cpus: int | None = None) -> int:
    """Run every unfinished plan as Ray tasks; returns the number of runs that failed. Uses the Ray instance
    already initialised in this process if there is one; else connects to `address` or starts a local one (shut
    down at the end). `device`: auto | cpu | cuda for the workers (auto: cuda when the cluster has GPUs);
    `options`: EngineOptions, or a function of the workers' device returning them."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(**init_kwargs(address, data_root, num_cpus))
        started = True
    # one machine (a local instance): the usual checkpoints/ beside the results is reachable by every worker
    local_resume = checkpoints is None and not address and _is_local_cluster(ray)
    try:
        return _drive(ray, plans, data_root, results, device, fail_fast, download, cache or {}, snapshots or {},
                      pack, options, cpus_per_run, gpus_per_run, max_retries, checkpoints, local_resume)
    finally:
        if started:
            ray.shutdown()


def _is_local_cluster(ray) -> bool:
    import socket

    nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    return len(nodes) == 1 and nodes[0].get("NodeManagerHostname") == socket.gethostname()


def _drive(ray, plans, data_root, results, device, fail_fast, download, cache, snapshots, pack, options,
           cpus_per_run, gpus_per_run, max_retries, checkpoints, local_resume) -> int:
    import torch

    from engine.options import EngineOptions

    from benchmarks.run.provenance import environment
    from benchmarks.run.runner import (acquire, failed_record, pack_groups, present_embeddings, report_line, resume_path,
                          teacher_plans, todo_plans, valid_checkpoint, write_records)
    from benchmarks.run.store import index_results, is_finished

    gpus_total = ray.cluster_resources().get("GPU", 0)
    if device == "cuda" and not gpus_total:
        raise RuntimeError("--device cuda asked for, but the Ray cluster has no GPU")
    kind = "cuda" if device == "cuda" or (device == "auto" and gpus_total) else "cpu"
    if callable(options):  # how the engine computes depends on the workers' device, known only now
        options = options(torch.device(kind))
    options = options or EngineOptions()
    driver_env = environment(torch.device("cpu"))
    todo = todo_plans(plans, results)
    tqdm.write(f"{len(plans)} runs in the matrix, {len(plans) - len(todo)} already done, {len(todo)} to run "
               f"as Ray tasks on {kind} ({ray.cluster_resources().get('CPU', 0):g} CPU, {gpus_total:g} GPU in the "
               f"cluster; max {max_retries} retries per task)")
    teacher_ids = {t.run_id for p in plans for t in teacher_plans(p).values()}
    matrix = {p.run_id for p in plans}  # failures counted, as by the local launcher (a failed teacher fails its students)
    once = os.environ.get("CLREPRO_FAULT_ONCE_DIR")
    nodes_info = ray.nodes()
    task = ray.remote(num_returns=2)(train_task)

    def splits_of(plan):
        name = plan.spec["data"]["dataset"]
        if name not in cache:
            cache[name] = ray.get(ray.remote(dataset_info).options(num_cpus=1).remote(name, data_root, download))
        return cache[name]

    groups = pack_groups(todo, pack, torch.device(kind), splits_of) if len(todo) > 1 else [[p] for p in todo]
    nodes: dict[str, _Node] = {}  # run id -> the node training it
    put_blobs: dict[str, object] = {}  # teacher run id -> ray.put of its valid checkpoint's bytes
    all_nodes: list[_Node] = []
    held: list = []  # every lock this driver holds, released at the latest when it stops
    for group in groups + [[t] for p in todo for t in teacher_plans(p).values()]:
        check_feasible(float(cpus_per_run), gpus_for(group, gpus_per_run) if kind == "cuda" else 0.0, nodes_info)

    def submit(group: list[Plan], locks: list) -> _Node:
        args, roles_of, deps = [], [], []
        for plan in group:
            roles = {}
            for role, tplan in teacher_plans(plan).items():
                ref, slot, dep = teacher_ref(tplan)
                if ref not in args:
                    args.append(ref)
                roles[role] = (args.index(ref), slot, tplan.run_id)
                if dep is not None:
                    deps.append(dep)
            roles_of.append(roles)
        cpus = float(cpus_per_run)
        gpus = gpus_for(group, gpus_per_run) if kind == "cuda" else 0.0
        resume = resume_path(results, group, checkpoints) if (checkpoints or local_resume) else None
        job = {"plans": group, "teachers": roles_of, "data_root": data_root, "download": download, "device": kind,
               "cpus": cpus, "options": options, "checkpoint": resume, "fault_once_dir": once,
               "driver": {k: driver_env[k] for k in ("git_sha", "git_dirty", "argv")},
               "keep_state": {p.run_id for p in group if p.run_id in teacher_ids},
               "snapshots": {p.run_id: snapshots[p.run_id] for p in group if p.run_id in snapshots},
               "have_embeddings": present_embeddings(results)}
        refs = task.options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False,
                            name=f"clrepro-{group[0].run_id}" + (f"-x{len(group)}" if len(group) > 1 else "")
                            ).remote(job, *args)
        node = _Node(group, refs, locks, deps, resume)
        held.extend(locks)
        for p in group:
            nodes[p.run_id] = node
        all_nodes.append(node)
        return node

    def teacher_ref(tplan: Plan):
        """(ObjectRef of a checkpoint-bytes list, slot in it, node producing it or None) for a teacher run."""
        rid = tplan.run_id
        if rid in nodes:
            node = nodes[rid]
            return node.refs[1], [p.run_id for p in node.plans].index(rid), node
        if rid in put_blobs:
            return put_blobs[rid], 0, None
        if valid_checkpoint(results, rid) is None:
            lock = acquire(results, rid)
            if lock is None:
                raise _Blocked(f"teacher {rid} is being trained by another worker")
            if valid_checkpoint(results, rid) is None:
                tqdm.write(f"[teacher] {rid}: no valid checkpoint, submitting it first")
                teacher_ids.add(rid)
                node = submit([tplan], [lock])
                return node.refs[1], 0, node
            lock.close()
        with open(valid_checkpoint(results, rid), "rb") as f:
            put_blobs[rid] = ray.put([f.read()])
        return put_blobs[rid], 0, None

    failed = skipped = 0
    try:
        for group in groups:
            claimed, locks = [], []
            for plan in group:
                if plan.run_id in nodes:  # already submitted as another run's teacher
                    continue
                lock = acquire(results, plan.run_id)
                if lock is None:
                    tqdm.write(f"[skip] {plan.run_id} is running in another process")
                    skipped += 1
                elif is_finished(index_results(results).get(plan.run_id)):  # finished elsewhere meanwhile
                    lock.close()
                else:
                    locks.append(lock)
                    claimed.append(plan)
            if not claimed:
                continue
            try:
                submit(claimed, locks)
            except _Blocked as e:
                tqdm.write(f"[skip] {', '.join(p.run_id for p in claimed)}: {e}; rerun later")
                skipped += len(claimed)
                for lock in locks:
                    lock.close()
        bar = tqdm(total=sum(len(n.plans) for n in all_nodes), desc="runs", unit="run", dynamic_ncols=True)

        def finish(node: _Node) -> int:
            """Write a finished task's records (its teachers' first); returns how many of its runs failed."""
            if node.done:
                return 0
            n_failed = sum(finish(t) for t in node.teachers)
            try:
                outs, blobs = ray.get(node.refs)
                where = ""
            except ray.exceptions.RayError as e:  # the worker or node died past the retries, or a teacher did
                cause = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()  # no terminal colours
                error = (f"{type(e).__name__} (Ray task failed after up to {max_retries} retries): "
                         + "\n".join(cause[:20]))
                outs = [(failed_record(p, driver_env, error), None, None) for p in node.plans]
                blobs = [None] * len(node.plans)
                where = " (ray)"
            outs = [(rec, snaps, blob) for (rec, snaps, _), blob in zip(outs, blobs)]
            keep = {p.run_id for p in node.plans if p.run_id in teacher_ids}
            recs = write_records(node.plans, outs, results, keep, node.resume)
            node.done = True
            for lock in node.locks:
                lock.close()
            for plan, rec in zip(node.plans, recs):
                report_line(plan, rec, len(node.plans), where)
            bar.update(len(node.plans))
            return n_failed + sum(r["status"] == "failed" and r["run_id"] in matrix for r in recs)

        pending = {node.refs[0]: node for node in all_nodes}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                failed += finish(pending.pop(ref))
            if failed and fail_fast:
                for node in pending.values():
                    ray.cancel(node.refs[0], force=True)
                break
        bar.close()
    finally:
        for lock in held:
            lock.close()
    if skipped:
        tqdm.write(f"{skipped} run(s) skipped: held by another worker; rerun later to pick up their results")
    return failed
