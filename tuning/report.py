"""Results of a study: best.yaml, the trials table, a printed summary, plots.

``best.yaml`` is the best trial's Config (the optimized base with the trial's
parameters, guard-checked), written atomically with ``Config.to_yaml``, so
that ``fastcam train --mode optimized --config best.yaml`` replays it as a
compliant run. With two objectives the best trial is the Pareto-optimal one
with the shortest time.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from fastcam import guard
from fastcam.config import Config
from fastcam.files import atomic_write_text

from .objective import OBJECTIVES
from .params import apply

PLOTS = ("history", "importances", "parallel")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) == 1:
        return study.best_trial
    return min(study.best_trials, key=lambda t: t.values[0])


def write_best(study: optuna.Study, replay_base: Config, path: Path) -> FrozenTrial | None:
    """Write the best trial's config to ``path``; None if no trial completed."""
    best = best_trial(study)
    if best is None:
        return None
    config = apply(replay_base, best.params)
    guard.check(config)  # best.yaml must replay as a compliant optimized run
    config.to_yaml(path)
    return best


def write_csv(study: optuna.Study, path: Path, objectives: str) -> None:
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    value_names = ["value"] if objectives == "time" else [f"value_{n}" for n in OBJECTIVES[objectives]]
    header = ["number", "state", *value_names, "reached", "epochs", "best_iou", "minutes", "enqueued",
              "retry_of", *names, "log", "worker", "datetime_start", "datetime_complete"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for t in trials:
        values = list(t.values) if t.values else [None] * len(value_names)
        attrs = t.user_attrs
        writer.writerow([t.number, t.state.name, *values, attrs.get("reached"), attrs.get("epochs"),
                         attrs.get("best_iou"), attrs.get("minutes"), attrs.get("enqueued"),
                         t.system_attrs.get("failed_trial"), *(t.params.get(n) for n in names), attrs.get("log"),
                         attrs.get("worker"),
                         t.datetime_start, t.datetime_complete])
    atomic_write_text(path, out.getvalue())


def summary(study: optuna.Study, objectives: str, top: int = 10) -> str:
    """A table of the best ``top`` trials (completed first by value, then pruned by accuracy)."""
    trials = study.get_trials(deepcopy=False)
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])
    pruned = sorted((t for t in trials if t.state == TrialState.PRUNED),
                    key=lambda t: -(t.user_attrs.get("best_iou") or 0.0))
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    lines = [f"study '{study.study_name}': " + ", ".join(f"{n} {s}" for s, n in states.items() if n)]
    lines.append(f"{'trial':>5}  {'state':8} {'value':>9} {'epochs':>6} {'best IoU':>8} {'minutes':>8}  parameters")
    for t in (done + pruned)[:top]:
        a = t.user_attrs
        value = f"{t.values[0]:9.3f}" if t.values else f"{'-':>9}"
        lines.append(f"{t.number:5d}  {t.state.name.lower():8} {value} {_num(a.get('epochs'), 'd', 6)} "
                     f"{_num(a.get('best_iou'), '.4f', 8)} {_num(a.get('minutes'), '.2f', 8)}  {_params(t.params)}")
    lines.append("value: minutes to the target; a trial that missed it is penalised (see fastcam.tuning.objective)")
    return "\n".join(lines)


def write_plots(study: optuna.Study, directory: Path, objectives: str,
                echo: Callable[[str], None] = print) -> list[Path]:
    """History, parameter importances and parallel coordinates as PNG files."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    name = "minutes to target (penalised if missed)"
    plots = {
        "history": (1, lambda: ovm.plot_optimization_history(study, target=target, target_name=name)),
        "importances": (2, lambda: ovm.plot_param_importances(study, target=target, target_name=name)),
        "parallel": (1, lambda: ovm.plot_parallel_coordinate(study, target=target, target_name=name)),
    }
    width = max(8.0, 1.2 * max((len(t.params) for t in complete), default=0))  # room for every axis
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for key in PLOTS:
        needed, plot = plots[key]
        if len(complete) < needed:
            echo(f"plot {key}: skipped, needs at least {needed} completed trial(s) (have {len(complete)})")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
                axes = plot()
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(width, 6.0)
            path = directory / f"{key}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            # e.g. importances when no parameter varies across the completed trials
            echo(f"plot {key}: skipped ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
            plt.close("all")
    return written


def _num(value, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:{width}{fmt}}"


def _params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
