"""Reading MLPerf HPC logs: fastcam's, the MLCommons reference's and NVIDIA's.

All three write ``:::MLLOG {json}`` records through ``mlperf_logging.mllog``
(fields ``namespace``, ``time_ms``, ``event_type``, ``key``, ``value``,
``metadata``). What differs, and what this reader tolerates:

- the marker need not start the line: launchers prefix it (``0: :::MLLOG``
  from ``srun --label``, ``[1,0]<stdout>::::MLLOG`` from OpenMPI), and NVIDIA's
  published result files are the job's whole stdout with other text between
  records (mlcommons/hpc_results_v3.0 NVIDIA/results/*/deepcam/result_*.txt);
- keys beyond the ones read here (``number_of_ranks``, ``tracked_stats``,
  ``data_format``, ``opt_amsgrad`` ...) are kept but ignored by the table;
- text after the JSON object on the same line (a carriage return, a rank tag)
  is ignored; lines without the marker (mllog's own "Failed to encode"
  warnings, prints) are skipped.

A line that holds the marker but no complete JSON record -- a log cut short
while it was written, or damaged -- is a :class:`DataError` naming the file and
the line, never a silently shorter run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from fastcam.errors import DataError

MARKER = ":::MLLOG"
_REQUIRED_FIELDS = ("time_ms", "key")
# Never sniffed when a directory is walked: binary outputs of the runs that sit
# next to their logs (data, checkpoints, plots, tuning databases).
_BINARY_SUFFIXES = {".h5", ".hdf5", ".nc", ".cpt", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".png", ".jpg",
                    ".pdf", ".svg", ".db", ".sqlite", ".sqlite3", ".gz", ".tar", ".zip", ".pkl"}
_SNIFF_CHUNK = 1 << 20


@dataclass(frozen=True)
class LogEvent:
    """One ``:::MLLOG`` record and the 1-based line of the file it came from."""

    key: str
    value: Any
    time_ms: float
    event_type: str
    metadata: dict[str, Any]
    line: int


@dataclass
class RunLog:
    """The records of one run's log, in file order."""

    path: Path
    events: list[LogEvent] = field(default_factory=list)
    # The files this run was read from: one, or several for a resumed run
    # joined by fastcam.compare.join (first segment first).
    parts: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.parts:
            self.parts = [self.path]

    def all(self, key: str) -> list[LogEvent]:
        return [e for e in self.events if e.key == key]

    def first(self, key: str) -> LogEvent | None:
        return next((e for e in self.events if e.key == key), None)

    def value(self, key: str, default: Any = None) -> Any:
        """The value of the first record of ``key`` (hyperparameters are logged once)."""
        event = self.first(key)
        return default if event is None else event.value


def read_log(path: str | os.PathLike[str]) -> RunLog:
    """Parses one log; raises :class:`DataError` for a missing, empty or corrupt one.

    The log must hold exactly one run: one ``run_start`` record (the checker
    rejects a file with two runs, and two runs' epochs cannot be told apart).
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            events = list(_parse_lines(path, handle))
    except OSError as err:
        raise DataError(f"cannot read MLPerf log {path}: {err.strerror or err}") from err
    if not events:
        raise DataError(f"{path} holds no {MARKER} records; not an MLPerf log")
    starts = [e for e in events if e.key == "run_start"]
    if not starts:
        raise DataError(f"{path}: no run_start record (line {events[-1].line} is the last record); "
                        "the run never started or the log is cut short")
    if len(starts) > 1:
        raise DataError(f"{path}, line {starts[1].line}: a second run_start; one log must hold one run")
    return RunLog(path, events)


@dataclass(frozen=True)
class Skipped:
    """A log that could not be used, and why (one line)."""

    path: Path
    reason: str


def read_logs(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[RunLog], list[Skipped]]:
    """Parses every log it can; the others are returned as skipped with the
    reason, so one stub or damaged file never hides the good runs beside it.
    Nothing readable at all is a :class:`DataError` (the first reason when
    only one log was given)."""
    logs: list[RunLog] = []
    skipped: list[Skipped] = []
    for path in paths:
        try:
            logs.append(read_log(path))
        except DataError as err:
            skipped.append(Skipped(Path(path), str(err)))
    if not logs and skipped:
        if len(skipped) == 1:
            raise DataError(skipped[0].reason)
        raise DataError(f"none of the {len(skipped)} logs is usable; first: {skipped[0].reason}")
    return logs, skipped


def _parse_lines(path: Path, lines: Iterable[str]) -> Iterator[LogEvent]:
    decoder = json.JSONDecoder()
    for number, text in enumerate(lines, start=1):
        at = text.find(MARKER)
        if at < 0:
            continue
        body = text[at + len(MARKER):].strip()
        try:
            record, _end = decoder.raw_decode(body)  # raw_decode: trailing text is tolerated
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: corrupt or truncated {MARKER} record "
                            f"({err.msg}): {_excerpt(body)}") from None
        if not isinstance(record, dict) or any(k not in record for k in _REQUIRED_FIELDS):
            raise DataError(f"{path}, line {number}: {MARKER} record lacks "
                            f"{' and '.join(_REQUIRED_FIELDS)}: {_excerpt(body)}")
        time_ms = record["time_ms"]
        if not isinstance(time_ms, (int, float)) or isinstance(time_ms, bool):
            raise DataError(f"{path}, line {number}: time_ms is not a number: {_excerpt(body)}")
        metadata = record.get("metadata")
        yield LogEvent(key=str(record["key"]), value=record.get("value"), time_ms=float(time_ms),
                       event_type=str(record.get("event_type", "")),
                       metadata=metadata if isinstance(metadata, dict) else {}, line=number)


def _excerpt(text: str, limit: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def is_mlperf_log(path: str | os.PathLike[str]) -> bool:
    """Whether a file holds the ``:::MLLOG`` marker anywhere (read in chunks)."""
    marker = MARKER.encode()
    try:
        with open(path, "rb") as handle:
            tail = b""
            while chunk := handle.read(_SNIFF_CHUNK):
                if marker in tail + chunk:
                    return True
                tail = chunk[-len(marker):]
    except OSError:
        return False
    return False


def collect_logs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The log files named by ``paths``: files as given, directories walked.

    A directory contributes every file below it that holds the marker, in
    sorted order; other files (checkpoints, configs, plots, data) are skipped.
    A named file that is not a log, a missing path, or nothing found at all is
    a :class:`DataError`.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            in_dir = [p for p in _walk(path) if p.suffix.lower() not in _BINARY_SUFFIXES and is_mlperf_log(p)]
            if not in_dir:
                raise DataError(f"{path}: no MLPerf logs (files with {MARKER} records) in this directory")
            found += in_dir
        elif path.is_file():
            if not is_mlperf_log(path):
                raise DataError(f"{path} holds no {MARKER} records; not an MLPerf log")
            found.append(path)
        else:
            raise DataError(f"{path} does not exist")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(folder) / n for n in sorted(names) if not n.startswith(".")]
    return files
