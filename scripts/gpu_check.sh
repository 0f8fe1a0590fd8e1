#!/usr/bin/env bash
# One-shot GPU check for the borrowed test machine (see ../shared/notes/gpu-machine.md):
# installs the carried wheels, runs the CUDA-only tests and `fastcam bench` at full
# size, and leaves JSON/text under $OUT. Prepare here first:
#     bash ../shared/notes/pack-gpu-wheels.sh
# then run through the device tool with carry [".whl"] and a timeout inside its limit:
#     bash scripts/gpu_check.sh
# Knobs: STEPS (20), WARMUP (5), BATCH (8), COMPILE (auto), WORKERS (16).
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" || true
# The CUDA-only tests (staged loader through pinned buffers, device defaults).
timeout 240 python3 -m pytest -q tests/test_stage.py tests/test_optimized.py -k "cuda or device_defaults" \
  > "$OUT/cuda-tests.txt" 2>&1 || true
# Full-size throughput: baseline vs optimized step, loaders, whole epoch.
timeout 420 fastcam bench --device cuda --steps "${STEPS:-20}" --warmup "${WARMUP:-5}" \
  --batch-size "${BATCH:-8}" --compile "${COMPILE:-auto}" --workers "${WORKERS:-16}" \
  --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1 || true
tail -n 30 "$OUT"/*.txt
