#!/usr/bin/env bash
# Regenerates the CPU convergence study of RESULTS.md from scratch:
# a small synthetic data set, then baseline defaults, optimized defaults and
# the tuned best configuration (fastcam tune), each trained to the same stated
# target, then fastcam compare's table and plots.
#
# Usage: scripts/cpu_study.sh [OUT]            (default OUT=results/cpu-study)
# Knobs (environment): TARGET (0.5), EPOCHS (15), TRIALS (6), TUNE_EPOCHS (8),
#   HEIGHT x WIDTH (64 x 96), TRAIN/VALIDATION samples (128/32), SEED (7).
set -euo pipefail

OUT=${1:-results/cpu-study}
TARGET=${TARGET:-0.5}
EPOCHS=${EPOCHS:-15}
TRIALS=${TRIALS:-6}
TUNE_EPOCHS=${TUNE_EPOCHS:-8}
HEIGHT=${HEIGHT:-64}
WIDTH=${WIDTH:-96}
TRAIN=${TRAIN:-128}
VALIDATION=${VALIDATION:-32}
SEED=${SEED:-7}
DATA="$OUT/data"
RUNS="$OUT/runs"

start=$(date +%s)
# From scratch: an earlier study's logs, journal or plots would otherwise be
# compared, joined or kept alongside (logs and studies are never overwritten).
rm -rf "$RUNS" "$OUT/tune" "$OUT/plots" "$OUT/table.md" "$OUT/duration.txt"
mkdir -p "$OUT"
fastcam data synth --out "$DATA" --train "$TRAIN" --validation "$VALIDATION" \
  --height "$HEIGHT" --width "$WIDTH" --seed 1 --force --no-progress
common=(--data_dir_prefix "$DATA" --device cpu --seed "$SEED" --target_iou "$TARGET" --max_inter_threads 2)

fastcam train --mode baseline "${common[@]}" --max_epochs "$EPOCHS" --output_dir "$RUNS/baseline" --run_tag baseline
fastcam train --mode optimized "${common[@]}" --max_epochs "$EPOCHS" --output_dir "$RUNS/optimized" --run_tag optimized
fastcam tune "${common[@]}" --max_epochs "$TUNE_EPOCHS" --output_dir "$OUT/tune" --trials "$TRIALS" \
  --study_name cpu-study
fastcam train --mode optimized --config "$OUT/tune/best.yaml" "${common[@]}" --max_epochs "$EPOCHS" \
  --output_dir "$RUNS/tuned" --run_tag tuned

fastcam compare "$RUNS/baseline" "$RUNS/optimized" "$RUNS/tuned" --plot "$OUT/plots" | tee "$OUT/table.md"
# Checkpoints are large and not part of the study's results.
find "$RUNS" "$OUT/tune" -name '*.cpt' -delete
rm -rf "$DATA" "$RUNS"/*/staged "$OUT/tune/staged"
echo "study took $(( ($(date +%s) - start) / 60 )) min" | tee "$OUT/duration.txt"
