#!/usr/bin/env bash
# Issue 11's GPU work as one prepared script for a lent device machine (the `run` tool), within its per-call limit.
#
#   before the call, on this machine:  mkdir -p data_local && cp -r ../shared/data/MNIST data_local/
#   the call:   run(command="bash benchmarks/device_session.sh bench table4", carry=["data_local"], timeout_s=600)
#   after it:   copy <files_at>/runs/*.json into results/runs/blcl-table4/ and <files_at>/bench/cuda.json into
#               results/bench/, then ./reproduce.sh report and commit
#
# Steps, in the order given (default: smoke bench table4):
#   smoke   the tiny benchmark on the GPU (about a minute): the engine, packing, torch.compile and bf16 all run
#   bench   ./reproduce.sh bench --device cuda --size full -> $OUT/bench/cuda.json (the GPU targets)
#   table4  the ResNet-20 row of blcl-table4 (MNIST, 160 epochs, 9 runs, packed) -> $OUT/runs/*.json; it saves a
#           resumable checkpoint every 10 epochs, so a second call on the same warm machine goes on where the
#           first stopped (checkpoints/ is ignored, so it stays on the machine between calls)
#   packcheck  packed vs unpacked final accuracies of blcl-table4's MLP row (ERM, BLCL; 3 seeds, K=3) on the GPU
#           -> $OUT/bench/packcheck-blcl-table4-cuda.json
# Every step runs under `timeout` within BUDGET_S seconds (default 570, under the tool's 600 s limit) so that the
# results written so far are always copied to $OUT. If torch.compile fails on the device, the steps rerun with
# --compile off (recorded in every JSON under provenance.engine) and $OUT/compile_failed.txt says why.
set -uo pipefail
cd "$(dirname "$0")/.."

export CLREPRO_PYTHON="${CLREPRO_PYTHON:-python3}"      # the device's own interpreter: no venv can be built there
export CLREPRO_DATA="${CLREPRO_DATA:-$PWD/data_local}"  # carried MNIST (torchvision layout: MNIST/raw)
export CLREPRO_NO_DOWNLOAD=1                             # the device has no internet
OUT="${OUT:-$PWD/device_out}"
DEVICE="${DEVICE:-cuda}"
BUDGET_S="${BUDGET_S:-570}"
SIZE="${SIZE:-full}"                                    # bench size; tiny for a rehearsal on a CPU
TABLE4_BUDGET="${TABLE4_BUDGET:-full}"                  # smoke for a rehearsal on a CPU (table4, packcheck)
COMPILE="${COMPILE:-auto}"
start=$(date +%s)
mkdir -p "$OUT/bench" "$OUT/runs"
stamp="$OUT/.start"; touch "$stamp"

left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
log() { echo "[device_session $(( $(date +%s) - start ))s] $*" | tee -a "$OUT/session.log"; }

{ nvidia-smi 2>&1 || true; "$CLREPRO_PYTHON" -c "import torch, sys; print(sys.version); print('torch', torch.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"; } \
  > "$OUT/device.txt" 2>&1
log "device: $(tail -n 1 "$OUT/device.txt")"

collect() {  # what the steps wrote so far, to $OUT (only $OUT comes back)
  find results/runs/blcl-table4 -name '*.json' -newer "$stamp" -exec cp -f {} "$OUT/runs/" \; 2>/dev/null || true
}

run_step() {  # run_step NAME CMD...: under the time left; once more with --compile off if compile broke it
  local name="$1"; shift
  local t; t=$(( $(left) - 15 ))
  if (( t < 30 )); then log "$name: skipped, ${t}s left"; return 0; fi
  log "$name: $* (timeout ${t}s)"
  timeout "$t" "$@" --compile "$COMPILE" > "$OUT/$name.log" 2>&1
  local rc=$?
  log "$name: exit $rc"
  if (( rc != 0 && rc != 124 )) && [[ "$COMPILE" != off ]] && grep -qiE "dynamo|inductor|torch\._?compile|triton" "$OUT/$name.log"; then
    grep -iE "dynamo|inductor|compile|triton" "$OUT/$name.log" | tail -n 20 > "$OUT/compile_failed.txt"
    COMPILE=off
    t=$(( $(left) - 15 ))
    if (( t >= 30 )); then
      log "$name: torch.compile failed; again with --compile off (timeout ${t}s)"
      timeout "$t" "$@" --compile off > "$OUT/$name.nocompile.log" 2>&1
      log "$name: exit $?"
    fi
  fi
  collect
}

steps=("$@")
(( ${#steps[@]} )) || steps=(smoke bench table4)
for s in "${steps[@]}"; do
  case "$s" in
    smoke)  run_step smoke ./reproduce.sh bench --device "$DEVICE" --size tiny --out "$OUT/smoke" ;;
    bench)  run_step bench ./reproduce.sh bench --device "$DEVICE" --size "$SIZE" --out "$OUT/bench" ;;
    table4) run_step table4 ./reproduce.sh blcl-table4 --filter row=resnet20 --budget "$TABLE4_BUDGET" \
              --device "$DEVICE" --checkpoint-every 10 ;;
    packcheck) run_step packcheck ./reproduce.sh packcheck blcl-table4 --filter 'row=mlp variant=(erm|blcl) ' \
              --budget "$TABLE4_BUDGET" --pack 3 --device "$DEVICE" --out "$OUT/bench" ;;
    *) echo "device_session.sh: unknown step '$s'; allowed: smoke, bench, table4, packcheck" >&2; exit 2 ;;
  esac
done
collect
log "done: $(ls "$OUT/runs" | wc -l) run JSONs, bench: $(ls "$OUT/bench" 2>/dev/null | tr '\n' ' ')"
