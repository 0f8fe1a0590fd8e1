# shellcheck shell=bash
# Settings shared by the fastcam sbatch scripts (baseline, optimized, tune).
# Sourced by them inside the job, never run on its own. Every knob is an
# environment variable; docs/slurm.md documents each one.
#
# Defines: fastcam_die MESSAGE, fastcam_require_dir NAME, fastcam_mode
# DEFAULT OTHER... (MODE, the run type the script runs), fastcam_launch
# PATTERN ARGS... (runs `fastcam ARGS` as every task of the job, each task's
# output in its own file PATTERN, %t = task id), fastcam_stage_dir and
# fastcam_remove_stage_dir (node-local staging), and fastcam_finish STATUS
# (writes OUTPUT_DIR/slurm-JOBID.exit and exits with STATUS).

fastcam_die() {
  echo "fastcam-slurm: error: $*" >&2
  exit 2
}

[[ -n "${SLURM_JOB_ID:-}" ]] || fastcam_die "submit this script with sbatch (SLURM_JOB_ID is not set)"

# --- resources: one task per GPU ------------------------------------------
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-4}}"  # Slurm sets it when GPUs are allocated
[[ "$GPUS_PER_NODE" =~ ^[0-9]+$ ]] || fastcam_die "GPUS_PER_NODE must be a whole number, not '$GPUS_PER_NODE'"
if ((GPUS_PER_NODE > 0)); then
  DEVICE="${DEVICE:-cuda}"
  TASKS_PER_NODE="${TASKS_PER_NODE:-$GPUS_PER_NODE}"
else  # the CPU variant: GPUS_PER_NODE=0
  DEVICE="${DEVICE:-cpu}"
  # The allocation's own count: --ntasks-per-node, else the first count of
  # SLURM_TASKS_PER_NODE ("2" or "2(x3)" for sbatch -n), else 1.
  allocated_per_node="${SLURM_TASKS_PER_NODE:-1}"
  TASKS_PER_NODE="${TASKS_PER_NODE:-${SLURM_NTASKS_PER_NODE:-${allocated_per_node%%[(,]*}}}"
fi
[[ "$TASKS_PER_NODE" =~ ^[1-9][0-9]*$ ]] || fastcam_die "TASKS_PER_NODE must be a positive whole number, not '$TASKS_PER_NODE'"
CPUS_PER_TASK="${CPUS_PER_TASK:-${SLURM_CPUS_PER_TASK:-1}}"
[[ "$CPUS_PER_TASK" =~ ^[1-9][0-9]*$ ]] || fastcam_die "CPUS_PER_TASK must be a positive whole number, not '$CPUS_PER_TASK'"
NODES="${SLURM_JOB_NUM_NODES:-1}"
NTASKS=$((NODES * TASKS_PER_NODE))

# --- where things go ------------------------------------------------------
OUTPUT_DIR="${OUTPUT_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/fastcam-runs/${SLURM_JOB_NAME:-fastcam}-$SLURM_JOB_ID}"
OUTPUT_DIR="$(realpath -m -- "$OUTPUT_DIR")"  # srun resolves relative paths per node
RUN_TAG="${RUN_TAG:-${SLURM_JOB_NAME:-fastcam}}"
RUN_TAG="${RUN_TAG//\//_}"  # the MLPerf log is OUTPUT_DIR/logs/RUN_TAG.log: no slashes
mkdir -p -- "$OUTPUT_DIR" || fastcam_die "cannot create OUTPUT_DIR '$OUTPUT_DIR'"

# --- software: environment activation, container, the fastcam command -----
if [[ -n "${FASTCAM_SETUP:-}" ]]; then
  # e.g. "module load cuda/12.4; source ~/venvs/fastcam/bin/activate"; srun
  # hands the resulting environment to every task.
  # Activation scripts (conda's among them) read unset variables: no `set -u` here.
  set +u
  eval "$FASTCAM_SETUP" || fastcam_die "FASTCAM_SETUP failed: $FASTCAM_SETUP"
  set -u
fi
read -ra FASTCAM_CMD <<<"${FASTCAM:-fastcam}"
read -ra FASTCAM_CONTAINER_CMD <<<"${FASTCAM_CONTAINER:-}"
read -ra FASTCAM_SRUN_EXTRA <<<"${SRUN_EXTRA_ARGS:-}"
if ((${#FASTCAM_CONTAINER_CMD[@]} == 0)) && ! command -v "${FASTCAM_CMD[0]}" >/dev/null; then
  fastcam_die "'${FASTCAM_CMD[0]}' not found: set FASTCAM_SETUP to activate fastcam's environment, or FASTCAM to its command"
fi

# --- wire-up and communication ----------------------------------------------
WIREUP="${WIREUP:-auto}"
MPI_TYPE="${MPI_TYPE:-}"
if [[ -z "$MPI_TYPE" && "$WIREUP" == nccl-slurm-pmi ]]; then
  MPI_TYPE=pmi2  # PMI_RANK is set only when srun starts a PMI server
fi
CPU_BIND="${CPU_BIND-cores}"  # set it empty to leave binding to the site defaults
# Two jobs sharing a first node must not share a rendezvous port.
export MASTER_PORT="${MASTER_PORT:-$((29500 + SLURM_JOB_ID % 10000))}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$CPUS_PER_TASK}"
export HDF5_USE_FILE_LOCKING="${HDF5_USE_FILE_LOCKING:-FALSE}"  # parallel file systems reject HDF5's locks
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"  # a lost rank fails, not hangs
# Other NCCL_* settings (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, ...) pass through
# from the submitting shell unchanged.

# srun does not inherit sbatch's --cpus-per-task since Slurm 22.05 (srun(1),
# "--cpus-per-task"), so every srun names it again.
# --kill-on-bad-exit: one failed rank ends the run instead of leaving the
# others waiting in a collective until the time limit.
FASTCAM_SRUN=(srun --nodes="$NODES" --ntasks="$NTASKS" --ntasks-per-node="$TASKS_PER_NODE"
  --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit="${KILL_ON_BAD_EXIT:-1}")
if [[ -n "$CPU_BIND" ]]; then FASTCAM_SRUN+=(--cpu-bind="$CPU_BIND"); fi
if [[ -n "$MPI_TYPE" ]]; then FASTCAM_SRUN+=(--mpi="$MPI_TYPE"); fi
FASTCAM_SRUN+=("${FASTCAM_SRUN_EXTRA[@]}")

fastcam_require_dir() {
  local name="$1"
  [[ -n "${!name:-}" ]] || fastcam_die "set $name (the data set directory holding train/, validation/ and stats.h5)"
  [[ -d "${!name}" ]] || fastcam_die "$name '${!name}' is not a directory"
}

# fastcam_mode DEFAULT [OTHER...]: MODE (default DEFAULT), the run type the
# script runs as `fastcam train --mode MODE`, must be one of those it names.
fastcam_mode() {
  MODE="${MODE:-$1}"
  local allowed
  for allowed in "$@"; do
    if [[ "$MODE" == "$allowed" ]]; then return 0; fi
  done
  local choices
  printf -v choices '%s or ' "$@"
  fastcam_die "MODE must be ${choices% or } here, not '$MODE'" \
    "(baseline.sbatch runs baseline; optimized.sbatch runs optimized and ported)"
}

# fastcam_launch PATTERN ARGS...: run `fastcam ARGS` as every task of the job.
fastcam_launch() {
  local pattern="$1"
  shift
  mkdir -p -- "$(dirname -- "$pattern")" || fastcam_die "cannot create the directory of '$pattern'"
  echo "fastcam-slurm: job $SLURM_JOB_ID: $NODES node(s) x $TASKS_PER_NODE task(s), device $DEVICE," \
    "wire-up $WIREUP, output $OUTPUT_DIR"
  echo "fastcam-slurm:" "${FASTCAM_SRUN[@]}" "${FASTCAM_CONTAINER_CMD[@]}" "${FASTCAM_CMD[@]}" "$@"
  echo "fastcam-slurm: each task's output: $pattern (%t = task id)"
  "${FASTCAM_SRUN[@]}" --output="$pattern" "$FASTCAM_SLURM_DIR/task.sh" \
    "${FASTCAM_CONTAINER_CMD[@]}" "${FASTCAM_CMD[@]}" "$@"
}

# fastcam_stage_dir: STAGE_DIR, or a per-job default under TMPDIR that
# fastcam_remove_stage_dir removes again (a STAGE_DIR the user set is kept).
fastcam_stage_dir() {
  STAGE_DIR_DEFAULTED=0
  if [[ -z "${STAGE_DIR:-}" ]]; then
    STAGE_DIR="${TMPDIR:-/tmp}/fastcam-stage-$SLURM_JOB_ID"
    STAGE_DIR_DEFAULTED=1
  fi
}

fastcam_remove_stage_dir() {
  if ((STAGE_DIR_DEFAULTED)); then
    # One task per node removes that node's copy (node-local disks are not shared).
    srun --nodes="$NODES" --ntasks="$NODES" --ntasks-per-node=1 --cpus-per-task=1 \
      rm -rf -- "$STAGE_DIR" || echo "fastcam-slurm: warning: could not remove $STAGE_DIR on every node" >&2
  fi
}

# fastcam_finish STATUS: record how the job ended, then end with that status.
fastcam_finish() {
  local status="$1"
  echo "$status" >"$OUTPUT_DIR/slurm-$SLURM_JOB_ID.exit"
  echo "fastcam-slurm: job $SLURM_JOB_ID finished with exit status $status"
  exit "$status"
}
