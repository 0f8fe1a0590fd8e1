"""The facts of one run, read from its MLPerf log: what the results table reports.

Definitions (the issue's, applied to every log format alike):

- minutes to target: from the ``run_start`` record to the first
  ``eval_accuracy`` record whose value is >= the target; its ``epoch_num`` is
  the epochs to target. Otherwise the run has "not reached" it, and the best
  accuracy it logged is reported instead.
- target: ``--target`` when given; else the log's ``fastcam_target_iou``
  (fastcam logs the target it trained for); else the value of
  ``target_accuracy_reached`` (the reference and NVIDIA log the target when
  they reach it, mlcommons/hpc deepcam/src/deepCam/driver/validation.py);
  else the benchmark's 0.82.
- training throughput: per epoch, the samples trained divided by the time from
  ``epoch_start`` to the end of training. fastcam closes ``epoch_stop`` before
  evaluating; the reference and NVIDIA evaluate *inside* the epoch interval,
  so the training part ends at that epoch's ``eval_start`` when one lies
  within the interval. Samples = optimizer steps of the epoch (differences of
  ``step_num``) x ``global_batch_size`` -- both count the same thing in the
  three implementations -- or, where the log has no step numbers,
  ``floor(train_samples / global_batch_size) x global_batch_size`` (the
  sampler drops the last partial batch). The run's mean is total samples over
  total training time, not a mean of per-epoch rates.
- per accelerator: divided by ``number_of_nodes x accelerators_per_node``;
  a CPU run logs 0 accelerators, and is divided by its number of processes.
- run type: :mod:`fastcam.compare.runtype` (``--type FILE=TYPE``, else from
  the log's hyperparameters and the rules profile).
- ESIF interval times: the ESIF draft's log parser sums the ``epoch_start`` ..
  ``epoch_stop`` intervals (evaluation inside them, as the reference logs),
  up to the epoch that reached the target; the median interval is its
  "median timing per epoch".
- step time (the ESIF scenario draft's "median time per training step"):
  from per-step ``train_loss`` records (``logging_frequency`` N > 0), the time
  between two consecutive records of one epoch divided by the optimizer steps
  between them (N); never across an epoch or evaluation boundary (see
  :func:`_step_seconds` for exactly what is measured). The run's median over
  those intervals is the *Median step (ms)*; a log with per-epoch records only
  has none.
- precision: :func:`fastcam.compare.runtype.precision_text`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcam import logkeys
from fastcam.compare.logs import LogEvent, RunLog
from fastcam.compare.runtype import classify, logged_precision, precision_text
from fastcam.errors import DataError

DEFAULT_TARGET = 0.82
SCENARIO_KEY = logkeys.FASTCAM_SCENARIO


@dataclass
class EpochPoint:
    """One evaluated (and, where timed, trained) epoch of a run."""

    epoch: int
    minutes: float | None  # eval_accuracy time since run_start
    accuracy: float | None
    train_seconds: float | None = None
    samples: int | None = None
    interval_seconds: float | None = None  # epoch_start .. epoch_stop

    @property
    def samples_per_s(self) -> float | None:
        if not self.samples or not self.train_seconds or self.train_seconds <= 0:
            return None
        return self.samples / self.train_seconds


@dataclass
class RunFacts:
    path: Path
    run_type: str
    org: str | None
    platform: str | None
    nodes: int | None
    accelerators_per_node: int | None
    ranks: int | None
    global_batch_size: int | None
    local_batch_size: int | None
    optimizer: str | None
    start_lr: float | None
    weight_decay: float | None
    schedule: dict[str, Any]  # scheduler_* keys without the prefix, "type" included
    target: float
    reached: bool
    minutes_to_target: float | None
    epochs_to_target: int | None
    best_accuracy: float | None
    epochs_run: int
    total_minutes: float | None
    status: str  # run_stop's status, or "incomplete" when the log has no run_stop
    epochs: list[EpochPoint] = field(default_factory=list)
    run_type_reason: str = ""
    seed: int | None = None
    parts: list[Path] = field(default_factory=list)  # the logs of a resumed run, first segment first
    precision: str | None = None  # fp32 | fp16 | bf16 (the profile's names; another tool's value as logged)
    precision_label: str = "unknown"  # the Precision cell: "fp32", "AMP bf16", "fp32, fp16 inputs", ...
    staged: bool = False  # staging_start logged
    scenario: str | None = None  # logged fastcam_scenario
    division: str | None = None
    step_seconds: list[float] = field(default_factory=list)  # per optimizer step, from per-step records
    run_start_ms: float | None = None

    @property
    def esif_total_minutes(self) -> float | None:
        """Sum of the epoch intervals up to the epoch that reached the target (ESIF's parser)."""
        if self.epochs_to_target is None:
            return None
        spans = [p.interval_seconds for p in self.epochs if p.epoch <= self.epochs_to_target]
        if not spans or any(s is None for s in spans):
            return None
        return sum(spans) / 60.0

    @property
    def median_epoch_minutes(self) -> float | None:
        spans = [p.interval_seconds for p in self.epochs if p.interval_seconds is not None]
        return statistics.median(spans) / 60.0 if spans else None

    @property
    def median_step_seconds(self) -> float | None:
        return statistics.median(self.step_seconds) if self.step_seconds else None

    @property
    def median_step_ms(self) -> float | None:
        """Median time per training step in milliseconds; None for a log without per-step records."""
        seconds = self.median_step_seconds
        return None if seconds is None else seconds * 1000.0

    @property
    def devices(self) -> int | None:
        """Accelerators in use, or processes for a run without accelerators."""
        if self.nodes and self.accelerators_per_node:
            return self.nodes * self.accelerators_per_node
        return self.ranks

    @property
    def samples_per_s(self) -> float | None:
        timed = [e for e in self.epochs if e.samples_per_s is not None]
        seconds = sum(e.train_seconds for e in timed)
        return sum(e.samples for e in timed) / seconds if timed and seconds > 0 else None

    @property
    def samples_per_s_per_device(self) -> float | None:
        overall = self.samples_per_s
        return overall / self.devices if overall is not None and self.devices else None

    @property
    def label(self) -> str:
        """A plot legend's entry: run type, file, precision."""
        return f"{self.run_type} {self.path.stem} ({self.precision_label})"


def run_facts(log: RunLog, *, run_type: str | None = None, target: float | None = None,
              profile=None) -> RunFacts:
    """Everything the table and the plots need from one parsed log; the run
    type under ``profile`` (default: :data:`fastcam.rules.DEFAULT`) unless
    ``run_type`` overrides it."""
    if profile is None:
        from fastcam import rules

        profile = rules.load(rules.DEFAULT)
    kind = classify(log, profile, override=run_type)
    run_start = log.first("run_start")
    assert run_start is not None  # read_log guarantees exactly one
    target = resolve_target(log) if target is None else float(target)
    points = _epoch_points(log, run_start)
    reached_at = next((e for e in log.all("eval_accuracy")
                       if _number(e.value) is not None and e.value >= target), None)
    accuracies = [a for a in (_number(e.value) for e in log.all("eval_accuracy")) if a is not None]
    run_stop = log.first("run_stop")
    end = run_stop or log.events[-1]
    global_batch = _int(log, "global_batch_size")
    local_batch = _int(log, "local_batch_size")
    ranks = _int(log, "number_of_ranks")
    if local_batch is None and global_batch and ranks:
        local_batch = global_batch // ranks
    if ranks is None and global_batch and local_batch:
        ranks = global_batch // (local_batch * (_int(log, "gradient_accumulation_frequency") or 1))
    _fill_samples(points, log, global_batch)
    return RunFacts(
        path=log.path, run_type=kind.kind, org=_str(log, "submission_org"),
        platform=_str(log, "submission_platform"), nodes=_int(log, "number_of_nodes"),
        accelerators_per_node=_int(log, "accelerators_per_node"), ranks=ranks,
        global_batch_size=global_batch, local_batch_size=local_batch, optimizer=_str(log, "opt_name"),
        start_lr=_number(log.value("opt_lr")), weight_decay=_number(log.value("opt_weight_decay")),
        schedule={e.key[len("scheduler_"):]: e.value for e in log.events if e.key.startswith("scheduler_")},
        target=target, reached=reached_at is not None,
        minutes_to_target=None if reached_at is None else _minutes(run_start, reached_at),
        epochs_to_target=None if reached_at is None else _epoch_of(reached_at, log),
        best_accuracy=max(accuracies) if accuracies else None,
        epochs_run=len(points), total_minutes=_minutes(run_start, end),
        status=str(run_stop.metadata.get("status", "unknown")) if run_stop else "incomplete",
        epochs=points, run_type_reason=kind.reason, seed=_int(log, logkeys.SEED), parts=list(log.parts),
        precision=logged_precision(log), precision_label=precision_text(log),
        staged=log.first(logkeys.STAGING_START) is not None,
        scenario=_str(log, SCENARIO_KEY), division=_str(log, logkeys.SUBMISSION_DIVISION),
        step_seconds=_step_seconds(log), run_start_ms=run_start.time_ms)


def resolve_target(log: RunLog) -> float:
    for key in ("fastcam_target_iou", "target_accuracy_reached"):
        value = _number(log.value(key))
        if value is not None:
            return value
    return DEFAULT_TARGET


# Records that end a chain of step records: the time across them is not training steps.
_STEP_BOUNDARIES = frozenset({logkeys.RUN_START, logkeys.RUN_STOP, logkeys.EPOCH_START, logkeys.EPOCH_STOP,
                              logkeys.EVAL_START, logkeys.EVAL_STOP, logkeys.STAGING_START, logkeys.STAGING_STOP,
                              logkeys.INIT_START, logkeys.INIT_STOP})


def _step_seconds(log: RunLog) -> list[float]:
    """Seconds per optimizer step between consecutive per-step records of one epoch.

    What is measured: fastcam (MLPerfRecorder.on_step_logged, as the reference's
    trainer does) writes a step's ``train_loss`` after its optimizer update, once
    the rank-averaged loss has reached the host, so the time from one record to
    the next covers the later step(s) -- loading the batch, forward, backward,
    gradient all-reduce, update and the logging itself -- and is divided by the
    steps between the records' ``step_num`` (logging_frequency N: N steps).
    Other tools' records are read the same way.
    Never across a boundary: an ``epoch_*``, ``eval_*``, ``run_*``, ``init_*`` or
    ``staging_*`` record, or another ``epoch_num``, starts a new chain. So an
    epoch's first step (its time since ``epoch_start`` includes the loader's
    start-up) is not counted, nor is evaluation. A record repeating the step
    before it (fastcam's end-of-epoch record with N = 1) adds nothing.
    """
    out: list[float] = []
    previous: LogEvent | None = None
    for event in log.events:
        if event.key in _STEP_BOUNDARIES:
            previous = None
            continue
        if event.key != logkeys.TRAIN_LOSS:
            continue
        step = event.metadata.get(logkeys.STEP_NUM)
        if not isinstance(step, int) or isinstance(step, bool):
            previous = None
            continue
        if previous is not None and previous.metadata.get(logkeys.EPOCH_NUM) == event.metadata.get(logkeys.EPOCH_NUM):
            steps = step - previous.metadata[logkeys.STEP_NUM]
            if steps == 0:
                continue  # the same step logged again: its first record marks when it finished
            if steps > 0:
                out.append((event.time_ms - previous.time_ms) / 1000.0 / steps)
        previous = event
    return out


def _epoch_points(log: RunLog, run_start: LogEvent) -> list[EpochPoint]:
    points: dict[int, EpochPoint] = {}
    for index, event in enumerate(log.all("eval_accuracy"), start=1):
        epoch = _epoch_of(event, log, default=index)
        points[epoch] = EpochPoint(epoch, _minutes(run_start, event), _number(event.value))
    stops = {_epoch_of(e, log): e for e in log.all("epoch_stop")}
    eval_starts = {_epoch_of(e, log): e for e in log.all("eval_start")}
    for start in log.all("epoch_start"):
        epoch = _epoch_of(start, log)
        stop = stops.get(epoch)
        if stop is None:  # the run ended inside this epoch
            continue
        end = stop
        evaluation = eval_starts.get(epoch)
        if evaluation is not None and start.time_ms <= evaluation.time_ms <= stop.time_ms:
            end = evaluation  # reference / NVIDIA: evaluation inside the epoch interval
        point = points.setdefault(epoch, EpochPoint(epoch, None, None))
        point.train_seconds = (end.time_ms - start.time_ms) / 1000.0
        point.interval_seconds = (stop.time_ms - start.time_ms) / 1000.0
    return [points[k] for k in sorted(points)]


def _fill_samples(points: list[EpochPoint], log: RunLog, global_batch: int | None) -> None:
    if not global_batch:
        return
    steps_at_stop = {_epoch_of(e, log): _int_meta(e, "step_num") for e in log.all("epoch_stop")}
    steps_at_start = {_epoch_of(e, log): _int_meta(e, "step_num") for e in log.all("epoch_start")}
    train_samples = _int(log, "train_samples")
    per_epoch = (train_samples // global_batch) * global_batch if train_samples else None
    for point in points:
        if point.train_seconds is None:
            continue
        end = steps_at_stop.get(point.epoch)
        begin = steps_at_start.get(point.epoch)
        if begin is None:
            begin = steps_at_stop.get(point.epoch - 1, 0 if point.epoch == 1 else None)
        if end is not None and begin is not None and end > begin:
            point.samples = (end - begin) * global_batch
        else:
            point.samples = per_epoch


def _epoch_of(event: LogEvent, log: RunLog, default: int | None = None) -> int:
    epoch = event.metadata.get("epoch_num", default)
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise DataError(f"{log.path}, line {event.line}: {event.key} has no integer epoch_num in its metadata")
    return epoch


def _minutes(start: LogEvent, end: LogEvent) -> float:
    return (end.time_ms - start.time_ms) / 60000.0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _int(log: RunLog, key: str) -> int | None:
    value = _number(log.value(key))
    return None if value is None else int(value)


def _int_meta(event: LogEvent, key: str) -> int | None:
    value = _number(event.metadata.get(key))
    return None if value is None else int(value)


def _str(log: RunLog, key: str) -> str | None:
    value = log.value(key)
    return None if value is None else str(value)
