#!/usr/bin/env bash
# One-shot GPU check for the borrowed test machine (../shared/notes/gpu-machine.md):
# about 15 minutes of device time in all and at most 10 minutes per command, so
# one run of this script must turn into numbers, whatever fails.
#
#     bash scripts/gpu_check.sh                          # on the GPU machine (device tool, timeout_s ~580)
#     FASTCAM_CHECK_DEVICE=cpu bash scripts/gpu_check.sh # CPU smoke mode: every part at 64x96 (CI)
#
# Installs nothing: fastcam runs from this working tree (PYTHONPATH=$ROOT; the
# machine has no registry, no pytest, no optuna, no mlperf-logging, and nothing
# here imports them). Each part (scripts/gpu/<part>.py) is its own process under
# its own `timeout`, rewrites $OUT/<part>.json after every measurement (a killed
# part keeps what it measured) and gets one line in $OUT/parts.jsonl
# {"part", "rc", "seconds", "limit"}. A part that cannot finish before the
# global deadline is skipped. The script always ends by writing
# $OUT/summary.json and a text summary, and exits 0 (bad knobs: exit 2 first).
#
# Knobs: OUT (default $PWD/gpu-out; only these <= 8 small files go there),
# FASTCAM_CHECK_DEVICE (cuda | cpu), FASTCAM_CHECK_DEADLINE (seconds, default 540),
# FASTCAM_CHECK_PARTS (comma list, default all, in the order below),
# FASTCAM_CHECK_LIMIT_<PART> (one part's limit, e.g. FASTCAM_CHECK_LIMIT_COMPILED=200),
# FASTCAM_CHECK_WORK (data, stage cache, compile cache, logs; default /tmp/fastcam-gpu-check;
# reused by a rerun on the same machine), FASTCAM_CHECK_FAIL (tests: see scripts/gpu/report.py).
set -uo pipefail # not -e: a failing part must not end the check

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$PWD/gpu-out}
WORK=${FASTCAM_CHECK_WORK:-/tmp/fastcam-gpu-check}
DEVICE=${FASTCAM_CHECK_DEVICE:-cuda}
DEADLINE=${FASTCAM_CHECK_DEADLINE:-540}
KILL_GRACE=5 # seconds between timeout's TERM and its KILL
# part:limit in seconds, in run order. Sum 530 < 560, so with the grace periods
# and the summary everything ends inside a 580 s device-tool timeout. compiled
# gets the most: the first full-network compile took 76-158 s on an H100.
PLAN=(env:25 eager:85 compiled:170 loader:75 epoch:130 micro:45)
PART_NAMES=$(printf '%s\n' "${PLAN[@]%%:*}" | paste -sd, -)
SELECTED=${FASTCAM_CHECK_PARTS:-$PART_NAMES}

die() { echo "gpu_check: $*" >&2; exit 2; }
[[ $DEVICE == cuda || $DEVICE == cpu ]] || die "FASTCAM_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'"
[[ $DEADLINE =~ ^[0-9]+$ ]] || die "FASTCAM_CHECK_DEADLINE must be whole seconds, got '$DEADLINE'"
for part in ${SELECTED//,/ }; do
  [[ ",$PART_NAMES," == *",$part,"* ]] || die "FASTCAM_CHECK_PARTS: unknown part '$part' (parts: $PART_NAMES)"
done

export OUT FASTCAM_CHECK_WORK=$WORK FASTCAM_CHECK_DEVICE=$DEVICE PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# One compile cache for every part and for a rerun (the epoch part reuses the compiled part's graphs).
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor" TRITON_CACHE_DIR="$WORK/triton"
if [[ $DEVICE == cpu ]]; then
  # The CI machine has 2 cores: intra-op threads on tiny tensors only add overhead (tests/conftest.py).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  # Triton kernels (fastcam.kernels) run only in triton's interpreter without a GPU; set before any import.
  export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
fi
mkdir -p "$OUT" "$WORK/logs" || die "cannot create $OUT or $WORK"
rm -f "$OUT/parts.jsonl" "$OUT/summary.json"
for entry in "${PLAN[@]}"; do rm -f "$OUT/${entry%%:*}.json"; done

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
START=$(now)
echo "gpu_check: device $DEVICE, parts $SELECTED, deadline ${DEADLINE}s, results in $OUT, logs in $WORK/logs"
for entry in "${PLAN[@]}"; do
  part=${entry%%:*}
  [[ ",$SELECTED," == *",$part,"* ]] || continue
  override="FASTCAM_CHECK_LIMIT_${part^^}"
  limit=${!override:-${entry#*:}}
  [[ $limit =~ ^[0-9]+$ ]] || die "$override must be whole seconds, got '$limit'"
  left=$(awk -v d="$DEADLINE" -v e="$(since "$START")" 'BEGIN { printf "%d", d - e }')
  if ((left < limit)); then
    echo "== $part: skipped (limit ${limit}s, ${left}s left before the deadline)"
    printf '{"part": "%s", "rc": null, "seconds": 0, "limit": %d, "skipped": "deadline"}\n' "$part" "$limit" \
      >>"$OUT/parts.jsonl"
    continue
  fi
  echo "== $part (limit ${limit}s, ${left}s left before the deadline)"
  t0=$(now)
  timeout -k "$KILL_GRACE" "$limit" python3 "$ROOT/scripts/gpu/$part.py" 2>&1 | tee "$WORK/logs/$part.log"
  rc=${PIPESTATUS[0]}
  seconds=$(since "$t0")
  echo "== $part: rc $rc in ${seconds}s"
  printf '{"part": "%s", "rc": %d, "seconds": %s, "limit": %d}\n' "$part" "$rc" "$seconds" "$limit" \
    >>"$OUT/parts.jsonl"
done

if ! timeout 60 python3 "$ROOT/scripts/gpu/summary.py"; then
  # Even without a working Python the parts' own lines come back.
  { printf '{"error": "scripts/gpu/summary.py failed", "parts": ['
    paste -sd, "$OUT/parts.jsonl" 2>/dev/null
    printf ']}\n'; } >"$OUT/summary.json"
  echo "gpu_check: summary.py failed; $OUT/summary.json holds the parts' lines only"
fi
exit 0
