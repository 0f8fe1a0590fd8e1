"""One trial: one in-process ``train()`` run, scored by the benchmark's own figure.

Objective values (all minimised):

- ``time``: minutes from ``run_start`` until the validation accuracy first
  reached the target (``TrainResult.minutes_to_target``).
- ``time-epochs``: those minutes and the number of epochs (two objectives).

**Penalty.** A trial that does not reach the target within its epoch budget
(``--max_epochs``) scores ``PENALTY_MINUTES * (2 - best_iou / target)``
minutes and ``max_epochs * (2 - best_iou / target)`` epochs: more than any
trial that reached the target, and less the closer its best accuracy came, so
the sampler (TPE ranks values) still learns from failures. The minutes must not
depend on the trial's own speed: charging "that many epochs at its own minutes
per epoch" ranked a fast optimizer that missed the target above a slower one
that reached it (seen in the CPU study). PENALTY_MINUTES (10^4, a week) is far
above any real time to target (the published baseline took 276 minutes). A
trial whose training loss became non-finite counts as a failure with IoU 0,
whatever its accuracy.

**Pruning.** :class:`PruningCallback` is a ``fastcam.train.Callback``: at
each epoch's end (after the evaluation) it reports ``1 - eval_iou`` (the IoU
error, so that lower is better, like the study's direction that the pruners
follow) and raises ``optuna.TrialPruned`` when the pruner says so. A trial whose training loss
became non-finite has diverged; it reports NaN, which optuna's pruners always
prune (its accuracy is meaningless: a NaN network predicts background
everywhere, which scores well on IoU). Optuna prunes single-objective studies
only, so ``time-epochs`` runs every trial to the end.

A trial is ``apply(base, params)`` (one validated ``Config.replace``) and then
``fastcam.train.train`` -- the same rules check, plan and Trainer as
``fastcam train``. Each trial writes its own MLPerf log,
``OUTPUT_DIR/logs/trial-NNNN.log``, that ``fastcam compare`` reads like any
other run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

from fastcam.config import Config
from fastcam.train import Callback, train
from fastcam.train.trainer import NonFiniteLoss

from .heartbeat import Heartbeat
from .params import apply, suggest
from .space import ParamSpec

OBJECTIVES = {"time": ("minutes",), "time-epochs": ("minutes", "epochs")}


def trial_tag(number: int) -> str:
    return f"trial-{number:04d}"


PENALTY_MINUTES = 1.0e4


def penalty_factor(best_iou: float, target: float) -> float:
    """In (1, 2]: 2 for IoU 0 (or NaN), approaching 1 as the best IoU nears the target."""
    best = best_iou if math.isfinite(best_iou) else 0.0
    return 2.0 - min(best, target) / target


def penalty_epochs(best_iou: float, target: float, max_epochs: int) -> float:
    return max_epochs * penalty_factor(best_iou, target)


def diverged(result) -> bool:
    """Whether the training loss became non-finite in any epoch of a ``TrainResult``."""
    return any(not math.isfinite(r.train_loss) for r in result.history)


def objective_values(result, target: float, max_epochs: int, objectives: str) -> list[float]:
    """The trial's values from a ``TrainResult`` (see the module docstring)."""
    if result.reached and not diverged(result):
        minutes, epochs = float(result.minutes_to_target), float(result.epochs)
    else:
        # A diverged network's accuracy is meaningless (see PruningCallback): charged as IoU 0.
        factor = penalty_factor(0.0 if diverged(result) else result.best_iou, target)
        minutes, epochs = PENALTY_MINUTES * factor, max_epochs * factor
    return [minutes, epochs][: len(OBJECTIVES[objectives])]


class PruningCallback(Callback):
    """Report each epoch's accuracy to optuna, stop a hopeless trial."""

    def __init__(self, trial: optuna.Trial, prune: bool) -> None:
        self.trial, self.prune = trial, prune
        self.history: list[float] = []

    def on_epoch_end(self, trainer, record) -> None:
        self.history.append(record.eval_iou)
        self.trial.set_user_attr("eval_iou", list(self.history))
        if not self.prune:
            return
        diverged = not (math.isfinite(record.train_loss) and math.isfinite(record.eval_iou))
        error = float("nan") if diverged else 1.0 - record.eval_iou
        self.trial.report(error, record.epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "All-NaN slice" for a diverged trial
            prune_now = self.trial.should_prune()
        if prune_now:
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch} with eval IoU {record.eval_iou:.4f}")


@dataclasses.dataclass
class Objective:
    """Callable for ``study.optimize``: sample, vet, train, score."""

    base: Config  # the optimized recipe + the user's flags (run settings of the worker)
    resolved: dict[str, ParamSpec]
    objectives: str = "time"
    heartbeat_interval: float = 60.0
    echo: Callable[[str], None] = print
    # Replaces the reference network in every trial (tests of the study mechanics use a tiny one).
    model_factory: Callable[[], torch.nn.Module] | None = None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = suggest(trial, self.resolved, self.base)
        config = trial_config(self.base, params, trial.number)
        tag, run = trial_tag(trial.number), config.run
        trial.set_user_attr("log", str(Path(run.output_dir) / "logs" / f"{tag}.log"))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        self.echo(f"trial {trial.number}: start  {format_params(params)}")
        prune = len(OBJECTIVES[self.objectives]) == 1
        callback = PruningCallback(trial, prune)
        started = time.perf_counter()
        try:
            with Heartbeat(trial, self.heartbeat_interval):  # train() runs the guard: once per trial
                result = train(config, callbacks=(callback,), echo=lambda m: self.echo(f"  [{tag}] {m}"),
                               model_factory=self.model_factory)
        except NonFiniteLoss as err:
            # Diverged (a too-high LR, typically): a hopeless trial, pruned as the
            # pruner prunes one whose reported error is NaN -- a result of the search, not an error.
            trial.set_user_attr("diverged", True)
            _record(trial, epochs=len(callback.history), best_iou=0.0, reached=False,
                    minutes=(time.perf_counter() - started) / 60)
            self.echo(f"trial {trial.number}: pruned, diverged ({err})")
            raise optuna.TrialPruned(f"diverged: {err}") from None
        except optuna.TrialPruned:
            epochs, best = len(callback.history), max(callback.history, default=float("nan"))
            _record(trial, epochs=epochs, best_iou=best, reached=False,
                    minutes=(time.perf_counter() - started) / 60)
            self.echo(f"trial {trial.number}: pruned after {epochs} epoch(s), best IoU {best:.4f}, "
                      f"{(time.perf_counter() - started) / 60:.2f} min")
            raise
        if result.checkpoint_path is not None:
            # A tuning trial is replayed from best.yaml, not resumed; ~0.7 GB per trial is not worth keeping.
            Path(result.checkpoint_path).unlink(missing_ok=True)
        values = objective_values(result, run.target_iou, run.max_epochs, self.objectives)
        _record(trial, epochs=result.epochs, best_iou=result.best_iou, reached=result.reached,
                minutes=result.minutes_to_target if result.reached else result.total_minutes)
        if diverged(result):
            trial.set_user_attr("diverged", True)
            outcome = f"diverged (non-finite training loss) in {result.epochs} epoch(s) (penalised as IoU 0)"
        elif result.reached:
            outcome = f"reached {run.target_iou} in {result.epochs} epoch(s), {result.minutes_to_target:.2f} min"
        else:
            outcome = f"target not reached in {result.epochs} epoch(s), best IoU {result.best_iou:.4f} (penalised)"
        self.echo(f"trial {trial.number}: done   {outcome}; value {', '.join(f'{v:.3f}' for v in values)}")
        return values[0] if len(values) == 1 else values


def trial_config(base: Config, params: dict[str, Any], number: int) -> Config:
    """The Config trial ``number`` trains: base + params, its own log, one process."""
    tag = trial_tag(number)
    # Each worker trains alone on its device: never join the launcher's process group (srun, torchrun).
    own = base.replace(run={"run_tag": tag, "model_prefix": tag, "wireup_method": "single", "checkpoint": None})
    return apply(own, params)


def _record(trial: optuna.Trial, **attrs) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value if not isinstance(value, float) or math.isfinite(value) else None)


def format_params(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
