"""reproduce.sh's venv bootstrap: the stamp, the forwarded command, and a clear exit 2 when pip fails."""
import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON3 = """#!/bin/bash
# stands in for `python3 -m venv .venv`: the venv's python is another fake that plays pip and the suite
if [[ "$1 $2" == "-m venv" ]]; then
  mkdir -p "$3/bin"
  cat > "$3/bin/python" <<'INNER'
#!/bin/bash
if [[ "$1 $2" == "-m pip" ]]; then
  echo "pip $*"
  if [[ -n "${FAKE_PIP_FAIL:-}" ]]; then echo "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"; exit 1; fi
  exit 0
fi
echo "suite $*"
INNER
  chmod +x "$3/bin/python"
  exit 0
fi
exit 99
"""


def _project(tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()
    shutil.copy(ROOT / "reproduce.sh", proj / "reproduce.sh")
    shutil.copy(ROOT / "requirements.txt", proj / "requirements.txt")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON3)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k not in ("CLREPRO_PYTHON", "FAKE_PIP_FAIL")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return proj, env


def _run(proj, env, *args):
    return subprocess.run(["bash", str(proj / "reproduce.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_builds_venv_once_writes_stamp_and_forwards_the_command(tmp_path):
    proj, env = _project(tmp_path)
    r = _run(proj, env, "list", "--x")
    assert r.returncode == 0, r.stderr
    assert "setting up .venv" in r.stderr
    assert r.stdout.strip() == "suite -m benchmarks list --x"
    log = (proj / ".venv/install.log").read_text()
    assert "--no-cache-dir" in log and "-r requirements.txt" in log
    want = hashlib.sha256((proj / "requirements.txt").read_bytes()).hexdigest()
    assert (proj / ".venv/.requirements.sha256").read_text().strip() == want
    r2 = _run(proj, env, "test", "-k", "x")       # stamp matches: no second install
    assert r2.returncode == 0 and "setting up" not in r2.stderr
    assert r2.stdout.strip() == "suite -m pytest -q tests -k x"


def test_failed_install_exits_2_names_the_full_disk_and_writes_no_stamp(tmp_path):
    proj, env = _project(tmp_path)
    env["FAKE_PIP_FAIL"] = "1"
    r = _run(proj, env, "list")
    assert r.returncode == 2
    assert "disk filled up" in r.stderr and "installing requirements.txt failed" in r.stderr
    assert "suite" not in r.stdout
    assert not (proj / ".venv/.requirements.sha256").exists()
    env.pop("FAKE_PIP_FAIL")                       # the next call retries the install
    r = _run(proj, env, "list")
    assert r.returncode == 0 and "setting up .venv" in r.stderr
