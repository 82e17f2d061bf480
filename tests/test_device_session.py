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
