"""benchmarks/device_session.sh's local halves (run here, around a call of the device tool): `prepare` gzips MNIST
for the trip, `unpack` puts what came back (results.tar.gz, ckpt.tar.NN parts) into results/ and device_ckpt/
without overwriting a differing run JSON; an unknown step exits 2 before doing anything."""
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "device_session.sh")


def _repo(tmp_path):
    """A bare tree with the script where it lives in the checkout (it works relative to its own folder)."""
    root = tmp_path / "repo"
    (root / "benchmarks").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "benchmarks" / "device_session.sh")
    return root


def _sh(root, *args, env=None):
    return subprocess.run(["bash", str(root / "benchmarks" / "device_session.sh"), *args], cwd=root, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def test_unknown_step_exits_2_and_writes_nothing(tmp_path):
    root = _repo(tmp_path)
    r = _sh(root, "bench", "tabel4", env={"OUT": str(tmp_path / "out")})
    assert r.returncode == 2 and "tabel4" in r.stderr and "table4" in r.stderr
    assert not (tmp_path / "out").exists() and not (root / "device_out").exists()


def test_prepare_gzips_the_mnist_files(tmp_path):
    root = _repo(tmp_path)
    raw = tmp_path / "shared" / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    files = {"train-images-idx3-ubyte": os.urandom(3000), "t10k-labels-idx1-ubyte": os.urandom(20)}
    for name, data in files.items():
        (raw / name).write_bytes(data)
    r = _sh(root, "prepare", str(tmp_path / "shared" / "data"))
    assert r.returncode == 0, r.stderr
    for name, data in files.items():
        assert gzip.decompress((root / "data_local" / "MNIST" / "raw" / f"{name}.gz").read_bytes()) == data
    assert (root / "device_ckpt").is_dir()


def _pack(root, tmp_path, tag, cap=None):
    """The device half with no time for any step: it packs what checkpoints/ and results/ hold into $OUT."""
    out = tmp_path / f"out-{tag}"
    env = {"OUT": str(out), "DS_BUDGET_S": "40", "CLREPRO_PYTHON": "true", "DS_DEVICE": "cpu"}
    if cap is not None:
        env["DS_CKPT_CAP"] = str(cap)
    r = _sh(root, "table4", env=env)
    assert r.returncode == 0, r.stderr
    return out


def test_pack_and_unpack_round_trip(tmp_path):
    root = _repo(tmp_path)
    (root / "checkpoints").mkdir()
    big, small = os.urandom(20_000_000), os.urandom(1000)  # two 15 MiB parts
    (root / "checkpoints" / "aaaaaaaaaaaa.resume.pt").write_bytes(big)
    (root / "checkpoints" / "bbbbbbbbbbbb.resume.pt").write_bytes(small)
    (root / "checkpoints" / "cccccccccccc.pt").write_bytes(b"a teacher's weights stay")
    out = _pack(root, tmp_path, "a")
    files = sorted(os.listdir(out))
    assert files == ["ckpt.tar.00", "ckpt.tar.01", "results.tar.gz", "session.log"]  # the tool returns <= 8
    assert all(os.path.getsize(out / f) <= 16 * 2**20 for f in files)
    (root / "device_ckpt").mkdir()
    (root / "device_ckpt" / "old.resume.pt").write_bytes(b"stale")
    r = _sh(root, "unpack", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(root / "device_ckpt")) == ["aaaaaaaaaaaa.resume.pt", "bbbbbbbbbbbb.resume.pt"]
    assert (root / "device_ckpt" / "aaaaaaaaaaaa.resume.pt").read_bytes() == big
    assert "checksums verified" in r.stdout

    # a damaged part: an error, and device_ckpt/ as it was
    part = out / "ckpt.tar.00"
    data = bytearray(part.read_bytes())
    data[5_000_000:5_000_010] = bytes(10)  # inside the first checkpoint's bytes
    part.write_bytes(bytes(data))
    r = _sh(root, "unpack", str(out))
    assert r.returncode == 1 and "damaged" in r.stderr
    assert (root / "device_ckpt" / "aaaaaaaaaaaa.resume.pt").read_bytes() == big

    # too large to return: withheld, said so, device_ckpt/ kept
    out = _pack(root, tmp_path, "b", cap=1000)
    assert not [f for f in os.listdir(out) if f.startswith("ckpt.tar.")]
    r = _sh(root, "unpack", str(out))
    assert r.returncode == 0 and "too large to return" in r.stderr
    assert len(os.listdir(root / "device_ckpt")) == 2
    assert "not returned" in (out / "session.log").read_text()

    # every run finished on the device: none left, device_ckpt/ emptied
    for f in (root / "checkpoints").glob("*.resume.pt"):
        f.unlink()
    os.rename(root / "device_ckpt", tmp_path / "kept")  # (a carried device_ckpt/ is copied into checkpoints/)
    out = _pack(root, tmp_path, "c")
    os.rename(tmp_path / "kept", root / "device_ckpt")
    r = _sh(root, "unpack", str(out))
    assert r.returncode == 0 and os.listdir(root / "device_ckpt") == []


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_unpack_never_overwrites_and_the_finished_bench_replaces_the_partial(tmp_path):
    root = _repo(tmp_path)
    at = tmp_path / "files_at"
    at.mkdir()
    a, b = json.dumps({"run_id": "aaaaaaaaaaaa"}).encode(), json.dumps({"run_id": "bbbbbbbbbbbb", "v": 2}).encode()
    (at / "results.tar.gz").write_bytes(_tar({"./runs/aaaaaaaaaaaa.json": a, "./runs/bbbbbbbbbbbb.json": b,
                                              "./bench/cuda.json": b"{}", "./ckpt_manifest.txt": b"none\n"}))
    runs = root / "results" / "runs" / "blcl-table4"
    runs.mkdir(parents=True)
    (runs / "bbbbbbbbbbbb.json").write_bytes(b'{"run_id": "bbbbbbbbbbbb", "v": 1}')  # a different record is kept
    (root / "results" / "bench").mkdir()
    (root / "results" / "bench" / "cuda.partial.json").write_text("{}")
    r = _sh(root, "unpack", str(at))
    assert r.returncode == 0, r.stderr
    assert (runs / "aaaaaaaaaaaa.json").read_bytes() == a
    assert (runs / "bbbbbbbbbbbb.json").read_bytes() == b'{"run_id": "bbbbbbbbbbbb", "v": 1}'
    assert "kept" in r.stdout and "bbbbbbbbbbbb" in r.stdout and "1 new run JSONs" in r.stdout
    assert os.listdir(root / "results" / "bench") == ["cuda.json"]


def test_prepare_without_mnist_exits_2(tmp_path):
    root = _repo(tmp_path)
    r = _sh(root, "prepare", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere" in r.stderr and not (root / "data_local").exists()


# CIFAR-10 (issue 18): `stage` here splits the copy into two carries, `recv` on the device merges and checks them.

def _fake_cifar(tmp_path):
    """A tiny copy in the real format with the real file names: train_0..4 and test_0, as meta.json lists them."""
    from fixtures_data import write_cifar_webp

    root = tmp_path / "shared" / "data"
    write_cifar_webp(str(root), n_train=30, n_test=5, per_file=6)
    (root / "CIFAR10" / "README.md").write_text("a tiny copy\n")
    return root


PART1 = ["README.md", "labels.npz", "meta.json", "train_0.webp", "train_1.webp", "train_2.webp"]
PART2 = ["test_0.webp", "train_3.webp", "train_4.webp"]


def test_stage_splits_cifar10_into_two_parts_with_a_manifest(tmp_path):
    src = _fake_cifar(tmp_path)
    root = _repo(tmp_path)
    r = _sh(root, "stage", str(src))
    assert r.returncode == 0, r.stderr
    st = root / "data_local"
    assert sorted(os.listdir(st / "stage1" / "CIFAR10")) == PART1
    assert sorted(os.listdir(st / "stage2" / "CIFAR10")) == PART2
    for k in (1, 2):
        assert sum(f.stat().st_size for f in (st / f"stage{k}").rglob("*") if f.is_file()) < 60 * 2**20
        assert (st / f"stage{k}" / "CIFAR10.sha256").read_text() == (st / "stage1" / "CIFAR10.sha256").read_text()
    sums = dict(line.split()[::-1] for line in (st / "stage1" / "CIFAR10.sha256").read_text().splitlines())
    assert sorted(sums) == sorted(PART1 + PART2)
    import hashlib
    assert sums["train_3.webp"] == hashlib.sha256((src / "CIFAR10" / "train_3.webp").read_bytes()).hexdigest()
    parts = (st / "stage1" / "CIFAR10.parts").read_text().split("\n")
    assert "1 meta.json" in parts and "2 test_0.webp" in parts
    assert "part 1: data_local/stage1" in r.stdout and 'carry=["data_local/stage2"]' in r.stdout


def test_stage_refuses_an_oversize_part_and_stages_nothing(tmp_path):
    src = _fake_cifar(tmp_path)
    root = _repo(tmp_path)
    r = _sh(root, "stage", str(src), env={"DS_PART_MIB": "0"})
    assert r.returncode == 2 and "part 1" in r.stderr and "DS_PART_MIB" in r.stderr
    assert not (root / "data_local").exists()
    r = _sh(root, "stage", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere" in r.stderr


def _device(tmp_path, name, here, parts):
    """A device machine's tree: the script, and the stage parts a call carries (copied from `here`)."""
    dev = _repo(tmp_path / name)
    for k in parts:
        shutil.copytree(here / "data_local" / f"stage{k}", dev / "data_local" / f"stage{k}")
    return dev


def _call(dev, tmp_path, tag, *steps, **env):
    out = tmp_path / f"out-{tag}"
    base = {"OUT": str(out), "CLREPRO_PYTHON": "true", "CLREPRO_DATA": str(dev / "data_local"), "DS_DEVICE": "cpu",
            "DS_BUDGET_S": "40"}
    return _sh(dev, *steps, env={**base, **env}), out


def test_recv_merges_the_parts_checks_sha256_and_names_a_missing_part(tmp_path):
    here = _repo(tmp_path)
    assert _sh(here, "stage", str(_fake_cifar(tmp_path))).returncode == 0
    dev = _device(tmp_path, "warm", here, [1])

    # call 1: part 1 alone; recv says part 2 is still to come and exits 0
    r, out = _call(dev, tmp_path, "1", "recv")
    assert r.returncode == 0, r.stderr
    assert "part 2 missing" in r.stdout and "data_local/stage2" in r.stdout
    assert sorted(os.listdir(dev / "data_local" / "CIFAR10")) == PART1
    assert not (dev / "data_local" / "stage1").exists()
    (here / "device_ckpt" / "x.resume.pt").write_bytes(b"kept")  # a call without training leaves device_ckpt/
    r = _sh(here, "unpack", str(out))
    assert r.returncode == 0 and "left as it was" in r.stdout and (here / "device_ckpt" / "x.resume.pt").exists()

    # call 2 on the warm machine: part 2 merges beside part 1 (which carrying stage2 leaves alone), all checked
    shutil.copytree(here / "data_local" / "stage2", dev / "data_local" / "stage2")
    r, _ = _call(dev, tmp_path, "2", "recv", "table1")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(dev / "data_local" / "CIFAR10")) == sorted(PART1 + PART2)
    assert "complete, 9 files sha256-checked" in r.stdout and "table1: skipped" in r.stdout

    # a damaged file: named, exit 3, nothing else runs
    f = dev / "data_local" / "CIFAR10" / "train_4.webp"
    f.write_bytes(f.read_bytes()[:-10] + bytes(10))
    r, _ = _call(dev, tmp_path, "3", "recv", "table1")
    assert r.returncode == 3 and "damaged" in r.stdout and "train_4.webp" in r.stdout
    assert "not run: table1" in r.stdout and "table1:" not in r.stdout.replace("not run: table1", "")

    # the machine went cold between the calls: call 2 finds part 1 missing, says so, runs nothing else
    cold = _device(tmp_path, "cold", here, [2])
    r, out = _call(cold, tmp_path, "4", "recv", "table1")
    assert r.returncode == 3 and "part 1 missing" in r.stdout and "data_local/stage1" in r.stdout
    assert "not run: table1" in r.stdout
    r = _sh(here, "unpack", str(out))  # and device_ckpt/ here stays as it was
    assert r.returncode == 0 and (here / "device_ckpt" / "x.resume.pt").exists()

    # a fresh machine with nothing carried
    r, _ = _call(_device(tmp_path, "fresh", here, []), tmp_path, "5", "recv")
    assert r.returncode == 3 and "no CIFAR-10 part" in r.stdout


def test_unpack_files_runs_under_their_target(tmp_path):
    root = _repo(tmp_path)
    at = tmp_path / "files_at"
    at.mkdir()
    a = json.dumps({"run_id": "aaaaaaaaaaaa", "target": "blcl-table1"}).encode()
    (at / "results.tar.gz").write_bytes(_tar({
        "./runs/blcl-table1/aaaaaaaaaaaa.json": a, "./runs/blcl-table1/aaaaaaaaaaaa.snapshots.npz": b"npz",
        "./runs/blcl-table4/bbbbbbbbbbbb.json": b"{}", "./embeddings/cifar10-x.npz": b"xy",
        "./bench-cifar/cuda.json": b"{}", "./ckpt_manifest.txt": b"none\n"}))
    r = _sh(root, "unpack", str(at))
    assert r.returncode == 0, r.stderr
    res = root / "results"
    assert (res / "runs" / "blcl-table1" / "aaaaaaaaaaaa.json").read_bytes() == a
    assert (res / "runs" / "blcl-table1" / "aaaaaaaaaaaa.snapshots.npz").read_bytes() == b"npz"
    assert (res / "runs" / "blcl-table4" / "bbbbbbbbbbbb.json").exists()
    assert (res / "embeddings" / "cifar10-x.npz").read_bytes() == b"xy"
    assert os.listdir(res / "bench") == ["cifar10"] and os.listdir(res / "bench" / "cifar10") == ["cuda.json"]
    assert "2 new run JSONs" in r.stdout and "results/runs/blcl-table1/" in r.stdout


def test_table1_smoke_rehearsal_on_the_cpu(tmp_path):
    """Stage, call 1 (recv), call 2 (recv table1 at the smoke budget, on the CPU, one driver), unpack: the runs come
    back under results/runs/blcl-table1/. Kept under a minute on a busy 2-core CPU: ERM's three seeds (one packed
    network) stand for the row's nine runs, which a manual rehearsal (README) runs."""
    import sys

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if files.returncode:
        import pytest
        pytest.skip("not a git checkout")
    here = _repo(tmp_path)
    assert _sh(here, "stage", str(_fake_cifar(tmp_path))).returncode == 0
    dev = tmp_path / "device"
    for rel in filter(None, files.stdout.decode().split("\0")):
        if os.path.isfile(os.path.join(ROOT, rel)) and not rel.startswith("results/"):
            os.makedirs(dev / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), dev / rel)
    shutil.copy(SCRIPT, dev / "benchmarks" / "device_session.sh")
    env = {"CLREPRO_PYTHON": sys.executable, "DS_TABLE1_BUDGET": "smoke", "DS_JOBS": "1", "DS_COMPILE": "off",
           "DS_BUDGET_S": "400", "DS_TABLE1_FILTER": "row=resnet20 variant=erm "}
    shutil.copytree(here / "data_local" / "stage1", dev / "data_local" / "stage1")
    r, out = _call(dev, tmp_path, "1", "recv", **env)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.copytree(here / "data_local" / "stage2", dev / "data_local" / "stage2")
    r, out = _call(dev, tmp_path, "2", "recv", "table1", **env)
    assert r.returncode == 0 and "table1: exit 0" in r.stdout, r.stdout + (out / "session.log").read_text()
    r = _sh(here, "unpack", str(out))
    assert r.returncode == 0, r.stderr
    runs = here / "results" / "runs" / "blcl-table1"
    recs = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    assert len(recs) == 3 and "3 new run JSONs into results/runs/blcl-table1/" in r.stdout
    assert {(x["row"], x["variant"], x["spec"]["seed"]) for x in recs} == {("resnet20", "erm", s) for s in (0, 1, 2)}
    assert all(x["provenance"]["engine"]["pack"] == 3 for x in recs)
    assert all(x["status"] == "ok" and x["target"] == "blcl-table1" for x in recs)
    assert all(x["provenance"]["data_source"]["copy"] == "webp-mosaics" for x in recs)  # the merged copy was read
