"""Trial heartbeats: a worker that dies leaves a trial that is failed and retried.

Optuna's own heartbeat (``heartbeat_interval`` / ``grace_period``) exists only
for RDBStorage; JournalStorage, the default here because it works on shared
cluster file systems, has none (optuna 5.0: ``optuna.storages.journal`` does
not implement ``BaseHeartbeat``). So fastcam records the heartbeat itself, the
same way for every storage: while a trial runs, a thread stores the time in the
trial's system attribute ``fastcam:heartbeat`` every ``interval`` seconds.
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
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "fastcam:heartbeat"
MAX_RETRY = 2  # a trial that kills its worker every time (e.g. out of memory) is not retried forever


class Heartbeat:
    """Context manager: record the trial's heartbeat every ``interval`` seconds."""

    def __init__(self, storage, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # another worker judged this trial stale; nothing left to keep alive
            except Exception:  # a transient storage error (database restart, NFS hiccup): beat again next time
                continue


def last_sign_of_life(trial: FrozenTrial) -> float:
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if beat is not None:
        return float(beat)
    start = trial.datetime_start
    return start.timestamp() if start is not None else time.time()


def fail_stale_trials(study: optuna.Study, grace: float, echo: Callable[[str], None] = print) -> list[int]:
    """Fail RUNNING trials silent for more than ``grace`` seconds; enqueue their retries.

    Returns the numbers of the trials this worker failed.
    """
    now = time.time()
    storage = study._storage  # public attribute in all but name; optuna's fail_stale_trials uses it too
    retry = retry_callback()
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
        retry(study, frozen)
        note = "retry enqueued" if retries < MAX_RETRY else f"not retried again ({MAX_RETRY} retries)"
        echo(f"trial {trial.number}: no heartbeat for {silent:.0f} s (worker gone); marked failed, {note}")
    return failed


def retry_callback():
    # Renamed RetryHeartbeatStaleTrialCallback in optuna 4.9 (the old name is a deprecated alias).
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=MAX_RETRY)
