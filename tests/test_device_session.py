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


def _tar(members: dict[str, bytes], gz: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_unpack_places_results_and_checkpoints_and_never_overwrites(tmp_path):
    root = _repo(tmp_path)
    at = tmp_path / "files_at"
    at.mkdir()
    a, b = json.dumps({"run_id": "aaaaaaaaaaaa"}).encode(), json.dumps({"run_id": "bbbbbbbbbbbb", "v": 2}).encode()
    (at / "results.tar.gz").write_bytes(_tar({"./runs/aaaaaaaaaaaa.json": a, "./runs/bbbbbbbbbbbb.json": b,
                                              "./bench/cuda.json": b"{}", "./logs/table4.log": b"log"}, gz=True))
    ckpt = _tar({"aaaaaaaaaaaa.resume.pt": os.urandom(5000), "cccccccccccc.resume.pt": os.urandom(7000)}, gz=False)
    for i in range(0, len(ckpt), 4096):  # the parts split -d -a 2 writes
        (at / f"ckpt.tar.{i // 4096:02d}").write_bytes(ckpt[i:i + 4096])
    runs = root / "results" / "runs" / "blcl-table4"
    runs.mkdir(parents=True)
    (runs / "bbbbbbbbbbbb.json").write_bytes(b'{"run_id": "bbbbbbbbbbbb", "v": 1}')  # a different record is kept
    (root / "device_ckpt").mkdir()
    (root / "device_ckpt" / "old.resume.pt").write_bytes(b"stale")
    r = _sh(root, "unpack", str(at))
    assert r.returncode == 0, r.stderr
    assert (runs / "aaaaaaaaaaaa.json").read_bytes() == a
    assert (runs / "bbbbbbbbbbbb.json").read_bytes() == b'{"run_id": "bbbbbbbbbbbb", "v": 1}'
    assert "kept" in r.stdout and "bbbbbbbbbbbb" in r.stdout
    assert (root / "results" / "bench" / "cuda.json").read_text() == "{}"
    assert sorted(os.listdir(root / "device_ckpt")) == ["aaaaaaaaaaaa.resume.pt", "cccccccccccc.resume.pt"]
    assert "1 run JSONs" in r.stdout
