#!/usr/bin/env bash
# One Slurm task of a fastcam job: the sbatch scripts run it through srun as
#   srun ... slurm/task.sh COMMAND [ARGS...]
# It names the task in its output file (rank, node, job step), runs COMMAND
# and reports its exit status, so that every rank's part in a run can be read
# afterwards from its own file.
#
# FASTCAM_TASK_ALONE=1 makes the task an independent worker instead of a rank
# of one distributed run (the tuning workers): the launcher's rank variables
# are removed, so fastcam's wire-up `auto` resolves to a single process, and
# the task keeps one GPU of its node (entry SLURM_LOCALID of the node's GPUs);
# with FASTCAM_TASK_STAGE_ROOT set, `--stage_dir ROOT/worker-LOCALID` is added
# to the command, so that concurrent workers never stage into one directory.
set -uo pipefail

rank="${SLURM_PROCID:-0}"
echo "fastcam-task: rank $rank of ${SLURM_NTASKS:-1}, local rank ${SLURM_LOCALID:-0}" \
  "on $(hostname -s), job ${SLURM_JOB_ID:-none} step ${SLURM_STEP_ID:-none}"

if [[ "${FASTCAM_TASK_ALONE:-0}" == 1 ]]; then
  unset SLURM_PROCID PMI_RANK PMI_SIZE RANK WORLD_SIZE LOCAL_RANK OMPI_COMM_WORLD_RANK
  local_id="${SLURM_LOCALID:-0}"
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
    if ((${#visible[@]} > 1)); then
      export CUDA_VISIBLE_DEVICES="${visible[local_id % ${#visible[@]}]}"
    fi
  elif ((${GPUS_PER_NODE:-0} > 0)); then
    export CUDA_VISIBLE_DEVICES="$((local_id % GPUS_PER_NODE))"
  fi
  echo "fastcam-task: independent worker${CUDA_VISIBLE_DEVICES:+ on GPU $CUDA_VISIBLE_DEVICES}"
  if [[ -n "${FASTCAM_TASK_STAGE_ROOT:-}" ]]; then
    set -- "$@" --stage_dir "$FASTCAM_TASK_STAGE_ROOT/worker-$local_id"
  fi
fi

(($# > 0)) || { echo "fastcam-task: error: no command given" >&2; exit 2; }
"$@"
status=$?
echo "fastcam-task: rank $rank exit status $status"
exit "$status"
