#!/usr/bin/env bash
# Issues 11 and 18's GPU work as one prepared script for a lent device machine (the `run` tool), sized for its limits:
# 15 minutes of device time per session (start-up included), 10 minutes per call, 64 MiB carried per call (the tree,
# about 6 MiB, included), and at most 8 files of 16 MiB back from $OUT.
#
# CIFAR-10 (issue 18: blcl-table1's ResNet-20 row), two carries since the data (95 MiB) exceeds one call:
#   here, once:  bash benchmarks/device_session.sh stage   (../shared/data/CIFAR10 -> data_local/stage1, stage2: 49 MiB
#                each, with a sha256 manifest; it prints the sizes and these calls with the carries that fit)
#   call 1:      run(command="bash benchmarks/device_session.sh recv", carry=["data_local/stage1"], timeout_s=120)
#                (under a minute; part 1 -> data_local/CIFAR10 on the device, which a warm machine keeps)
#   call 2:      run(command="DS_BUDGET_S=<min(560, device seconds left - 60)> bash benchmarks/device_session.sh recv
#                    table1", carry=["data_local/stage2"], timeout_s=600)
#                (part 2 merged beside part 1, all files sha256-checked and decoded once (about 15 s), then table1
#                until the budget ends; carry only data_local/stageN, never data_local: that would replace the merged
#                data_local/CIFAR10 on the device)
#   after each:  bash benchmarks/device_session.sh unpack <files_at>, then ./reproduce.sh report; commit the JSONs
#   Mid-run checkpoints (device_ckpt/; estimated 30-45 MB for table1) do not fit beside a part: a session that resumes
#   carries them alone first, run(command="bash benchmarks/device_session.sh recv", carry=["device_ckpt"]) (it
#   copies them into checkpoints/, which a warm machine keeps), then calls 1 and 2. If the machine went cold
#   between calls, `recv` names the part that is missing and exits 3 before any other step: carry it again.
# MNIST (issue 11):
#   here, once:  bash benchmarks/device_session.sh prepare      (gzipped MNIST -> data_local/MNIST, 11 MB)
#                (carry data_local/MNIST, not data_local: the stage parts there would not fit)
#   the call:    run(command="bash benchmarks/device_session.sh bench table4",
#                    carry=["data_local/MNIST", "device_ckpt"], timeout_s=600)
#   then unpack as above. If table4 is unfinished: unpack, then call `DS_BUDGET_S=<device seconds left - 60> bash
#   benchmarks/device_session.sh table4` again (same carry; `status` says what is left). On the warm machine it resumes
#   from checkpoints/; on a fresh one (a later call or session) from the carried device_ckpt/.
# unpack: run JSONs and loss snapshots -> results/runs/<target>/ (a differing file already there is never
# overwritten), embeddings -> results/embeddings/, bench JSONs -> results/bench/, mid-run checkpoints -> device_ckpt/.
#
# Steps on the device, in the order given (default: bench table4):
#   recv    data_local/stage*/CIFAR10/* -> data_local/CIFAR10/ (merged; the stage folders are then removed), then,
#           once all files are there, their sha256 against the manifest and one decode into $CLREPRO_CACHE. Data
#           still incomplete: it names the missing part; alone it exits 0 (call 1), before other steps it exits 3
#   smoke   the tiny benchmark on the GPU (about a minute): the engine, packing, torch.compile and bf16 all run
#   bench   ./reproduce.sh bench --device cuda --size full --rounds 2 --jobs 3x3 -> bench/cuda.json (GPU targets;
#           jobs-3x3 times the way table4 trains; if the step's time runs out, bench/cuda.partial.json holds the
#           rounds it finished)
#   bench-cifar  the bench's real CIFAR-10 workload alone (--workloads cifar10-resnet20, --data data_local), once recv
#           has merged CIFAR-10 -> bench-cifar/cuda.json (unpack: results/bench/cifar10/; it never replaces the full
#           bench's results/bench/cuda.json). The full bench runs that workload too when CIFAR-10 is there
#   table4  the ResNet-20 row of blcl-table4 (MNIST, 160 epochs, 9 runs): packed 3 seeds a network, $DS_JOBS (3) drivers
#           side by side on the one GPU (--jobs: small networks leave it idle between kernel launches), a resumable
#           checkpoint every 10 epochs
#   table1  the ResNet-20 row of blcl-table1 (CIFAR-10, 160 epochs), ERM and both BLCL readings (blcl, blcl-label):
#           9 runs, packed and drivers as table4, a checkpoint every $DS_CKPT_EVERY epochs (estimated 1 GPU-hour:
#           it resumes over several calls and sessions)
#   packcheck  packed vs unpacked final accuracies of blcl-table4's MLP row (ERM, BLCL; 3 seeds, K=3) on the GPU
# Every step runs under `timeout` within DS_BUDGET_S seconds (default 560, under the call's 600 s) so that what was
# written is always packed for the trip back: $OUT/results.tar.gz (run and bench JSONs as results/ lays them out,
# logs, device.txt, a checkpoint manifest), $OUT/session.log, and, once a training step (table1, table4, packcheck)
# was reached (else unpack leaves device_ckpt/ as it is), the mid-run checkpoints of unfinished runs as
# $OUT/ckpt.tar.NN parts (15 MiB each; up to 40 MiB in all, so that they fit the 64 MiB that comes back and the tree
# that carries them). If torch.compile fails on the device, the step
# reruns with --compile off (recorded in every JSON under provenance.engine) and logs/compile_failed.txt says why.
# Settings (environment, DS_ so that nothing the machine already sets is read): DS_BUDGET_S (560), DS_DEVICE (cuda),
# DS_SIZE (full; tiny for a CPU rehearsal), DS_BENCH_ROUNDS (2), DS_BENCH_JOBS (3x3), DS_TABLE4_BUDGET and
# DS_TABLE1_BUDGET (full; smoke for a rehearsal), DS_TABLE1_FILTER (its 9 runs), DS_JOBS (3), DS_CKPT_EVERY (10),
# DS_COMPILE (auto), DS_CKPT_CAP (40 MiB), DS_WORK, DS_CACHE (decoded datasets, device_out/cache); here:
# DS_PART_MIB (60, the largest stage part).
set -uo pipefail
cd "$(dirname "$0")/.."

MIB=$((1024 * 1024))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
tree_bytes() {  # what a call carries besides the carried ignored paths: tracked and unignored files (empty: no git)
  git rev-parse --is-inside-work-tree > /dev/null 2>&1 || return 0
  git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2> /dev/null | awk '{ s += $1 } END { print s + 0 }'
}

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
if [[ "${1:-}" == stage ]]; then  # on this machine: CIFAR-10 in two parts, one per call, with a sha256 manifest
  src="${2:-../shared/data}/CIFAR10"
  cap=$(( ${DS_PART_MIB:-60} * MIB ))
  if [[ ! -f "$src/meta.json" ]]; then
    echo "device_session.sh stage: no $src/meta.json (the CIFAR-10 WebP copy); give the data root: stage DIR" >&2
    exit 2
  fi
  # the mosaics meta.json lists (train, then test): the first half travel with the small files in part 1
  mapfile -t mosaics < <(python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))
print("\n".join(m["files"]["train"] + m["files"]["test"]))' "$src/meta.json")
  if (( ${#mosaics[@]} < 2 )); then
    echo "device_session.sh stage: $src/meta.json lists ${#mosaics[@]} mosaic file(s); two parts need 2 or more" >&2
    exit 2
  fi
  h=$(( (${#mosaics[@]} + 1) / 2 ))
  part1=(meta.json labels.npz); [[ -f "$src/README.md" ]] && part1+=(README.md)
  part1+=("${mosaics[@]:0:h}"); part2=("${mosaics[@]:h}")
  for f in "${part1[@]}" "${part2[@]}"; do
    [[ -f "$src/$f" ]] || { echo "device_session.sh stage: $src/$f is missing" >&2; exit 2; }
  done
  tree="$(tree_bytes)"; ckpt=$(cat device_ckpt/* 2> /dev/null | wc -c)
  sizes=()
  for k in 1 2; do
    declare -n files="part$k"
    s=0; for f in "${files[@]}"; do s=$(( s + $(stat -c %s "$src/$f") )); done
    if (( s > cap )); then
      echo "device_session.sh stage: part $k (${files[*]}) would be $(mib "$s"), over the ${DS_PART_MIB:-60} MiB a" \
           "part may take (DS_PART_MIB; a call carries 64 MiB, the tree included); nothing staged" >&2
      exit 2
    fi
    if [[ -n "$tree" ]] && (( s + tree > 64 * MIB )); then
      echo "device_session.sh stage: part $k ($(mib "$s")) and the tree ($(mib "$tree")) exceed the 64 MiB a call" \
           "carries; nothing staged" >&2
      exit 2
    fi
    sizes+=("$s")
    unset -n files
  done
  rm -rf data_local/stage1 data_local/stage2
  mkdir -p data_local/stage1/CIFAR10 data_local/stage2/CIFAR10 device_ckpt
  for k in 1 2; do
    declare -n files="part$k"
    for f in "${files[@]}"; do
      cp "$src/$f" "data_local/stage$k/CIFAR10/$f" || { echo "copy of $src/$f failed" >&2; exit 1; }
    done
    chmod u+w "data_local/stage$k/CIFAR10"/*
    (cd "data_local/stage$k/CIFAR10" && sha256sum "${files[@]}") >> data_local/stage1/CIFAR10.sha256
    printf "$k %s\n" "${files[@]}" >> data_local/stage1/CIFAR10.parts
    unset -n files
  done
  cp data_local/stage1/CIFAR10.sha256 data_local/stage1/CIFAR10.parts data_local/stage2/  # either part names both
  echo "part 1: data_local/stage1 $(mib "${sizes[0]}") (${part1[*]})"
  echo "part 2: data_local/stage2 $(mib "${sizes[1]}") (${part2[*]})"
  echo "tree: $(if [[ -n "$tree" ]]; then mib "$tree"; else echo unknown; fi), device_ckpt: $(mib "$ckpt")"
  with="" extra=""
  if (( ckpt > 0 )); then
    if [[ -n "$tree" ]] && (( tree + sizes[0] + ckpt <= 62 * MIB )); then with=', "device_ckpt"'
    else extra='run(command="bash benchmarks/device_session.sh recv", carry=["device_ckpt"], timeout_s=120)'; fi
  fi
  echo "the calls:"
  [[ -n "$extra" ]] && echo "  $extra   (the checkpoints alone: they fit beside no part)"
  echo "  run(command=\"bash benchmarks/device_session.sh recv\", carry=[\"data_local/stage1\"$with], timeout_s=120)"
  echo "  run(command=\"DS_BUDGET_S=<min(560, device seconds left - 60)> bash benchmarks/device_session.sh recv table1\"," \
       "carry=[\"data_local/stage2\"], timeout_s=600)"
  exit 0
fi
if [[ "${1:-}" == unpack ]]; then  # on this machine: what came back, into results/ and device_ckpt/
  at="${2:?usage: device_session.sh unpack <files_at>}"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  tar -xzf "$at/results.tar.gz" -C "$tmp" || exit 1
  mkdir -p results/bench device_ckpt
  n=0; same=0; targets=()
  place() {  # place FILE DIR: copy FILE into DIR unless a different file of that name is there
    local dst="$2/$(basename "$1")"
    mkdir -p "$2"
    if [[ ! -e "$dst" ]]; then
      cp "$1" "$dst"; [[ "$dst" == *.json ]] && n=$((n + 1))
    elif cmp -s "$1" "$dst"; then
      [[ "$dst" == *.json ]] && same=$((same + 1))
    else
      echo "kept: $dst exists and differs (not overwritten)"
    fi
    return 0
  }
  for f in "$tmp"/runs/*.json; do  # a results.tar.gz of the issue-11 script: table4's JSONs, flat
    [[ -e "$f" ]] && { place "$f" results/runs/blcl-table4; targets+=(blcl-table4); }
  done
  for d in "$tmp"/runs/*/; do
    t="$(basename "$d")"
    [[ -d "$d" && "$t" =~ ^[A-Za-z0-9._-]+$ ]] || continue
    for f in "$d"*.json "$d"*.npz; do [[ -e "$f" ]] && place "$f" "results/runs/$t"; done
    targets+=("$t")
  done
  for f in "$tmp"/embeddings/*.npz; do [[ -e "$f" ]] && place "$f" results/embeddings; done
  for f in "$tmp"/bench/*.json "$tmp"/bench-cifar/*.json; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f")"; d=results/bench; [[ "$f" == */bench-cifar/* ]] && d=results/bench/cifar10
    mkdir -p "$d"; cp "$f" "$d/$name"
    [[ "$name" == *.partial.json ]] || rm -f "$d/${name%.json}.partial.json"  # the finished bench wins
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
    untouched*) echo "mid-run checkpoints: no training step ran; device_ckpt/ left as it was" ;;
    withheld*) echo "warning: the device's mid-run checkpoints were too large to return ($state); device_ckpt/ left as it was" >&2 ;;
    *) echo "warning: no checkpoint manifest came back; device_ckpt/ left as it was" >&2 ;;
  esac
  where=""; (( ${#targets[@]} )) && where="$(printf '%s\n' "${targets[@]}" | sort -u | sed 's|^|results/runs/|; s|$|/|' | tr '\n' ' ')"
  echo "unpacked: $n new run JSONs into ${where:-results/runs/ }($same already there)," \
       "bench: $(cd "$tmp" && ls bench/* bench-cifar/* 2>/dev/null | tr '\n' ' ')"
  echo "the session log is $at/session.log"
  exit 0
fi

steps=("$@")
(( ${#steps[@]} )) || steps=(bench table4)
for s in "${steps[@]}"; do
  case "$s" in
    recv|smoke|bench|bench-cifar|table1|table4|packcheck) ;;
    *) echo "device_session.sh: unknown step '$s'; allowed: recv, smoke, bench, bench-cifar, table1, table4, packcheck" \
            "(on the device), prepare, stage, unpack (here)" >&2
       exit 2 ;;
  esac
done

export CLREPRO_PYTHON="${CLREPRO_PYTHON:-python3}"      # the device's own interpreter: no venv can be built there
export CLREPRO_DATA="${CLREPRO_DATA:-$PWD/data_local}"  # carried MNIST (MNIST/raw) and received CIFAR-10 (CIFAR10/)
export CLREPRO_CACHE="${DS_CACHE:-$PWD/device_out/cache}"  # decoded CIFAR-10 (184 MB), kept while the machine is warm
export CLREPRO_NO_DOWNLOAD=1                             # the device has no internet
export PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/device_out/out}"
WORK="$(realpath -m "${DS_WORK:-$PWD/device_out/work}")"  # everything is gathered here, then packed into $OUT
DEVICE="${DS_DEVICE:-cuda}"
BUDGET_S="${DS_BUDGET_S:-560}"
SIZE="${DS_SIZE:-full}"                                    # bench size; tiny for a rehearsal on a CPU
BENCH_ROUNDS="${DS_BENCH_ROUNDS:-2}"
BENCH_JOBS="${DS_BENCH_JOBS:-3x3}"                         # the bench's side-by-side path: how table4 trains below
TABLE4_BUDGET="${DS_TABLE4_BUDGET:-full}"                  # smoke for a rehearsal on a CPU (table4, packcheck)
TABLE1_BUDGET="${DS_TABLE1_BUDGET:-full}"                  # smoke for a rehearsal on a CPU
TABLE1_FILTER="${DS_TABLE1_FILTER:-row=resnet20 variant=(erm|blcl|blcl-label) }"  # table1's runs (a --filter regex)
JOBS="${DS_JOBS:-3}"
CKPT_EVERY="${DS_CKPT_EVERY:-10}"                          # epochs between mid-run checkpoints of table4 and table1
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
  # run JSONs, loss snapshots and embeddings written in this call, laid out as under results/
  (cd results 2>/dev/null && find runs embeddings -type f -newer "$stamp" \( -name '*.json' -o -name '*.npz' \) \
    -exec cp --parents -f {} "$WORK/" \; 2>/dev/null)
  local ck="$WORK/.ckpt.tar" manifest="$WORK/ckpt_manifest.txt"
  rm -f "$ck" "$OUT"/ckpt.tar.*
  if (( ! trains )); then
    echo "untouched (no training step in this call)" > "$manifest"
  elif compgen -G "checkpoints/*.resume.pt" > /dev/null; then
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

trains=0  # 1 once a training step is reached: only then do checkpoints/ say what is left on the device
run_step() {  # run_step NAME CMD...: under the time left; once more with --compile off if compile broke it
  local name="$1"; shift
  [[ "$name" == table1 || "$name" == table4 || "$name" == packcheck ]] && trains=1
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

recv() {  # carried CIFAR-10 parts -> $CLREPRO_DATA/CIFAR10; 0: complete and checked, 4: a part still missing, 3: else
  local dst="$CLREPRO_DATA/CIFAR10" p
  for p in data_local/stage*/; do
    [[ -d "$p/CIFAR10" ]] || continue
    mkdir -p "$dst"
    log "recv: $(basename "$p"): $(ls "$p/CIFAR10" | tr '\n' ' ')-> $dst"
    if ! { { ! compgen -G "$p/CIFAR10/*" > /dev/null || mv -f "$p"/CIFAR10/* "$dst/"; } \
             && cp -f "$p"/CIFAR10.sha256 "$p"/CIFAR10.parts "$CLREPRO_DATA/"; }; then
      log "recv: moving $p into $dst failed"; return 3
    fi
    rm -rf "$p"
  done
  local sums="$CLREPRO_DATA/CIFAR10.sha256" parts="$CLREPRO_DATA/CIFAR10.parts"
  if [[ ! -f "$sums" || ! -f "$parts" ]]; then
    log "recv: no CIFAR-10 part on this machine (a fresh one): carry data_local/stage1, then data_local/stage2 (stage)"
    return 3
  fi
  local k f missing=""
  while read -r k f; do [[ -e "$dst/$f" ]] || missing+=" $k"; done < "$parts"
  if [[ -n "$missing" ]]; then
    for k in $(tr ' ' '\n' <<< "$missing" | sort -u); do
      log "recv: part $k missing ($(awk -v k="$k" '$1 == k { printf "%s ", $2 }' "$parts")): carry data_local/stage$k" \
          "in a call on this warm machine"
    done
    return 4
  fi
  local bad
  if ! bad="$(cd "$dst" && sha256sum -c --quiet "$sums" 2>&1)"; then
    log "recv: damaged, their sha256 differs from the manifest: $(tr '\n' ' ' <<< "$bad")(stage and carry again)"
    return 3
  fi
  log "recv: CIFAR-10 complete, $(wc -l < "$sums") files sha256-checked; decoding once into $CLREPRO_CACHE"
  if ! timeout "$(( $(left) > 150 ? 120 : 30 ))" "$CLREPRO_PYTHON" -c 'import sys
from data.cifar_webp import load
s, _, _ = load(sys.argv[1], "cifar10")
print("decoded", {k: tuple(v[0].shape) for k, v in s.items()})' "$CLREPRO_DATA" > "$WORK/logs/recv.log" 2>&1; then
    log "recv: decoding failed: $(tail -n 3 "$WORK/logs/recv.log" | tr '\n' ' ')"
    return 3
  fi
  log "recv: $(tail -n 1 "$WORK/logs/recv.log")"
}

cifar_here() {  # a CIFAR step needs recv's merged copy
  [[ -f "$CLREPRO_DATA/CIFAR10/meta.json" ]] && return 0
  log "$1: skipped, no CIFAR-10 in $CLREPRO_DATA (carry the stage parts and run recv first)"; return 1
}

for i in "${!steps[@]}"; do
  s="${steps[$i]}"
  case "$s" in
    recv)   recv; rc=$?
            if (( rc == 4 && i == ${#steps[@]} - 1 )); then log "recv: the rest comes in the next call"
            elif (( rc != 0 )); then
              (( i < ${#steps[@]} - 1 )) && log "recv: exit 3; not run: ${steps[*]:i+1}"
              pack_out; exit 3
            fi ;;
    smoke)  run_step smoke ./reproduce.sh bench --device "$DEVICE" --size tiny --out "$WORK/smoke" ;;
    bench)  run_step bench ./reproduce.sh bench --device "$DEVICE" --size "$SIZE" --rounds "$BENCH_ROUNDS" \
              --jobs "$BENCH_JOBS" --out "$WORK/bench" ;;
    bench-cifar) cifar_here bench-cifar && run_step bench-cifar ./reproduce.sh bench --device "$DEVICE" --size "$SIZE" \
              --rounds "$BENCH_ROUNDS" --workloads cifar10-resnet20 --data "$CLREPRO_DATA" --out "$WORK/bench-cifar" ;;
    table4) run_step table4 ./reproduce.sh blcl-table4 --filter row=resnet20 --budget "$TABLE4_BUDGET" \
              --device "$DEVICE" --pack 3 --jobs "$JOBS" --checkpoint-every "$CKPT_EVERY" ;;
    table1) cifar_here table1 && run_step table1 ./reproduce.sh blcl-table1 \
              --filter "$TABLE1_FILTER" --budget "$TABLE1_BUDGET" \
              --device "$DEVICE" --pack 3 --jobs "$JOBS" --checkpoint-every "$CKPT_EVERY" ;;
    packcheck) run_step packcheck ./reproduce.sh packcheck blcl-table4 --filter 'row=mlp variant=(erm|blcl) ' \
              --budget "$TABLE4_BUDGET" --pack 3 --device "$DEVICE" --out "$WORK/bench" ;;
  esac
done
log "done: $(find "$WORK/runs" -name '*.json' | wc -l) run JSONs," \
    "bench: $(cd "$WORK" && ls bench/* bench-cifar/* 2>/dev/null | tr '\n' ' ')"
pack_out
ls -la "$OUT"
