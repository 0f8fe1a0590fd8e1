"""A training run: rules check, wire-up, plan, init, ``Trainer.fit``, the MLPerf log.

The flow every front end shares: argv -> config -> rules check (fastcam.guard)
-> rank wire-up -> run plan -> Trainer.fit(callbacks). The log's init part
follows the MLCommons reference (``train.py``, ``utils/mlperf_log_utils.py``)
where the hpc 3.0.0 compliance rules allow: the submission keys, then staging
(outside the timed region, before ``init_start``: staging the real set can
outlast the 30 minutes the checker allows for init), ``init_start``,
``cache_clear``, ``number_of_ranks``, the hyperparameter keys, fastcam's own
keys, ``init_stop``; the epochs are fastcam.train.callbacks.MLPerfRecorder's.

Faults (issue 17). Before anything is written: the log path must not be a
symbolic link, a checkpoint to resume must load and match the run, and temp
files of writes killed in an earlier run are removed from the output
directory. A start that fails after the log was opened (before ``init_stop``)
removes its stub and puts the previous log back, so a failed start leaves the
directory as it was. Collectives time out after ``FASTCAM_COLLECTIVE_TIMEOUT_S``
seconds (default 600): a rank that stops responding ends the others with one
line instead of the 2 hours staging needs (staging waits on its own group,
fastcam.distributed.barrier(..., long_wait=True)).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch

from fastcam import accelerator, distributed, files, guard
from fastcam import logkeys as K
from fastcam.config import Config
from fastcam.errors import CheckpointError, CollectiveTimeoutError, ConfigError
from fastcam.train import checkpoint, mlperf
from fastcam.train.callbacks import Checkpointer, ConsoleLine, MLPerfRecorder, move_aside
from fastcam.train.inputs import build_loaders, stage_inputs
from fastcam.train.optim import optimizer_implementation
from fastcam.train.plan import RunPlan, resolve_plan
from fastcam.train.progress import ProgressBar
from fastcam.train.trainer import Callback, EpochRecord, Trainer

# Staging waits for the slowest rank's staging (before init_start): allow far
# longer than NCCL's 10-minute default there (distributed.barrier's long_wait).
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)
# Every other collective: a stopped rank must end the job in minutes, not hours
# (issue 17, defect 9). A training step on the real set takes well under a second.
COLLECTIVE_TIMEOUT_ENV = "FASTCAM_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass
class TrainResult:
    reached: bool
    epochs: int
    best_iou: float
    minutes_to_target: float | None
    total_minutes: float
    log_path: Path
    seed: int
    checkpoint_path: Path | None
    history: list[EpochRecord] = field(default_factory=list)
    model: torch.nn.Module | None = None  # the trained network (unwrapped), for callers and tests


def train(config: Config, callbacks: Sequence[Callback] = (), echo: Callable[[str], None] | None = None,
          model_factory: Callable[[], torch.nn.Module] | None = None) -> TrainResult:
    """Run ``config`` to its target or epoch budget. ``model_factory`` replaces
    the reference network (tests of the loop mechanics use a small one)."""
    guard.check(config)
    device = accelerator.resolve_device(config.run.device)
    timeout = collective_timeout()
    ctx = distributed.init_distributed(config.run.wireup_method, device.type, timeout=timeout,
                                       wait_timeout=PROCESS_GROUP_TIMEOUT)
    try:
        plan = resolve_plan(config, ctx)
        accelerator.set_current(plan.device)  # an explicit cuda:K / xpu:K must also be the current device
        return _run(plan, ctx, tuple(callbacks), echo, model_factory)
    except RuntimeError as err:
        if not distributed.is_timeout(err):
            raise
        raise CollectiveTimeoutError(
            f"rank {ctx.rank}: a collective waited {timeout.total_seconds():g} s for another rank, which "
            f"stopped responding (stopped, hung or dead); {COLLECTIVE_TIMEOUT_ENV}=SECONDS waits longer") from None
    finally:
        distributed.shutdown(ctx)


def collective_timeout(environ=None) -> timedelta:
    """``FASTCAM_COLLECTIVE_TIMEOUT_S`` (seconds, > 0) or the 10-minute default."""
    value = (os.environ if environ is None else environ).get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_COLLECTIVE_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{COLLECTIVE_TIMEOUT_ENV}={value!r}: must be a positive number of seconds")
    return timedelta(seconds=seconds)


def _run(plan: RunPlan, ctx, callbacks, echo, model_factory) -> TrainResult:
    say = (echo or _print) if ctx.is_main else (lambda _msg: None)
    config, hp, run = plan.config, plan.hyperparameters, plan.run
    # Everything that can refuse the run does so before anything is written or moved.
    seed, resume = _seed_and_resume(run, ctx, hp)
    kept_log = None
    if ctx.is_main:
        _check_log_path(plan.log_path)
        for path in files.remove_stale_temps(run.output_dir):
            say(f"removed {path}, left by a write that was killed")
        kept_log = move_aside(plan.log_path, say)
    distributed.barrier(ctx)
    logger = mlperf.MLPerfLogger(plan.log_path, rank=ctx.rank)
    recorder = MLPerfRecorder(logger, ctx)
    initialised = False
    try:
        division = "open" if config.open_division else "closed"
        mlperf.log_events(logger, mlperf.submission_events(
            run.submission_platform or distributed.describe_platform(ctx, plan.device), run.submission_org,
            division, run.submission_status, ctx.num_nodes,
            accelerator.accelerators_per_node(plan.device, ctx.local_size)))
        stage_inputs(plan, ctx, logger, say)
        logger.start(K.INIT_START)
        logger.event(K.CACHE_CLEAR, True)
        logger.event(K.NUMBER_OF_RANKS, ctx.world_size)
        torch.manual_seed(seed)
        trainer = Trainer(plan, ctx, model=model_factory() if model_factory else None)
        start_epoch = 0
        if resume is not None:
            trainer.step, start_epoch = checkpoint.restore(
                resume, run.checkpoint, model=trainer.model, optimizer=trainer.optimizer,
                scheduler=trainer.scheduler, grad_scaler=trainer.scaler,
                hyperparameters=checkpoint.hyperparameters_record(hp))
            say(f"resumed from {run.checkpoint}: epoch {start_epoch}, step {trainer.step}")
        loaders = build_loaders(plan, ctx, seed)
        mlperf.log_events(logger, mlperf.hyperparameter_events(
            hp, seed=seed, global_batch_size=plan.global_batch_size,
            train_samples=plan.train_samples, eval_samples=plan.validation_samples))
        if plan.execution.warm_up:
            seconds = trainer.warm_up()
            say(f"warm-up (compile/autotune) took {seconds:.1f} s, outside the timed region")
            logger.event(K.FASTCAM_WARMUP_SECONDS, round(seconds, 3))
        mlperf.log_events(logger, _precision_events(plan) + [
            (K.FASTCAM_MODE, config.mode), (K.FASTCAM_MAX_EPOCHS, run.max_epochs),
            (K.FASTCAM_TARGET_IOU, run.target_iou), (K.FASTCAM_LOADER, config.optimizations.loader),
            (K.FASTCAM_EXECUTION, {**plan.execution.switches(),
                                   "optimizer_implementation": optimizer_implementation(trainer.optimizer)})])
        say(f"fastcam train --mode {config.mode}: {ctx.world_size} rank(s) on {plan.device}, "
            f"{plan.train_samples} train / {plan.validation_samples} validation samples "
            f"of {plan.sample_shape[0]}x{plan.sample_shape[1]}, seed {seed}, log {plan.log_path}")
        distributed.barrier(ctx)
        logger.end(K.INIT_STOP)
        initialised = True
        checkpointer = Checkpointer(say, seed)
        # The bar draws on rank 0 and on a terminal only; logs keep one line per epoch.
        history = trainer.fit(loaders, (recorder, ConsoleLine(say), checkpointer, ProgressBar(), *callbacks),
                              start_epoch)
    except BaseException:
        if initialised and logger.active and recorder.status != "success":
            _quietly(lambda: logger.end(K.RUN_STOP, metadata={K.STATUS: "aborted"}))
        _quietly(logger.close)
        if not initialised and ctx.is_main:
            _undo_start(plan.log_path, kept_log, say)
        raise
    finally:
        logger.close()

    last_epoch = history[-1].epoch if history else start_epoch
    last_ckpt = None
    if ctx.is_main:
        last_ckpt = checkpointer.save(trainer, Path(run.output_dir) / f"{run.model_prefix}_{run.run_tag}_last.cpt",
                                      last_epoch)
    distributed.barrier(ctx)
    reached = bool(history) and history[-1].eval_iou >= run.target_iou
    best = max((r.eval_iou for r in history), default=float("nan"))
    total_minutes = history[-1].elapsed_s / 60 if history else 0.0
    result = TrainResult(reached, last_epoch, best, total_minutes if reached else None, total_minutes,
                         plan.log_path, seed, last_ckpt, history, trainer.model)
    say(_summary(result, run.target_iou))
    return result


def _precision_events(plan: RunPlan) -> list[tuple[str, object]]:
    """``precision_mode`` (how the network computed), the stage cache's dtype
    where one feeds the inputs, and the software that ran (issue 15)."""
    precision = plan.execution.switches()["precision"]
    events: list[tuple[str, object]] = [(K.PRECISION_MODE, K.PRECISION_MODES[precision])]
    if plan.stage_root is not None:
        events.append((K.FASTCAM_STAGE_DTYPE, plan.config.optimizations.stage_dtype))
    return events + [(K.FASTCAM_SOFTWARE, accelerator.software_versions(plan.device))]


def _seed_and_resume(run, ctx, hp):
    seed = run.seed if run.seed is not None else distributed.broadcast_object(
        1 + int(time.time() * 1000) % (2**31 - 1), ctx)
    resume = checkpoint.load(run.checkpoint) if run.checkpoint else None
    if resume is not None:
        checkpoint.check_hyperparameters(resume, run.checkpoint, checkpoint.hyperparameters_record(hp))
    if resume is not None and resume.get("seed") is not None:
        # The staged loaders' order is drawn from seed + epoch: resuming under another seed is not exact.
        if run.seed is not None and run.seed != int(resume["seed"]):
            raise CheckpointError(f"{run.checkpoint}: checkpoint was written with seed {resume['seed']}, "
                                  f"this run has --seed {run.seed}; drop --seed to continue exactly")
        seed = int(resume["seed"])
    return seed, resume


def _check_log_path(path: Path) -> None:
    """Never write a log through a symbolic link, dangling or not (issue 17, defect 7)."""
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link (to {os.readlink(path)}): fastcam never writes a log "
                              "through a link, which could land outside the output directory; remove it")


def _undo_start(log_path: Path, kept: Path | None, say) -> None:
    """A start that failed before ``init_stop`` leaves no stub log: the previous log goes back in place."""
    try:
        log_path.unlink(missing_ok=True)
        if kept is not None:
            kept.rename(log_path)
            say(f"the start failed: {log_path} is the previous run's log again")
    except OSError as err:
        say(f"the start failed and {log_path} could not be restored ({err.strerror or err})")


def _quietly(action) -> None:
    """Clean-up on the way out must not replace the error that stopped the run."""
    try:
        action()
    except Exception:  # noqa: BLE001 - the original error is re-raised by the caller
        pass


def _summary(result: TrainResult, target: float) -> str:
    if result.reached:
        head = f"reached eval IoU {target} after {result.epochs} epochs in {result.minutes_to_target:.2f} min"
    else:
        head = f"target {target} not reached in {result.epochs} epochs; best eval IoU {result.best_iou:.4f}"
    return f"{head} (run {result.total_minutes:.2f} min, log {result.log_path})"


def _print(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)
