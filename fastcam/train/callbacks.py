"""The Trainer's standard callbacks: the MLPerf recorder, the console line and
the checkpointer (tuning adds its pruning callback the same way).

The recorder writes the epoch part of the MLPerf log in the reference's order
(``train.py`` / ``driver/validation.py``): ``epoch_start``, the training values,
``eval_start``, ``eval_accuracy``, ``eval_loss``, ``target_accuracy_reached``
when met, ``eval_stop``, then ``epoch_stop``; ``run_start`` and ``run_stop``
around fit. Timed keys are preceded by a barrier, so rank 0's timestamps cover
every rank.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from fastcam import distributed
from fastcam import logkeys as K
from fastcam.train import checkpoint
from fastcam.train.trainer import Callback, EpochRecord, EpochResult, EvalResult, Trainer


class MLPerfRecorder(Callback):
    def __init__(self, logger, ctx):
        self.logger, self.ctx = logger, ctx
        self.status = "aborted"

    def on_fit_start(self, trainer: Trainer) -> None:
        distributed.barrier(self.ctx)
        self.logger.start(K.RUN_START)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        distributed.barrier(self.ctx)
        self.logger.start(K.EPOCH_START, metadata={K.EPOCH_NUM: epoch + 1, K.STEP_NUM: trainer.step})

    def on_step_logged(self, trainer: Trainer, epoch: int, step: int, lr: float, loss: float, iou: float) -> None:
        meta = {K.EPOCH_NUM: epoch + 1, K.STEP_NUM: step}
        self.logger.event(K.LEARNING_RATE, lr, meta)
        self.logger.event(K.TRAIN_ACCURACY, iou, meta)
        self.logger.event(K.TRAIN_LOSS, loss, meta)

    def on_train_end(self, trainer: Trainer, epoch: int, result: EpochResult) -> None:
        # The reference logs the last batch's values at every epoch's end.
        self.on_step_logged(trainer, epoch, trainer.step, result.last_lr, result.last_loss, result.iou)

    def on_eval_start(self, trainer: Trainer, epoch: int) -> None:
        distributed.barrier(self.ctx)
        self.logger.start(K.EVAL_START, metadata={K.EPOCH_NUM: epoch + 1})

    def on_eval_end(self, trainer: Trainer, epoch: int, result: EvalResult, reached: bool) -> None:
        meta = {K.EPOCH_NUM: epoch + 1, K.STEP_NUM: trainer.step}
        self.logger.event(K.EVAL_ACCURACY, result.iou, meta)
        self.logger.event(K.EVAL_LOSS, result.loss, meta)
        if reached:
            self.logger.event(K.TARGET_ACCURACY_REACHED, trainer.plan.run.target_iou, meta)
        self.logger.end(K.EVAL_STOP, metadata={K.EPOCH_NUM: epoch + 1})

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        distributed.barrier(self.ctx)
        self.logger.end(K.EPOCH_STOP, metadata={K.EPOCH_NUM: record.epoch, K.STEP_NUM: record.step})

    def on_fit_end(self, trainer: Trainer, reached: bool) -> None:
        self.status = "success" if reached else "aborted"
        distributed.barrier(self.ctx)
        self.logger.end(K.RUN_STOP, metadata={K.STATUS: self.status})


class ConsoleLine(Callback):
    """One line per epoch on rank 0 (loss, IoUs, throughput, elapsed)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self.say(epoch_line(record, trainer.plan.run.max_epochs))


class Checkpointer(Callback):
    """``MODEL_PREFIX_step_N.cpt`` every ``save_frequency`` epochs on rank 0
    (after ``epoch_stop``, as the reference saves), and ``last`` at the end."""

    def __init__(self, say: Callable[[str], None], seed: int):
        self.say, self.seed = say, seed
        self.last_path: Path | None = None

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        run, hp = trainer.plan.run, trainer.plan.hyperparameters
        if record.epoch % hp.save_frequency == 0 and trainer.ctx.is_main:
            self.save(trainer, Path(run.output_dir) / f"{run.model_prefix}_step_{record.step}.cpt", record.epoch)

    def save(self, trainer: Trainer, path: Path, epoch: int) -> Path:
        # Another run's checkpoint of the same name is kept, not overwritten; if
        # this save fails (disk full: one WriteError), it goes back in place.
        kept = move_aside(path, self.say)
        try:
            return checkpoint.save(path, model=trainer.model, optimizer=trainer.optimizer,
                                   scheduler=trainer.scheduler, grad_scaler=trainer.scaler, step=trainer.step,
                                   epoch=epoch,
                                   hyperparameters=checkpoint.hyperparameters_record(trainer.plan.hyperparameters),
                                   seed=self.seed)
        except BaseException:
            if kept is not None and not path.exists():
                kept.rename(path)
            raise


def move_aside(path: Path, say) -> Path | None:
    """Never overwrite an earlier run's log or checkpoint: keep it under a
    timestamped name, which is returned (None when there was nothing to keep).
    A symbolic link counts as something there (``lexists``): it is moved, not followed."""
    if os.path.lexists(path):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.lstat().st_mtime))
        kept = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
        n = 1
        while os.path.lexists(kept):
            kept, n = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}"), n + 1
        path.rename(kept)
        say(f"kept the previous {path.name} as {kept}")
        return kept
    return None


def epoch_line(r: EpochRecord, max_epochs: int) -> str:
    return (f"epoch {r.epoch:3d}/{max_epochs}  step {r.step:6d}  train_loss {r.train_loss:.4f}  "
            f"train_iou {r.train_iou:.4f}  eval_iou {r.eval_iou:.4f}  {r.samples_per_s:7.1f} samples/s  "
            f"elapsed {r.elapsed_s / 60:6.2f} min")
