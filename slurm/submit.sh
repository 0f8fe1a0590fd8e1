#!/usr/bin/env bash
# Submit the benchmark's scaling runs -- N, 2N and 4N nodes, every GPU of each
# node -- as Slurm jobs, optionally repeated, and say how to compare them.
#
# Usage: slurm/submit.sh [options] N [-- extra fastcam train flags]
#   -m, --mode MODE      baseline (default), ported or optimized; ported runs
#                        optimized.sbatch with MODE=ported: the baseline's
#                        hyperparameters, the port's execution changes as
#                        fastcam flags after --, staging node-local if chosen
#       --rules NAME     rules profile (fastcam rules) for every job's
#                        `fastcam train --rules NAME` and the compare line;
#                        checked here first with `fastcam rules NAME`
#   -g, --global-batch-size G
#                        one global batch for every scale: each job gets
#                        `--global_batch_size G` (local batch = G / ranks);
#                        G must divide by every scale's nodes x tasks per node
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
# --rules runs the jobs' fastcam here (FASTCAM_SETUP in a subshell, then
# FASTCAM_CONTAINER FASTCAM rules NAME): it needs no GPU.
# Writes RESULTS/jobs.tsv (job id, name, nodes, tasks per node, directory).
set -euo pipefail

SLURM_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "submit.sh: error: $*" >&2; exit 2; }

mode=baseline scales="1 2 4" scale_by=nodes repeats=1 chain=0 prefix="" results="" dry_run=0
base_nodes="" rules="" global_batch=""
while (($# > 0)); do
  case "$1" in
    -m | --mode) mode="${2:?--mode needs a value}"; shift 2 ;;
    --rules) rules="${2:?--rules needs a value}"; shift 2 ;;
    -g | --global-batch-size) global_batch="${2:?--global-batch-size needs a value}"; shift 2 ;;
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

train_args=("$@")  # the fastcam train flags after --

# train_flag SPELLING...: is one of these flags among the fastcam train flags
# (as `--flag V` or `--flag=V`)? Sets train_flag_name and train_flag_value.
train_flag() {
  local i name
  for ((i = 0; i < ${#train_args[@]}; i++)); do
    for name in "$@"; do
      if [[ "${train_args[i]}" == "$name" ]]; then
        train_flag_name="$name" train_flag_value="${train_args[i + 1]:-}"
        return 0
      elif [[ "${train_args[i]}" == "$name="* ]]; then
        train_flag_name="$name" train_flag_value="${train_args[i]#*=}"
        return 0
      fi
    done
  done
  return 1
}

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
[[ -n "$base_nodes" ]] || { usage >&2; die "give N, the smallest number of nodes"; }
is_count "$base_nodes" || die "N must be a positive whole number, not '$base_nodes'"
[[ "$mode" == baseline || "$mode" == ported || "$mode" == optimized ]] \
  || die "--mode must be baseline, ported or optimized, not '$mode'"
[[ "$scale_by" == nodes || "$scale_by" == tasks ]] || die "--scale-by must be nodes or tasks, not '$scale_by'"
is_count "$repeats" || die "--repeats must be a positive whole number, not '$repeats'"
read -ra scale_list <<<"$scales"
((${#scale_list[@]} > 0)) || die "--scales is empty"
for scale in "${scale_list[@]}"; do
  is_count "$scale" || die "--scales must hold positive whole numbers, not '$scale'"
done

# The flags submit.sh adds to every job's fastcam train line (rules_args,
# batch_args); one given after -- as well is refused, one given only there is
# checked the same way and left where it is.
rules_args=() batch_args=()
if train_flag --rules; then
  [[ -z "$rules" ]] || die "--rules is given twice ('$rules' and $train_flag_name '$train_flag_value' after --): give it once"
  rules="$train_flag_value"
  [[ -n "$rules" ]] || die "$train_flag_name after -- needs a value"
elif [[ -n "$rules" ]]; then
  rules_args=(--rules "$rules")
fi
if [[ -n "$global_batch" ]]; then
  if train_flag --global_batch_size --global-batch-size; then
    die "the global batch is given twice (-g $global_batch and $train_flag_name $train_flag_value after --): give it once"
  fi
  batch_args=(--global_batch_size "$global_batch")
elif train_flag --global_batch_size --global-batch-size; then
  global_batch="$train_flag_value"
fi
if [[ -n "$global_batch" ]]; then
  is_count "$global_batch" || die "--global-batch-size must be a positive whole number, not '$global_batch'"
  if train_flag --local_batch_size --local-batch-size; then
    die "--global-batch-size $global_batch derives the local batch from the ranks: drop $train_flag_name $train_flag_value after --"
  fi
fi

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
# ported runs with optimized.sbatch (MODE=ported): the baseline's
# hyperparameters come from the mode's recipe, and the script's node-local
# STAGE_DIR serves a port that changes the loader (unused by the HDF5 loader).
if [[ "$mode" == baseline ]]; then script="$SLURM_DIR/baseline.sbatch"; else script="$SLURM_DIR/optimized.sbatch"; fi

# The ranks of each scale, as the jobs will have them; a global batch must
# divide over every one of them (checked before anything is submitted).
scale_nodes=() scale_tasks=()
for scale in "${scale_list[@]}"; do
  nodes="$base_nodes" tasks="$TASKS_PER_NODE"
  if [[ "$scale_by" == nodes ]]; then nodes=$((base_nodes * scale)); else tasks=$((TASKS_PER_NODE * scale)); fi
  scale_nodes+=("$nodes") scale_tasks+=("$tasks")
  if [[ -n "$global_batch" ]] && ((global_batch % (nodes * tasks))); then
    die "--global-batch-size $global_batch does not divide over the $((nodes * tasks)) ranks of scale $scale" \
      "($nodes node(s) x $tasks task(s) per node)"
  fi
done

read -ra fastcam_cmd <<<"${FASTCAM:-fastcam}"
read -ra container_cmd <<<"${FASTCAM_CONTAINER:-}"
# fastcam_rules_json NAME: `fastcam rules NAME --json` as the jobs run
# fastcam (FASTCAM_SETUP first, in a subshell: it changes nothing here).
fastcam_rules_json() (
  if [[ -n "${FASTCAM_SETUP:-}" ]]; then
    set +u  # activation scripts read unset variables (as in env.sh)
    eval "$FASTCAM_SETUP" >/dev/null || { echo "FASTCAM_SETUP failed: $FASTCAM_SETUP" >&2; exit 1; }
    set -u
  fi
  "${container_cmd[@]}" "${fastcam_cmd[@]}" rules "$1" --json
)

# check_rules NAME: the jobs' fastcam, run here, knows the rules profile NAME
# and its run types include the mode; one line and exit 2 otherwise.
check_rules() {
  local name="$1" json_file err status=0 json run_types
  json_file="$(mktemp)"
  # stderr captured, stdout (the profile as JSON) into json_file
  err="$(fastcam_rules_json "$name" 2>&1 >"$json_file")" || status=$?
  json="$(<"$json_file")"
  rm -f -- "$json_file"
  if ((status == 127)); then
    die "cannot check --rules $name: '${container_cmd[0]:-${fastcam_cmd[0]}}' not found here (set FASTCAM_SETUP or FASTCAM as for the jobs)"
  elif ((status != 0)); then
    err="$(printf '%s\n' "$err" | sed '/^[[:space:]]*$/d' | tail -n 1)"
    err="${err#fastcam: error: }"
    die "${err:-fastcam rules $name failed with exit status $status}"
  fi
  json="${json//[[:space:]]/}"
  if [[ "$json" =~ \"run_types\":\[([^]]*)\] ]]; then
    run_types="${BASH_REMATCH[1]//\"/}"
    [[ ",$run_types," == *",$mode,"* ]] \
      || die "rules $name define no $mode run (run types: ${run_types//,/, })"
  fi
}
if [[ -n "$rules" ]]; then check_rules "$rules"; fi

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

export DATA_DIR GPUS_PER_NODE CPUS_PER_TASK MODE="$mode" FASTCAM_SLURM_DIR="$SLURM_DIR"
jobs_file="$results/jobs.tsv"
if ((!dry_run)); then printf 'job_id\tname\tnodes\ttasks_per_node\tdirectory\n' >"$jobs_file"; fi
previous=""
for ((s = 0; s < ${#scale_list[@]}; s++)); do
  nodes="${scale_nodes[s]}" tasks="${scale_tasks[s]}"
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
    cmd+=("$script" "${rules_args[@]}" "${batch_args[@]}" "$@")
    if ((dry_run)); then
      printf 'MODE=%q OUTPUT_DIR=%q RUN_TAG=%q TASKS_PER_NODE=%q' "$mode" "$dir" "$name" "$tasks"
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

compare=(fastcam compare)
if [[ -n "$rules" ]]; then compare+=(--rules "$rules"); fi
compare+=("$results")
printf -v compare_line '%q ' "${compare[@]}"
compare_line="when they have finished, the results table: ${compare_line% }"
if ((!dry_run)); then
  echo "jobs: $jobs_file; watch them with: squeue -u \"\$USER\""
  echo "$compare_line"
else
  echo "# $compare_line"  # a comment: the dry run's output stays a runnable script
fi
