#!/usr/bin/env bash
# Submit the benchmark's scaling runs -- N, 2N and 4N nodes, every GPU of each
# node -- as Slurm jobs, optionally repeated, and say how to compare them.
#
# Usage: slurm/submit.sh [options] N [-- extra fastcam train flags]
#   -m, --mode MODE      baseline (default) or optimized
#   -s, --scales "A B"   multiples of N to run (default "1 2 4")
#   -b, --scale-by WHAT  nodes (default): N x scale nodes; tasks: N nodes with
#                        TASKS_PER_NODE x scale tasks each (studies within a
#                        node, or a one-node test cluster)
#   -r, --repeats R      runs of each size (default 1)
#   -c, --chain          run the jobs one after another: each depends on the
#                        previous one finishing successfully (afterok; a failed
#                        run cancels the rest, --kill-on-invalid-dep=yes)
#   -n, --name PREFIX    job-name prefix (default fastcam-MODE); each job is
#                        PREFIX-<nodes>n<tasks per node>t-r<repeat>
#   -o, --results DIR    results directory, one sub-directory per job
#                        (default fastcam-runs/PREFIX-<date-time>)
#       --dry-run        print the sbatch commands instead of running them
#   -h, --help           this text
#
# Knobs (environment variables):
#   ACCOUNT, PARTITION, QOS, TIME_LIMIT   sbatch --account/--partition/--qos/--time
#   GPUS_PER_NODE    GPUs per node, one task each (default 4; 0 = CPU variant,
#                    no --gpus-per-node request)
#   TASKS_PER_NODE   tasks per node (default GPUS_PER_NODE, or 1 on CPU)
#   CPUS_PER_TASK    CPUs per task (default 8)
#   EXCLUSIVE        1 (default): whole nodes (--exclusive); 0: shared nodes
#   SBATCH_EXTRA_ARGS  extra sbatch options, e.g. "--constraint=h100 --reservation=x"
#   DATA_DIR, STAGE_DIR, WIREUP, FASTCAM_SETUP, FASTCAM_CONTAINER, FASTCAM, ...:
#                    read by the sbatch scripts (see their headers)
# Writes RESULTS/jobs.tsv (job id, name, nodes, tasks per node, directory).
set -euo pipefail

SLURM_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "submit.sh: error: $*" >&2; exit 2; }

mode=baseline scales="1 2 4" scale_by=nodes repeats=1 chain=0 prefix="" results="" dry_run=0
base_nodes=""
while (($# > 0)); do
  case "$1" in
    -m | --mode) mode="${2:?--mode needs a value}"; shift 2 ;;
    -s | --scales) scales="${2:?--scales needs a value}"; shift 2 ;;
    -b | --scale-by) scale_by="${2:?--scale-by needs a value}"; shift 2 ;;
    -r | --repeats) repeats="${2:?--repeats needs a value}"; shift 2 ;;
    -c | --chain) chain=1; shift ;;
    -n | --name) prefix="${2:?--name needs a value}"; shift 2 ;;
    -o | --results) results="${2:?--results needs a value}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      [[ -z "$base_nodes" ]] || die "N is given twice ('$base_nodes' and '$1'); fastcam flags go after --"
      base_nodes="$1"; shift ;;
  esac
done

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
[[ -n "$base_nodes" ]] || { usage >&2; die "give N, the smallest number of nodes"; }
is_count "$base_nodes" || die "N must be a positive whole number, not '$base_nodes'"
[[ "$mode" == baseline || "$mode" == optimized ]] || die "--mode must be baseline or optimized, not '$mode'"
[[ "$scale_by" == nodes || "$scale_by" == tasks ]] || die "--scale-by must be nodes or tasks, not '$scale_by'"
is_count "$repeats" || die "--repeats must be a positive whole number, not '$repeats'"
read -ra scale_list <<<"$scales"
((${#scale_list[@]} > 0)) || die "--scales is empty"
for scale in "${scale_list[@]}"; do
  is_count "$scale" || die "--scales must hold positive whole numbers, not '$scale'"
done

GPUS_PER_NODE="${GPUS_PER_NODE:-4}"
[[ "$GPUS_PER_NODE" =~ ^[0-9]+$ ]] || die "GPUS_PER_NODE must be a whole number, not '$GPUS_PER_NODE'"
if ((GPUS_PER_NODE > 0)); then
  TASKS_PER_NODE="${TASKS_PER_NODE:-$GPUS_PER_NODE}"
else
  TASKS_PER_NODE="${TASKS_PER_NODE:-1}"
fi
is_count "$TASKS_PER_NODE" || die "TASKS_PER_NODE must be a positive whole number, not '$TASKS_PER_NODE'"
CPUS_PER_TASK="${CPUS_PER_TASK:-8}"
is_count "$CPUS_PER_TASK" || die "CPUS_PER_TASK must be a positive whole number, not '$CPUS_PER_TASK'"
[[ -n "${DATA_DIR:-}" ]] || die "set DATA_DIR (the data set directory holding train/, validation/ and stats.h5)"
[[ -d "$DATA_DIR" ]] || die "DATA_DIR '$DATA_DIR' is not a directory"
DATA_DIR="$(realpath -- "$DATA_DIR")"
script="$SLURM_DIR/$mode.sbatch"

prefix="${prefix:-fastcam-$mode}"
[[ "$prefix" =~ ^[A-Za-z0-9._-]+$ ]] || die "--name must be letters, digits, '.', '_' or '-', not '$prefix'"
results="${results:-fastcam-runs/$prefix-$(date +%Y%m%d-%H%M%S)}"
if ((!dry_run)); then mkdir -p -- "$results"; fi
results="$(realpath -m -- "$results")"

common=(--parsable)
if [[ -n "${ACCOUNT:-}" ]]; then common+=(--account="$ACCOUNT"); fi
if [[ -n "${PARTITION:-}" ]]; then common+=(--partition="$PARTITION"); fi
if [[ -n "${QOS:-}" ]]; then common+=(--qos="$QOS"); fi
if [[ -n "${TIME_LIMIT:-}" ]]; then common+=(--time="$TIME_LIMIT"); fi
if [[ "${EXCLUSIVE:-1}" == 1 ]]; then common+=(--exclusive); fi
read -ra extra_sbatch <<<"${SBATCH_EXTRA_ARGS:-}"
common+=("${extra_sbatch[@]}")

export DATA_DIR GPUS_PER_NODE CPUS_PER_TASK FASTCAM_SLURM_DIR="$SLURM_DIR"
jobs_file="$results/jobs.tsv"
if ((!dry_run)); then printf 'job_id\tname\tnodes\ttasks_per_node\tdirectory\n' >"$jobs_file"; fi
previous=""
for scale in "${scale_list[@]}"; do
  nodes="$base_nodes" tasks="$TASKS_PER_NODE"
  if [[ "$scale_by" == nodes ]]; then nodes=$((base_nodes * scale)); else tasks=$((TASKS_PER_NODE * scale)); fi
  for ((repeat = 1; repeat <= repeats; repeat++)); do
    name="$prefix-${nodes}n${tasks}t-r$repeat"
    dir="$results/$name"
    cmd=(sbatch "${common[@]}" --job-name="$name" --output="$dir/slurm-%j.out"
      --nodes="$nodes" --ntasks-per-node="$tasks" --cpus-per-task="$CPUS_PER_TASK")
    if ((GPUS_PER_NODE > 0)); then cmd+=(--gpus-per-node="$GPUS_PER_NODE"); fi
    after=""
    if ((chain)) && [[ -n "$previous" ]]; then
      cmd+=(--dependency="afterok:$previous" --kill-on-invalid-dep=yes)
      after=", after job $previous"
    fi
    cmd+=("$script" "$@")
    if ((dry_run)); then
      printf 'OUTPUT_DIR=%q RUN_TAG=%q TASKS_PER_NODE=%q' "$dir" "$name" "$tasks"
      printf ' %q' "${cmd[@]}"
      printf '\n'
      previous="JOBID"
      continue
    fi
    mkdir -p -- "$dir"
    job_id="$(OUTPUT_DIR="$dir" RUN_TAG="$name" TASKS_PER_NODE="$tasks" "${cmd[@]}")" \
      || die "sbatch failed for $name"
    job_id="${job_id%%;*}"  # --parsable prints ID or ID;CLUSTER
    printf '%s\t%s\t%s\t%s\t%s\n' "$job_id" "$name" "$nodes" "$tasks" "$dir" >>"$jobs_file"
    echo "submitted job $job_id: $name ($nodes node(s) x $tasks task(s)$after) -> $dir"
    previous="$job_id"
  done
done

if ((!dry_run)); then
  echo "jobs: $jobs_file; watch them with: squeue -u \"\$USER\""
  echo "when they have finished, the results table: fastcam compare $(printf '%q' "$results")"
fi
