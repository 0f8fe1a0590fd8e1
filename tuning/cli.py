"""``fastcam tune``: search the mutable hyperparameters with Optuna.

Takes the data and output flags of ``fastcam train`` (``--data_dir_prefix``,
``--output_dir``, ``--max_epochs`` as each trial's epoch budget,
``--target_iou``, ``--local_batch_size``, ``--device``, ``--seed``, ...); the
trials start from the optimized recipe with those flags. A mutable
hyperparameter given as a flag is pinned: it keeps that value in every trial.

Writes into OUTPUT_DIR: the study journal (``tuning.journal``, unless
``--storage``), one MLPerf log per trial (``logs/trial-NNNN.log``),
``best.yaml`` (replay with ``fastcam train --mode optimized --config
best.yaml``), ``trials.csv`` and ``plots/*.png``. Start the same command on
several devices or nodes to run trials in parallel; run it again to resume.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fastcam.errors import ConfigError

PRUNERS = ("median", "hyperband", "none")
# Flags of `fastcam train` that tune refuses: each trial starts fresh, and the result is best.yaml.
REFUSED = {"run.checkpoint": "--checkpoint", "save_config": "--save-config"}


def register(subparsers) -> None:
    from fastcam.train.cli import add_train_arguments

    p = subparsers.add_parser("tune", help="search the mutable hyperparameters (Optuna); writes best.yaml",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              argument_default=argparse.SUPPRESS)
    add_train_arguments(p)
    g = p.add_argument_group("tuning")
    g.add_argument("--trials", type=int, default=40, help="finished trials the study should have (default 40)")
    g.add_argument("--study_name", "--study-name", dest="study_name", default="deepcam",
                   help="workers with the same name and storage join one study (default deepcam)")
    g.add_argument("--storage", default=None,
                   help="database URL (sqlite:///tune.db, postgresql://...) or journal file; "
                        "default OUTPUT_DIR/tuning.journal")
    g.add_argument("--space", default=None, help="search space YAML (default: the packaged space.yaml)")
    g.add_argument("--pruner", choices=PRUNERS, default="median", help="prune on per-epoch accuracy (default median)")
    g.add_argument("--objectives", choices=("time", "time-epochs"), default="time",
                   help="minimise minutes to target, or minutes and epochs (no pruning)")
    g.add_argument("--pruner_startup_trials", "--pruner-startup-trials", dest="pruner_startup_trials", type=int,
                   default=5, help="completed trials before pruning starts (default 5)")
    g.add_argument("--pruner_warmup_epochs", "--pruner-warmup-epochs", dest="pruner_warmup_epochs", type=int,
                   default=1, help="epochs of each trial that are never pruned (default 1)")
    g.add_argument("--heartbeat_interval", "--heartbeat-interval", dest="heartbeat_interval", type=float,
                   default=60.0, help="seconds between a running trial's heartbeats (default 60)")
    g.add_argument("--grace_period", "--grace-period", dest="grace_period", type=float, default=None,
                   help="seconds without heartbeat before a trial counts as dead (default 3 x interval)")
    p.set_defaults(func=run_tune)


def build_base(args: argparse.Namespace):
    """The optimized recipe with the user's flags; the trials' starting point
    (validated, not guard-checked: each trial and best.yaml are)."""
    from fastcam.train.cli import config_from_args

    given = vars(args)
    for dest, flag in REFUSED.items():
        if dest in given:
            raise ConfigError(f"{flag} does not apply to tune (each trial starts fresh; the result is best.yaml)")
    if given.get("mode", "optimized") != "optimized":
        raise ConfigError("tune searches the hyperparameters of optimized runs: drop --mode baseline")
    # The recipe of --mode optimized, a --config file's values on it, then the flags.
    base = config_from_args(args, default_mode="optimized")
    if base.run.data_dir_prefix is None:
        from fastcam.train.default_data import default_dataset

        base = base.replace(run={"data_dir_prefix": str(default_dataset())})
    return base


def run_tune(args: argparse.Namespace, model_factory: Callable | None = None) -> int:
    """``fastcam tune``. ``model_factory`` replaces the reference network in
    every trial (no flag: tests of the study mechanics use a tiny network)."""
    from fastcam import guard

    from . import space as space_mod
    from . import study as study_mod
    from .fields import searchable

    grace = _check_tuning_flags(args)
    # The space is vetted before anything else runs or is written.
    pinned = sorted({f.dest for f in searchable().values() if f.dest in vars(args)})
    space = space_mod.load_space(args.space).without(pinned)
    if not space.params:
        raise ConfigError(f"{space.source}: nothing left to tune (every parameter is pinned by a flag)")
    base = build_base(args)
    guard.check(base)  # the user's own flags, before anything is written (a trial is checked again by train)
    # best.yaml keeps the user's device; the trials run on this worker's own device.
    trial_base = base.replace(run={"device": worker_device(base.run.device)})
    scale = space_mod.run_scale(trial_base)
    resolved = space_mod.resolve(space, scale)
    if getattr(args, "print_config", False):
        import yaml

        described = {"base": trial_base.to_dict(), "space": space_mod.describe(resolved)}
        print(yaml.safe_dump(described, sort_keys=False), end="")
        return 0

    import optuna
    import torch

    from .objective import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress is printed per trial instead
    out = Path(base.run.output_dir)
    directions = ["minimize"] * (2 if args.objectives == "time-epochs" else 1)
    study, created = study_mod.open_study(args.study_name, study_mod.open_storage(args.storage, out), directions,
                                          sampler(base.run.seed), pruner(args, base.run.max_epochs),
                                          space_mod.describe(resolved))
    if created:
        study_mod.enqueue(study, _recipe_trials(resolved, base))
    else:
        study_mod.wait_until_ready(study)
        # --seed makes a single worker's study reproducible; workers that join sample with their own
        # randomness, or all of them would propose the same values.
        study.sampler = sampler(None)
    finished = sum(study_mod.counts(study)[s] for s in study_mod.FINISHED)
    _echo(f"fastcam tune: study '{study.study_name}' ({'new' if created else 'joined'}), {finished}/{args.trials} "
          f"trials finished; global batch {scale.global_batch}, {scale.steps_per_epoch} steps/epoch, "
          f"epoch budget {base.run.max_epochs}, target {base.run.target_iou}; device {trial_base.run.device}")
    if pinned:
        _echo(f"pinned by flags: {', '.join(d.partition('.')[2] for d in pinned)}")
    if len(directions) > 1 and args.pruner != "none":
        _echo("note: optuna prunes single-objective studies only; time-epochs trials run to the end")

    objective = Objective(trial_base, resolved, args.objectives, args.heartbeat_interval, _echo, model_factory)
    # Out of device memory (a large sampled batch size) fails that trial, not the search.
    study_mod.run_worker(study, objective, args.trials, grace, _echo, catch=(torch.cuda.OutOfMemoryError,))
    _report(study, base, out, args.objectives)
    return 0


def _check_tuning_flags(args: argparse.Namespace) -> float:
    """Validate the tuning flags; returns the grace period in seconds."""
    for name, low in (("trials", 1), ("pruner_startup_trials", 0), ("pruner_warmup_epochs", 0)):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if args.heartbeat_interval <= 0:
        raise ConfigError(f"--heartbeat_interval must be > 0, got {args.heartbeat_interval}")
    grace = args.grace_period if args.grace_period is not None else 3 * args.heartbeat_interval
    if grace <= args.heartbeat_interval:
        raise ConfigError(f"--grace_period {grace:g} must exceed --heartbeat_interval {args.heartbeat_interval:g}")
    return grace


def _recipe_trials(resolved, base) -> list[tuple[str, dict]]:
    """The baseline hyperparameters and the optimized defaults, as the study's first trials."""
    from fastcam.config import baseline, optimized

    from .params import recipe_params

    trials: list[tuple[str, dict]] = []
    for label, recipe in (("baseline", baseline()), ("optimized", optimized())):
        values = recipe_params(recipe, resolved, base)
        if values and values not in [v for _, v in trials]:
            trials.append((label, values))
    return trials


def _report(study, base, out: Path, objectives: str) -> None:
    from . import report

    best = report.write_best(study, base, out / "best.yaml")
    report.write_csv(study, out / "trials.csv", objectives)
    _echo(report.summary(study, objectives))
    report.write_plots(study, out / "plots", objectives, _echo)
    if best is None:
        _echo(f"no trial completed yet; wrote {out / 'trials.csv'}")
    else:
        _echo(f"best: trial {best.number}; wrote {out / 'best.yaml'} (replay: fastcam train --mode optimized "
              f"--config {out / 'best.yaml'}), {out / 'trials.csv'}, {out / 'plots'}")


def sampler(seed: int | None):
    import optuna

    # TPE handles the conditional schedule parameters and both objective modes; the constant liar keeps
    # concurrent workers from proposing the same values for trials that are still running.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def pruner(args: argparse.Namespace, max_epochs: int):
    import optuna

    # Epochs are reported as steps 1, 2, ...; optuna skips steps < n_warmup_steps.
    warmup = args.pruner_warmup_epochs + 1
    if args.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=args.pruner_startup_trials, n_warmup_steps=warmup)
    if args.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=max(warmup, max_epochs))
    return optuna.pruners.NopPruner()


def worker_device(device: str, environ=None, cuda_count: int | None = None) -> str:
    """One device per worker: with several visible GPUs, pick the worker's local rank's.

    ``srun --gpus-per-task=1`` shows each task one GPU (index 0); with several
    visible, ``SLURM_LOCALID`` (or torchrun's ``LOCAL_RANK``) chooses. The same
    holds for Intel XPUs (``device`` xpu, or auto on an XPU build); ``cuda_count``
    overrides the number of visible devices (tests).
    """
    if device not in ("auto", "cuda", "xpu"):
        return device
    from fastcam import accelerator

    device_type = device
    if device == "auto":
        device_type = "cuda" if cuda_count is not None else accelerator.resolve_device("auto").type
        if device_type == "cpu":
            return device
    environ = os.environ if environ is None else environ
    count = cuda_count if cuda_count is not None else accelerator.device_count(device_type)
    local = environ.get("LOCAL_RANK", environ.get("SLURM_LOCALID"))
    if count > 1 and local is not None and local.isdigit():
        return f"{device_type}:{int(local) % count}"
    return device


def _echo(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
