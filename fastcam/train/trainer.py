"""The training run: wire-up, init, the timed epochs, the MLPerf log.

The order of events follows the MLCommons reference trainer (``train.py``,
``driver/trainer.py``, ``driver/validation.py``, ``utils/mlperf_log_utils.py``)
where the compliance rules of mlperf_logging hpc 3.0.0 allow: the submission
keys, then (staging, outside the timed region, before ``init_start``: staging
the real set can outlast the 30 minutes the checker allows for init)
``init_start``, ``cache_clear``, ``number_of_ranks``, the hyperparameter keys,
``init_stop``, ``run_start``; per epoch ``epoch_start``, the last batch's
``learning_rate``/``train_accuracy``/``train_loss``, then the evaluation
*inside* the epoch (``eval_start``, ``eval_accuracy``, ``eval_loss``,
``target_accuracy_reached`` when the target is met, ``eval_stop``) and
``epoch_stop``; finally ``run_stop`` with ``status`` success (target reached)
or aborted. Timed keys are surrounded by barriers so rank 0's timestamps
cover every rank.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import timedelta
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from fastcam import distributed, guard
from fastcam.config import Config
from fastcam.errors import CheckpointError
from fastcam.train import checkpoint, mlperf
from fastcam.train.inputs import build_loaders, stage_inputs
from fastcam.train.execution import resolve_device
from fastcam.train.loop import StepState, evaluate, train_epoch
from fastcam.train.setup import build_components, warm_up

ORG = "fastcam"
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


@dataclass
class EpochRecord:
    epoch: int  # 1-based, as the MLPerf log counts
    step: int
    train_loss: float
    train_iou: float
    eval_iou: float
    eval_loss: float
    samples_per_s: float  # training throughput of this epoch, all ranks
    elapsed_s: float  # since run_start
    eval_samples: int  # validation samples evaluated, all ranks together


class Callback(Protocol):
    """Called on every rank after each epoch's evaluation; may raise to stop the
    run (tuning raises optuna.TrialPruned). Not called for skipped epochs."""

    def on_epoch_end(self, record: EpochRecord) -> None: ...


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


def log_path_for(config: Config) -> Path:
    return Path(config.run.output_dir) / "logs" / f"{config.run.run_tag}.log"


def train(config: Config, callbacks: tuple[Callback, ...] = (), echo: Callable[[str], None] | None = None) -> TrainResult:
    config.validate()
    guard.check(config)
    if config.run.data_dir_prefix is None:
        from fastcam.train.default_data import default_dataset

        config = dataclasses.replace(config, run=dataclasses.replace(config.run, data_dir_prefix=str(default_dataset())))
    device = resolve_device(config.run.device)
    # Collectives wait on the slowest rank's staging (before init_start): allow
    # far longer than NCCL's 10-minute default before declaring a hang.
    ctx = distributed.init_distributed(config.run.wireup_method, device.type, timeout=PROCESS_GROUP_TIMEOUT)
    try:
        device = resolve_device(config.run.device, ctx.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # an explicit cuda:K must also be the current device
        return _train(config, ctx, device, callbacks, echo)
    finally:
        distributed.shutdown(ctx)


def _train(config: Config, ctx, device, callbacks, echo) -> TrainResult:
    say = (echo or _print) if ctx.is_main else (lambda _msg: None)
    hp, run = config.hyperparameters, config.run
    log_path = log_path_for(config)
    if ctx.is_main:
        _move_aside(log_path, say)
    distributed.barrier(ctx)
    logger = mlperf.MLPerfLogger(log_path, rank=ctx.rank)
    status = "aborted"
    try:
        division = "open" if config.open_division else "closed"
        mlperf.log_events(logger, mlperf.submission_events(
            distributed.describe_platform(ctx, device), ORG, division, "onprem",
            ctx.num_nodes, ctx.local_size if device.type == "cuda" else 0))
        staged_root = stage_inputs(config, ctx, logger, say)
        logger.start("init_start")
        logger.event("cache_clear", True)
        logger.event("number_of_ranks", ctx.world_size)
        seed = run.seed if run.seed is not None else distributed.broadcast_object(1 + int(time.time() * 1000) % (2**31 - 1), ctx)
        resume = checkpoint.load(run.checkpoint) if run.checkpoint else None
        if resume is not None and resume.get("seed") is not None:
            # The data order is drawn from seed + epoch: resuming under another seed is not exact.
            if run.seed is not None and run.seed != int(resume["seed"]):
                raise CheckpointError(f"{run.checkpoint}: checkpoint was written with seed {resume['seed']}, "
                                      f"this run has --seed {run.seed}; drop --seed to continue exactly")
            seed = int(resume["seed"])
        torch.manual_seed(seed)
        c = build_components(config, ctx, device)
        execution, model, net, optimizer, scheduler, scaler, criterion = (
            c.execution, c.model, c.net, c.optimizer, c.scheduler, c.scaler, c.criterion)
        state, start_epoch = StepState(), 0
        hyper_dict = dataclasses.asdict(hp)
        if resume is not None:
            state.step, start_epoch = checkpoint.restore(resume, run.checkpoint, model=model, optimizer=optimizer,
                                                         scheduler=scheduler, grad_scaler=scaler,
                                                         hyperparameters=hyper_dict)
            say(f"resumed from {run.checkpoint}: epoch {start_epoch}, step {state.step}")
        loaders = build_loaders(config, ctx, device, seed, staged_root)

        mlperf.log_events(logger, mlperf.hyperparameter_events(
            seed=seed, global_batch_size=hp.local_batch_size * ctx.world_size * hp.gradient_accumulation_frequency,
            local_batch_size=hp.local_batch_size, gradient_accumulation_frequency=hp.gradient_accumulation_frequency,
            batchnorm_group_size=hp.batchnorm_group_size, optimizer=hp.optimizer, start_lr=hp.start_lr,
            betas=hp.optimizer_betas, eps=hp.optimizer_eps, weight_decay=hp.weight_decay,
            schedule=hp.lr_schedule.as_dict(), warmup_steps=hp.lr_warmup_steps, warmup_factor=hp.lr_warmup_factor,
            train_samples=loaders.train_samples, eval_samples=loaders.validation_samples))
        if execution.warm_up:
            height, width = loaders.sample_shape
            seconds = warm_up(c, ctx, batch_size=hp.local_batch_size, channels=len(hp.channels),
                              height=height, width=width,
                              input_dtype=loaders.input_dtype)
            say(f"warm-up (compile/autotune) took {seconds:.1f} s, outside the timed region")
            logger.event("fastcam_warmup_seconds", round(seconds, 3))
        mlperf.log_events(logger, [("fastcam_mode", config.mode), ("fastcam_max_epochs", run.max_epochs),
                                   ("fastcam_target_iou", run.target_iou),
                                   ("fastcam_execution", execution.switches())])
        say(f"fastcam train --mode {config.mode}: {ctx.world_size} rank(s) on {device}, "
            f"{loaders.train_samples} train / {loaders.validation_samples} validation samples "
            f"of {loaders.sample_shape[0]}x{loaders.sample_shape[1]}, seed {seed}, log {log_path}")

        distributed.barrier(ctx)
        logger.end("init_stop")
        distributed.barrier(ctx)
        logger.start("run_start")
        run_start = time.perf_counter()
        history: list[EpochRecord] = []
        reached_at: float | None = None

        def log_step(step, lr, loss, iou):
            meta = {"epoch_num": epoch + 1, "step_num": step}
            logger.event("learning_rate", lr, meta)
            logger.event("train_accuracy", iou, meta)
            logger.event("train_loss", loss, meta)

        for epoch in range(start_epoch, run.max_epochs):
            meta = {"epoch_num": epoch + 1}
            distributed.barrier(ctx)
            logger.start("epoch_start", metadata={**meta, "step_num": state.step})
            loaders.set_epoch(epoch)
            t0 = time.perf_counter()
            result = train_epoch(net, loaders.train, criterion=criterion, optimizer=optimizer, scheduler=scheduler,
                                 grad_scaler=scaler, execution=execution, ctx=ctx, state=state,
                                 accumulation=hp.gradient_accumulation_frequency,
                                 logging_frequency=hp.logging_frequency, log_step=log_step)
            train_s = time.perf_counter() - t0
            log_step(state.step, result.last_lr, result.last_loss, result.iou)
            distributed.average_batchnorm_stats(model, ctx)
            distributed.barrier(ctx)
            logger.start("eval_start", metadata=meta)
            eval_iou, eval_loss, eval_count = evaluate(net, loaders.validation, criterion=criterion,
                                                       execution=execution, ctx=ctx)
            logger.event("eval_accuracy", eval_iou, {**meta, "step_num": state.step})
            logger.event("eval_loss", eval_loss, {**meta, "step_num": state.step})
            reached = eval_iou >= run.target_iou
            if reached:
                logger.event("target_accuracy_reached", run.target_iou, {**meta, "step_num": state.step})
            logger.end("eval_stop", metadata=meta)
            distributed.barrier(ctx)
            logger.end("epoch_stop", metadata={**meta, "step_num": state.step})
            record = EpochRecord(epoch + 1, state.step, result.loss, result.iou, eval_iou, eval_loss,
                                 result.samples / train_s if train_s > 0 else 0.0, time.perf_counter() - run_start,
                                 eval_count)
            history.append(record)
            say(_epoch_line(record, run.max_epochs))
            if (epoch + 1) % hp.save_frequency == 0 and ctx.is_main:
                _save(Path(run.output_dir) / f"{run.model_prefix}_step_{state.step}.cpt", model, optimizer,
                      scheduler, scaler, state, epoch + 1, hyper_dict, seed, say)
            for callback in callbacks:
                callback.on_epoch_end(record)
            if reached:
                reached_at = record.elapsed_s
                status = "success"
                break
        distributed.barrier(ctx)
        logger.end("run_stop", metadata={"status": status})
        total_s = time.perf_counter() - run_start
    except BaseException:
        if logger.active:
            logger.end("run_stop", metadata={"status": "aborted"})
        raise
    finally:
        logger.close()

    last_ckpt = None
    last_epoch = history[-1].epoch if history else start_epoch
    if ctx.is_main:
        last_ckpt = _save(Path(run.output_dir) / f"{run.model_prefix}_{run.run_tag}_last.cpt", model, optimizer,
                          scheduler, scaler, state, last_epoch, hyper_dict, seed, say)
    distributed.barrier(ctx)
    best = max((r.eval_iou for r in history), default=float("nan"))
    result = TrainResult(reached_at is not None, last_epoch, best,
                         None if reached_at is None else reached_at / 60, total_s / 60, log_path, seed, last_ckpt,
                         history, model)
    say(_summary(result, run.target_iou))
    return result


def _save(path, model, optimizer, scheduler, scaler, state, epoch, hyper_dict, seed, say) -> Path:
    _move_aside(path, say)  # another run's checkpoint of the same name is kept, not overwritten
    return checkpoint.save(path, model=model, optimizer=optimizer, scheduler=scheduler, grad_scaler=scaler,
                           step=state.step, epoch=epoch, hyperparameters=hyper_dict, seed=seed)


def _move_aside(path: Path, say) -> None:
    """Never overwrite an earlier run's log or checkpoint: keep it under a timestamped name."""
    if path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
        kept = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
        n = 1
        while kept.exists():
            kept, n = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}"), n + 1
        path.rename(kept)
        say(f"kept the previous {path.name} as {kept}")


def _epoch_line(r: EpochRecord, max_epochs: int) -> str:
    return (f"epoch {r.epoch:3d}/{max_epochs}  step {r.step:6d}  train_loss {r.train_loss:.4f}  "
            f"train_iou {r.train_iou:.4f}  eval_iou {r.eval_iou:.4f}  {r.samples_per_s:7.1f} samples/s  "
            f"elapsed {r.elapsed_s / 60:6.2f} min")


def _summary(result: TrainResult, target: float) -> str:
    if result.reached:
        head = f"reached eval IoU {target} after {result.epochs} epochs in {result.minutes_to_target:.2f} min"
    else:
        head = f"target {target} not reached in {result.epochs} epochs; best eval IoU {result.best_iou:.4f}"
    return f"{head} (run {result.total_minutes:.2f} min, log {result.log_path})"


def _print(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)
