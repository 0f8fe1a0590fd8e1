"""The study: storage, creation or joining by name, and the worker loop.

Storage: by default a journal file in the output directory
(``JournalStorage`` + ``JournalFileBackend``, whose lock works on shared
cluster file systems); ``--storage`` takes a database URL (``sqlite:///x.db``,
``postgresql://...``) or a journal file path. Several workers join one study
by name and run trials concurrently; re-running the command resumes the study
until it has the requested number of finished (complete or pruned) trials.
The worker that creates the study enqueues the baseline hyperparameters and
the optimized defaults as its first trials.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from fastcam.errors import ConfigError, FastcamError

from .heartbeat import fail_stale_trials
from .journal import repair_tail

JOURNAL_NAME = "tuning.journal"
READY_ATTR = "fastcam:ready"  # set once the creating worker has queued the recipe trials
SPACE_ATTR = "fastcam:space"
OBJECTIVES_ATTR = "fastcam:objectives"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILURES_IN_A_ROW = 3


def open_storage(url: str | None, output_dir: str | Path, echo: Callable[[str], None] = print):
    """The storage named by ``--storage`` (default: the journal file in the output dir).
    A journal whose last record was cut is repaired first (tuning.journal)."""
    if url and "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as err:  # sqlalchemy raises many types (no driver, no server, bad URL)
            raise ConfigError(f"--storage {url}: cannot open the database ({str(err).splitlines()[0]})") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url) if url else Path(output_dir) / JOURNAL_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(path, echo)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise ConfigError(f"{path}: cannot open the journal file ({err.strerror})") from None
    except ValueError as err:  # a file that is not an optuna journal
        raise ConfigError(f"{path}: not an optuna journal file ({err})") from None


def open_study(name: str, storage, directions: list[str], sampler, pruner,
               space: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """Create the study, or join it if it exists; returns (study, created).

    Creation is decided by the storage (one create wins), so of several workers
    started at once exactly one sees ``created`` and enqueues the recipes.
    """
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler,
                                    pruner=pruner)
        study.set_user_attr(SPACE_ATTR, space)
        study.set_user_attr(OBJECTIVES_ATTR, len(directions))
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if len(study.directions) != len(directions):
        raise ConfigError(f"study '{name}' has {len(study.directions)} objective(s), not {len(directions)}: "
                          "use its --objectives or a new --study_name")
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is not None and stored != space:
        raise ConfigError(f"study '{name}' was created with a different search space (or batch size / data set, "
                          "which scale it): use the same --space and flags, or a new --study_name")
    return study, False


def enqueue(study: optuna.Study, trials: list[tuple[str, dict[str, Any]]]) -> None:
    """Queue the recipe trials, then mark the study ready for joining workers."""
    for label, params in trials:
        study.enqueue_trial(params, user_attrs={"enqueued": label}, skip_if_exists=True)
    study.set_user_attr(READY_ATTR, True)


def wait_until_ready(study: optuna.Study, timeout: float = 120.0, poll: float = 0.5) -> None:
    """A worker that joined a study just created waits for its creator's queue:
    starting a sampled trial before the recipes are queued would make one trial
    more than ``--trials`` (seen with two workers started at once)."""
    deadline = time.monotonic() + timeout
    # Read from the storage on every access; a study with trials (one made before
    # this attribute existed, or resumed) is ready.
    while not study.user_attrs.get(READY_ATTR) and not study.get_trials(deepcopy=False):
        if time.monotonic() > deadline:
            return  # the creator died before queueing: go on without its recipes
        time.sleep(poll)


def counts(study: optuna.Study) -> dict[TrialState, int]:
    out = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state] += 1
    return out


def run_worker(study: optuna.Study, objective: Callable, n_trials: int, grace: float,
               echo: Callable[[str], None] = print, catch: tuple[type[Exception], ...] = ()) -> int:
    """Run trials until the study has ``n_trials`` finished ones; returns how many this worker ran.

    A worker stops when the finished trials plus those running elsewhere reach
    the count and none wait to be run (a retry enqueued for a dead worker's
    trial is picked up here). An exception in ``catch`` (e.g. out of device
    memory for a large batch size) fails that trial only; after
    ``MAX_FAILURES_IN_A_ROW`` such trials the worker gives up. Any other error
    fails the trial and stops the worker.
    """
    def recorded(trial: optuna.Trial):
        try:
            return objective(trial)
        except catch as err:  # optuna records no reason for a caught failure; keep one for the report
            trial.set_user_attr("error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            raise

    ran, failures_in_a_row = 0, 0
    while True:
        fail_stale_trials(study, grace, echo)
        c = counts(study)
        finished = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
        if finished >= n_trials or (finished + c[TrialState.RUNNING] >= n_trials and not c[TrialState.WAITING]):
            if c[TrialState.RUNNING] and finished < n_trials:
                echo(f"{finished} trial(s) finished and {c[TrialState.RUNNING]} running in other workers: "
                     f"this worker stops (re-run to resume if one of them dies)")
            return ran
        try:
            with warnings.catch_warnings():
                # Enqueued recipe values outside a range are intended (see params.recipe_params).
                warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
                outcome: list[optuna.trial.FrozenTrial] = []
                study.optimize(recorded, n_trials=1, catch=catch, callbacks=[lambda _s, t, out=outcome: out.append(t)])
        except optuna.exceptions.UpdateFinishedTrialError:
            # This worker was judged dead (no heartbeat within the grace period) and its trial retried.
            echo("this worker's trial was marked failed by another worker (heartbeat too late); continuing")
            outcome = []
        ran += 1
        failed = [t for t in outcome if t.state == TrialState.FAIL]
        failures_in_a_row = failures_in_a_row + 1 if failed else 0
        for trial in failed:
            echo(f"trial {trial.number}: failed ({trial.user_attrs.get('error', 'error')})")
        if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise FastcamError(f"{failures_in_a_row} trials in a row failed, the last one with: "
                               f"{failed[-1].user_attrs.get('error', 'an error')}")

