"""Names of the MLPerf log keys fastcam writes and reads, declared once.

The standard keys are those of mlperf_logging's HPC rules (``mlperf_logging.mllog
.constants`` and the ``hpc`` compliance rules, ruleset 3.0.0) and of the DeepCAM
reference's log; the ``fastcam_*`` keys are fastcam's own additions (the checker
ignores keys it does not know). The trainer writes through these names and
``fastcam compare`` reads through them, so a renamed key breaks both at once.
"""

from __future__ import annotations

# Timed intervals and events (reference trainer order).
CACHE_CLEAR = "cache_clear"
INIT_START, INIT_STOP = "init_start", "init_stop"
RUN_START, RUN_STOP = "run_start", "run_stop"
EPOCH_START, EPOCH_STOP = "epoch_start", "epoch_stop"
EVAL_START, EVAL_STOP = "eval_start", "eval_stop"
STAGING_START, STAGING_STOP = "staging_start", "staging_stop"
TARGET_ACCURACY_REACHED = "target_accuracy_reached"

# Per-step / per-epoch values.
LEARNING_RATE = "learning_rate"
TRAIN_ACCURACY, TRAIN_LOSS = "train_accuracy", "train_loss"
EVAL_ACCURACY, EVAL_LOSS = "eval_accuracy", "eval_loss"

# Submission and system facts.
SUBMISSION_BENCHMARK, SUBMISSION_ORG = "submission_benchmark", "submission_org"
SUBMISSION_DIVISION, SUBMISSION_STATUS = "submission_division", "submission_status"
SUBMISSION_PLATFORM = "submission_platform"
NUMBER_OF_NODES, ACCELERATORS_PER_NODE = "number_of_nodes", "accelerators_per_node"

# Hyperparameters (the reference's names).
SEED = "seed"
GLOBAL_BATCH_SIZE, LOCAL_BATCH_SIZE = "global_batch_size", "local_batch_size"
GRADIENT_ACCUMULATION_FREQUENCY = "gradient_accumulation_frequency"
BATCHNORM_GROUP_SIZE = "batchnorm_group_size"
TRAIN_SAMPLES, EVAL_SAMPLES = "train_samples", "eval_samples"
OPT_NAME, OPT_LR, OPT_WEIGHT_DECAY = "opt_name", "opt_lr", "opt_weight_decay"
OPT_BETAS, OPT_EPS = "opt_betas", "opt_eps"
SCHEDULER_PREFIX = "scheduler_"  # scheduler_type, scheduler_milestones, scheduler_t_max, ...

# Metadata keys.
EPOCH_NUM, STEP_NUM, STATUS = "epoch_num", "step_num", "status"

# How the network computed: "fp32", "amp_fp16" or "amp_bf16" (autocast with that
# dtype), as NVIDIA's MLPerf HPC logs record their mixed precision.
PRECISION_MODE = "precision_mode"
PRECISION_MODES = {"fp32": "fp32", "fp16": "amp_fp16", "bf16": "amp_bf16"}  # resolved precision -> value

# fastcam's own keys.
NUMBER_OF_RANKS = "number_of_ranks"
FASTCAM_MODE = "fastcam_mode"  # baseline | optimized (| ported)
FASTCAM_MAX_EPOCHS = "fastcam_max_epochs"
FASTCAM_TARGET_IOU = "fastcam_target_iou"
FASTCAM_EXECUTION = "fastcam_execution"  # the execution switches (device, precision, ...)
FASTCAM_WARMUP_SECONDS = "fastcam_warmup_seconds"
FASTCAM_LOADER = "fastcam_loader"  # hdf5 | staged | dali
FASTCAM_STAGE_DTYPE = "fastcam_stage_dtype"  # fp16 | fp32: the stage cache's input dtype (cached loaders only)
FASTCAM_SOFTWARE = "fastcam_software"  # {fastcam, python, torch, cuda|rocm, cudnn|miopen, nccl|rccl, driver, ...}
FASTCAM_SCENARIO = "fastcam_scenario"  # a rules scenario a run declares (read by compare where a log has one)
