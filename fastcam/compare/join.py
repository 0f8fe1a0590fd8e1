"""Joining a killed-and-resumed run's logs into one run.

``fastcam train --checkpoint`` continues a run from its last checkpoint under
the same run tag and seed (the seed is read from the checkpoint), and the
trainer keeps the earlier log under a timestamped name
(``<tag>.<YYYYmmdd-HHMMSS>[-n].log``, ``fastcam.train.callbacks.move_aside``).
Two logs are segments of one run when they have

- the same run tag (the file name without that timestamp),
- the same logged ``seed``,
- continuing epochs: the later segment (by ``run_start`` time) starts at an
  epoch after the first and at most one past the last epoch the earlier one
  evaluated.

The joined run's clock: the earlier segment counts from its ``run_start`` to
its last record (the moment it was killed, work lost since the checkpoint
included), then the later segment continues from its ``run_start``; the gap
between them (queue wait, the new process's initialisation) is not counted,
as MLPerf does not count initialisation. Records of epochs the later segment
repeats are taken from the later segment only.
"""

from __future__ import annotations

import re
from dataclasses import replace

from fastcam import logkeys
from fastcam.compare.logs import LogEvent, RunLog

_KEPT_STAMP = re.compile(r"\.\d{8}-\d{6}(-\d+)?$")


def run_tag(log: RunLog) -> str:
    """The run tag a fastcam log was written under: its file stem without the
    timestamp the trainer adds when it keeps an earlier log."""
    return _KEPT_STAMP.sub("", log.path.stem)


def join_resumed(logs: list[RunLog]) -> list[RunLog]:
    """The logs with each chain of resumed segments replaced by one joined
    :class:`RunLog` (its ``parts`` name the segments); other logs unchanged,
    in their original order."""
    by_key: dict[tuple, list[int]] = {}
    for index, log in enumerate(logs):
        seed = log.value(logkeys.SEED)
        if seed is not None:
            by_key.setdefault((log.path.parent, run_tag(log), seed), []).append(index)
    replaced: dict[int, RunLog | None] = {}
    for indices in by_key.values():
        if len(indices) < 2:
            continue
        ordered = sorted(indices, key=lambda i: _run_start_ms(logs[i]))
        chain = [ordered[0]]
        joined = logs[ordered[0]]
        for index in ordered[1:]:
            later = logs[index]
            if _continues(joined, later):
                joined = _join(joined, later)
                chain.append(index)
            else:  # a fresh run under the same tag: start a new chain
                if len(chain) > 1:
                    _place(replaced, chain, joined)
                chain, joined = [index], later
        if len(chain) > 1:
            _place(replaced, chain, joined)
    out = []
    for index, log in enumerate(logs):
        if index not in replaced:
            out.append(log)
        elif replaced[index] is not None:
            out.append(replaced[index])
    return out


def _place(replaced: dict[int, RunLog | None], chain: list[int], joined: RunLog) -> None:
    replaced[chain[0]] = joined
    for index in chain[1:]:
        replaced[index] = None


def _run_start_ms(log: RunLog) -> float:
    start = log.first(logkeys.RUN_START)
    return start.time_ms if start else float("inf")


def _epochs(log: RunLog, key: str) -> list[int]:
    return [e.metadata[logkeys.EPOCH_NUM] for e in log.all(key) if isinstance(e.metadata.get(logkeys.EPOCH_NUM), int)]


def _continues(earlier: RunLog, later: RunLog) -> bool:
    starts = _epochs(later, logkeys.EPOCH_START)
    evaluated = _epochs(earlier, logkeys.EVAL_ACCURACY)
    if not starts or not evaluated or _run_start_ms(later) <= _run_start_ms(earlier):
        return False
    return 1 < min(starts) <= max(evaluated) + 1


def _join(earlier: RunLog, later: RunLog) -> RunLog:
    resume_epoch = min(_epochs(later, logkeys.EPOCH_START))
    start_at = earlier.events.index(earlier.first(logkeys.RUN_START))
    kept = earlier.events[:start_at + 1]
    for event in earlier.events[start_at + 1:]:
        epoch = event.metadata.get(logkeys.EPOCH_NUM)
        if event.key == logkeys.RUN_STOP or (isinstance(epoch, int) and epoch >= resume_epoch):
            continue
        kept.append(event)
    killed_at = earlier.events[-1].time_ms
    later_start = later.first(logkeys.RUN_START)
    shift = killed_at - later_start.time_ms
    after = later.events[later.events.index(later_start) + 1:]
    kept += [_shifted(e, shift) for e in after]
    return RunLog(later.path, kept, parts=[*earlier.parts, *later.parts])


def _shifted(event: LogEvent, shift_ms: float) -> LogEvent:
    return replace(event, time_ms=event.time_ms + shift_ms)
