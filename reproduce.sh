#!/usr/bin/env bash
# clrepro entry point.
#   ./reproduce.sh [TARGET] [options]   run a target (default: blcl-table5), then rewrite REPORT.md
#   ./reproduce.sh list | report        list targets / rewrite REPORT.md from results/
#   ./reproduce.sh test [pytest args]   the test suite (what .ci/run calls)
#   ./reproduce.sh bench | packcheck TARGET | nightly SUITE   speed, packed vs unpacked, a suite vs its baseline
# On first use it builds .venv from requirements.txt. To use an existing interpreter instead (a GPU image with
# torch already installed, no venv): CLREPRO_PYTHON=python3 ./reproduce.sh ...
set -euo pipefail
cd "$(dirname "$0")"

if [[ -z "${CLREPRO_DATA:-}" && -d ../shared/data ]]; then
  export CLREPRO_DATA="$(cd ../shared/data && pwd)"   # this project's machines and CI keep real data there
  export CLREPRO_NO_DOWNLOAD=1                         # ... read-only: nothing is ever downloaded into it
fi

python_for_run() {
  if [[ -n "${CLREPRO_PYTHON:-}" ]]; then
    echo "$CLREPRO_PYTHON"
    return
  fi
  local stamp=".venv/.requirements.sha256" want
  want="$(sha256sum requirements.txt | cut -d' ' -f1)"
  if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setting up .venv from requirements.txt (once; log in .venv/install.log) ..." >&2
    local free_kib
    free_kib="$(df -Pk . | awk 'NR==2 {print $4}')"
    if [[ -n "$free_kib" ]] && (( free_kib < 8 * 1024 * 1024 )); then
      echo "warning: $((free_kib / 1024)) MiB free here; the venv (torch with its CUDA wheels) needs about 7 GiB" >&2
    fi
    python3 -m venv .venv
    # --no-cache-dir: no second copy of the wheels in ~/.cache/pip (about 3 GiB)
    if ! .venv/bin/python -m pip install --no-cache-dir -r requirements.txt > .venv/install.log 2>&1; then
      tail -n 20 .venv/install.log >&2
      if grep -q "No space left on device" .venv/install.log; then
        echo "error: the disk filled up ($(df -Ph . | awk 'NR==2 {print $4}') free now); free space, then rerun" >&2
      fi
      echo "error: installing requirements.txt failed (full log: .venv/install.log)" >&2
      exit 2
    fi
    echo "$want" > "$stamp"
  fi
  echo ".venv/bin/python"
}

PY="$(python_for_run)"
if [[ "${1:-}" == "test" ]]; then
  shift
  exec "$PY" -m pytest -q tests "$@"
fi
exec "$PY" -m benchmarks "$@"
