"""Trial heartbeats: a worker that dies leaves a trial that is failed and retried.

Optuna's own heartbeat (``heartbeat_interval`` / ``grace_period``) exists only
for RDBStorage; JournalStorage, the default here because it works on shared
cluster file systems, has none (optuna 5.0: ``optuna.storages.journal`` does
not implement ``BaseHeartbeat``). So fastcam records the heartbeat itself, the
same way for every storage: while a trial runs, a thread stores the time in the
trial's user attribute ``fastcam:heartbeat`` every ``interval`` seconds
(``Trial.set_user_attr``, public API; optuna 5.0's ``Trial`` has no public
way to set a system attribute or to name its storage id).
Before each trial, every worker fails the RUNNING trials whose last heartbeat
(or start, if none yet) is older than ``grace`` seconds and hands them to
optuna's ``RetryFailedTrialCallback``, which enqueues the same parameters
again. Only one worker wins the state change (the storage refuses to update a
finished trial), so a stale trial is retried once. Workers on different nodes
compare their clocks: keep them synchronised (NTP) and ``grace`` well above the
skew.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "fastcam:heartbeat"
MAX_RETRY = 2  # a trial that kills its worker every time (e.g. out of memory) is not retried forever


class Heartbeat:
    """Context manager: record the trial's heartbeat every ``interval`` seconds."""

    def __init__(self, trial: optuna.Trial, interval: float) -> None:
        self._trial, self._interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial.number}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        # Set here, before the thread starts, so that the beats only update an existing key of the
        # trial's cached attributes (never resize the dict the training thread may read).
        self._trial.set_user_attr(HEARTBEAT_ATTR, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._trial.set_user_attr(HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # another worker judged this trial stale; nothing left to keep alive
            except Exception:  # a transient storage error (database restart, NFS hiccup): beat again next time
                continue


def last_sign_of_life(trial: FrozenTrial) -> float:
    # Studies written before fastcam kept the beat as a system attribute; a resumed one still has them.
    beat = trial.user_attrs.get(HEARTBEAT_ATTR, trial.system_attrs.get(HEARTBEAT_ATTR))
    if beat is not None:
        return float(beat)
    start = trial.datetime_start
    return start.timestamp() if start is not None else time.time()


def fail_stale_trials(study: optuna.Study, grace: float, echo: Callable[[str], None] = print) -> list[int]:
    """Fail RUNNING trials silent for more than ``grace`` seconds; enqueue their retries.

    Returns the numbers of the trials this worker failed.
    """
    now = time.time()
    # Private storage access, kept on purpose: failing another worker's trial must be a compare-and-set
    # (the storage's set_trial_state_values returns False, or raises, unless the trial was still
    # running), so that of several workers exactly one fails and retries it. The public Study.tell
    # checks the state and then sets it, so two workers could both retry the trial; optuna's own
    # storages.fail_stale_trials uses the same study._storage and FrozenTrial._trial_id.
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = now - last_sign_of_life(trial)
        if silent <= grace:
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        failed.append(trial.number)
        frozen = storage.get_trial(trial._trial_id)
        retries = len(frozen.system_attrs.get("retry_history", []))
        enqueue_retry(study, frozen)
        note = "retry enqueued" if retries < MAX_RETRY else f"not retried again ({MAX_RETRY} retries)"
        echo(f"trial {trial.number}: no heartbeat for {silent:.0f} s (worker gone); marked failed, {note}")
    return failed


def enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Queue ``trial``'s parameters again, as Optuna's RetryFailedTrialCallback
    does (same ``failed_trial``/``retry_history`` system attributes, at most
    MAX_RETRY retries), but as *fixed* parameters the way ``enqueue_trial``
    stores them: the callback re-validates them against their distributions,
    which rejects an enqueued recipe trial whose published value lies outside
    the search range (e.g. milestone 1200 on a small data set)."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY:
        return False
    # A fresh trial: no old beat.
    inherited = {k: v for k, v in trial.system_attrs.items() if k != HEARTBEAT_ATTR}
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k != HEARTBEAT_ATTR}
    system_attrs = {**inherited, "fixed_params": dict(trial.params),
                    "failed_trial": trial.system_attrs.get("failed_trial", trial.number), "retry_history": history}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=system_attrs,
                                              user_attrs=user_attrs))
    return True
