#!/usr/bin/env bash
# Issue 11's GPU work as one prepared script for a lent device machine (the `run` tool), sized for its limits:
# 15 minutes of device time per session (start-up included), 10 minutes per call, a 64 MiB tree, and at most
# 8 files of 16 MiB back from $OUT.
#
#   here, once:      bash benchmarks/device_session.sh prepare      (gzipped MNIST -> data_local/, 11 MB)
#   the call:        run(command="bash benchmarks/device_session.sh bench table4",
#                        carry=["data_local", "device_ckpt"], timeout_s=600)
#   here, after it:  bash benchmarks/device_session.sh unpack <files_at>
#                    (run JSONs -> results/runs/blcl-table4/, bench JSONs -> results/bench/, mid-run checkpoints ->
#                    device_ckpt/), then ./reproduce.sh report and commit the JSONs and REPORT.md
#   if table4 is unfinished: unpack, then call `DS_BUDGET_S=<device seconds left - 60> bash benchmarks/device_session.sh
#   table4` again (same carry; `status` says what is left). On the warm machine it resumes from checkpoints/; on a
#   fresh one (a later call or session) from the carried device_ckpt/.
#
# Steps on the device, in the order given (default: bench table4):
#   smoke   the tiny benchmark on the GPU (about a minute): the engine, packing, torch.compile and bf16 all run
#   bench   ./reproduce.sh bench --device cuda --size full --rounds 2 --jobs 3x3 -> bench/cuda.json (GPU targets;
#           jobs-3x3 times the way table4 trains; if the step's time runs out, bench/cuda.partial.json holds the
#           rounds it finished)
#   table4  the ResNet-20 row of blcl-table4 (MNIST, 160 epochs, 9 runs): packed 3 seeds a network, $DS_JOBS (3) drivers
#           side by side on the one GPU (--jobs: small networks leave it idle between kernel launches), a resumable
#           checkpoint every 10 epochs
#   packcheck  packed vs unpacked final accuracies of blcl-table4's MLP row (ERM, BLCL; 3 seeds, K=3) on the GPU
# Every step runs under `timeout` within DS_BUDGET_S seconds (default 560, under the call's 600 s) so that what was
# written is always packed for the trip back: $OUT/results.tar.gz (run and bench JSONs, logs, device.txt, a
# checkpoint manifest), $OUT/session.log, and the mid-run checkpoints of unfinished runs as $OUT/ckpt.tar.NN parts
# (15 MiB each; up to 40 MiB in all, so that they fit the 64 MiB that comes back and the tree that carries them). If torch.compile fails on the device, the step reruns with --compile off (recorded in every JSON under
# provenance.engine) and logs/compile_failed.txt says why.
# Settings (environment, DS_ so that nothing the machine already sets is read): DS_BUDGET_S (560), DS_DEVICE (cuda),
# DS_SIZE (full; tiny for a CPU rehearsal), DS_BENCH_ROUNDS (2), DS_BENCH_JOBS (3x3), DS_TABLE4_BUDGET (full;
# smoke for a rehearsal), DS_JOBS (3), DS_CKPT_EVERY (10), DS_COMPILE (auto), DS_CKPT_CAP (40 MiB), DS_WORK.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == prepare ]]; then  # on this machine: MNIST for the trip, gzipped (53 MB raw, 11 MB gzipped)
  src="${2:-../shared/data}/MNIST/raw"
  if ! compgen -G "$src/*-ubyte" > /dev/null; then
    echo "device_session.sh prepare: no MNIST IDX files (*-ubyte) under $src; give the data root: prepare DIR" >&2
    exit 2
  fi
  mkdir -p data_local/MNIST/raw device_ckpt
  for f in "$src"/*-ubyte; do
    dst="data_local/MNIST/raw/$(basename "$f").gz"
    gzip -c "$f" > "$dst.tmp" && mv "$dst.tmp" "$dst" || { rm -f "$dst.tmp"; echo "gzip of $f failed" >&2; exit 1; }
  done
  du -sh data_local device_ckpt
  exit 0
fi
if [[ "${1:-}" == unpack ]]; then  # on this machine: what came back, into results/ and device_ckpt/
  at="${2:?usage: device_session.sh unpack <files_at>}"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  tar -xzf "$at/results.tar.gz" -C "$tmp" || exit 1
  mkdir -p results/runs/blcl-table4 results/bench device_ckpt
  n=0; same=0
  for f in "$tmp"/runs/*.json; do
    [[ -e "$f" ]] || continue
    dst="results/runs/blcl-table4/$(basename "$f")"
    if [[ -e "$dst" ]]; then
      if cmp -s "$f" "$dst"; then same=$((same + 1)); else echo "kept: $dst exists and differs (not overwritten)"; fi
      continue
    fi
    cp "$f" "$dst"; n=$((n + 1))
  done
  for f in "$tmp"/bench/*.json; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f")"
    cp "$f" "results/bench/$name"
    [[ "$name" == *.partial.json ]] || rm -f "results/bench/${name%.json}.partial.json"  # the finished bench wins
  done
  manifest="$tmp/ckpt_manifest.txt"
  state="$(head -n 1 "$manifest" 2>/dev/null)"
  case "$state" in
    none) rm -f device_ckpt/*.resume.pt; echo "mid-run checkpoints: none left on the device (device_ckpt/ emptied)" ;;
    returned)
      mkdir "$tmp/ckpt"
      if ! cat "$at"/ckpt.tar.* 2>/dev/null | tar -xf - -C "$tmp/ckpt" \
          || ! (cd "$tmp/ckpt" && tail -n +2 "$manifest" | sha256sum -c --quiet -); then
        echo "error: the checkpoint parts are missing or damaged; device_ckpt/ left as it was" >&2
        exit 1
      fi
      rm -f device_ckpt/*.resume.pt
      mv "$tmp"/ckpt/*.resume.pt device_ckpt/
      echo "mid-run checkpoints: $(ls device_ckpt | wc -l) in device_ckpt/ (checksums verified)" ;;
    withheld*) echo "warning: the device's mid-run checkpoints were too large to return ($state); device_ckpt/ left as it was" >&2 ;;
    *) echo "warning: no checkpoint manifest came back; device_ckpt/ left as it was" >&2 ;;
  esac
  echo "unpacked: $n new run JSONs into results/runs/blcl-table4/ ($same already there), bench: $(ls "$tmp"/bench 2>/dev/null | tr '\n' ' ')"
  echo "the session log is $at/session.log"
  exit 0
fi

steps=("$@")
(( ${#steps[@]} )) || steps=(bench table4)
for s in "${steps[@]}"; do
  case "$s" in smoke|bench|table4|packcheck) ;; *)
    echo "device_session.sh: unknown step '$s'; allowed: smoke, bench, table4, packcheck (on the device), prepare, unpack (here)" >&2
    exit 2 ;;
  esac
done

export CLREPRO_PYTHON="${CLREPRO_PYTHON:-python3}"      # the device's own interpreter: no venv can be built there
export CLREPRO_DATA="${CLREPRO_DATA:-$PWD/data_local}"  # carried MNIST (torchvision layout: MNIST/raw)
export CLREPRO_NO_DOWNLOAD=1                             # the device has no internet
export PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/device_out/out}"
WORK="${DS_WORK:-$PWD/device_out/work}"                     # everything is gathered here, then packed into $OUT
DEVICE="${DS_DEVICE:-cuda}"
BUDGET_S="${DS_BUDGET_S:-560}"
SIZE="${DS_SIZE:-full}"                                    # bench size; tiny for a rehearsal on a CPU
BENCH_ROUNDS="${DS_BENCH_ROUNDS:-2}"
BENCH_JOBS="${DS_BENCH_JOBS:-3x3}"                         # the bench's side-by-side path: how table4 trains below
TABLE4_BUDGET="${DS_TABLE4_BUDGET:-full}"                  # smoke for a rehearsal on a CPU (table4, packcheck)
JOBS="${DS_JOBS:-3}"
CKPT_EVERY="${DS_CKPT_EVERY:-10}"                          # epochs between mid-run checkpoints of table4
COMPILE="${DS_COMPILE:-auto}"
start=$(date +%s)
rm -rf "$WORK"; mkdir -p "$OUT" "$WORK/bench" "$WORK/runs" "$WORK/logs"
stamp="$WORK/.start"; touch "$stamp"

left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
log() { echo "[device_session $(( $(date +%s) - start ))s] $*" | tee -a "$WORK/session.log"; }

# carried inputs: gzipped MNIST is unpacked once; carried mid-run checkpoints go where the runner looks for them
for f in "$CLREPRO_DATA"/MNIST/raw/*.gz; do
  [[ -e "$f" && ! -e "${f%.gz}" ]] && gunzip -c "$f" > "${f%.gz}.tmp" && mv "${f%.gz}.tmp" "${f%.gz}"
done
if compgen -G "device_ckpt/*.resume.pt" > /dev/null; then
  mkdir -p checkpoints
  for f in device_ckpt/*.resume.pt; do [[ -e "checkpoints/$(basename "$f")" ]] || cp "$f" checkpoints/; done
fi

{ nvidia-smi 2>&1 || true; "$CLREPRO_PYTHON" -c "import torch, sys, os; print(sys.version); print('torch', torch.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', os.cpu_count(), 'cores')"; } \
  > "$WORK/device.txt" 2>&1
log "device: $(tail -n 1 "$WORK/device.txt")"

CKPT_CAP="${DS_CKPT_CAP:-$((40 * 1024 * 1024))}"  # what may come back as checkpoints: 64 MiB returned / carried, less the rest
pack_out() {  # what the steps wrote so far, packed into at most 5 files under $OUT (only $OUT comes back)
  find results/runs/blcl-table4 -name '*.json' -newer "$stamp" -exec cp -f {} "$WORK/runs/" \; 2>/dev/null
  local ck="$WORK/.ckpt.tar" manifest="$WORK/ckpt_manifest.txt"
  rm -f "$ck" "$OUT"/ckpt.tar.*
  if compgen -G "checkpoints/*.resume.pt" > /dev/null; then
    (cd checkpoints && tar -cf "$ck" ./*.resume.pt)
    local size; size=$(stat -c %s "$ck")
    if (( size <= CKPT_CAP )); then
      { echo returned; (cd checkpoints && sha256sum ./*.resume.pt); } > "$manifest"
    else
      echo "withheld $size bytes (cap $CKPT_CAP)" > "$manifest"
      log "mid-run checkpoints not returned: their tar is $size bytes, over $CKPT_CAP"
      rm -f "$ck"
    fi
  else
    echo none > "$manifest"
  fi
  cp -f "$WORK/session.log" "$OUT/session.log.tmp" && mv "$OUT/session.log.tmp" "$OUT/session.log"
  tar -czf "$OUT/results.tar.gz.tmp" -C "$WORK" --exclude=.start --exclude=.ckpt.tar . \
    && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
  if [[ -e "$ck" ]]; then
    split -b 15M -d -a 2 "$ck" "$OUT/ckpt.tar."  # at most 3 parts under the cap
    rm -f "$ck"
  fi
}

run_step() {  # run_step NAME CMD...: under the time left; once more with --compile off if compile broke it
  local name="$1"; shift
  local t; t=$(( $(left) - 20 ))
  if (( t < 30 )); then log "$name: skipped, ${t}s left"; return 0; fi
  log "$name: $* (timeout ${t}s)"
  timeout "$t" "$@" --compile "$COMPILE" > "$WORK/logs/$name.log" 2>&1
  local rc=$?
  log "$name: exit $rc"
  if (( rc != 0 && rc != 124 )) && [[ "$COMPILE" != off ]] && grep -qiE "dynamo|inductor|torch\._?compile|triton" "$WORK/logs/$name.log"; then
    grep -iE "dynamo|inductor|compile|triton" "$WORK/logs/$name.log" | tail -n 20 > "$WORK/logs/compile_failed.txt"
    COMPILE=off
    t=$(( $(left) - 20 ))
    if (( t >= 30 )); then
      log "$name: torch.compile failed; again with --compile off (timeout ${t}s)"
      timeout "$t" "$@" --compile off > "$WORK/logs/$name.nocompile.log" 2>&1
      log "$name: exit $?"
    fi
  fi
  pack_out
}

for s in "${steps[@]}"; do
  case "$s" in
    smoke)  run_step smoke ./reproduce.sh bench --device "$DEVICE" --size tiny --out "$WORK/smoke" ;;
    bench)  run_step bench ./reproduce.sh bench --device "$DEVICE" --size "$SIZE" --rounds "$BENCH_ROUNDS" \
              --jobs "$BENCH_JOBS" --out "$WORK/bench" ;;
    table4) run_step table4 ./reproduce.sh blcl-table4 --filter row=resnet20 --budget "$TABLE4_BUDGET" \
              --device "$DEVICE" --pack 3 --jobs "$JOBS" --checkpoint-every "$CKPT_EVERY" ;;
    packcheck) run_step packcheck ./reproduce.sh packcheck blcl-table4 --filter 'row=mlp variant=(erm|blcl) ' \
              --budget "$TABLE4_BUDGET" --pack 3 --device "$DEVICE" --out "$WORK/bench" ;;
  esac
done
log "done: $(ls "$WORK/runs" | wc -l) run JSONs, bench: $(ls "$WORK/bench" 2>/dev/null | tr '\n' ' ')"
pack_out
ls -la "$OUT"
