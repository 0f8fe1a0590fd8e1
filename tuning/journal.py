"""Repair of a tuning journal whose last record was cut (issue 17, defect 8).

Optuna's journal file holds one JSON record per line, each appended in one
write under the journal's lock. A worker killed mid-write (SIGKILL, a full
disk) leaves a last line without its newline: optuna skips it on reading, but
the next append lands on the same line, and from then on every run fails
with "not an optuna journal file". Before the storage opens, under the same
lock (``JournalFileSymlinkLock``, the backend's default), :func:`repair_tail`
cuts such a line off and keeps it beside the journal
(``<journal>.cut-<time>``); the finished trials are all in earlier, complete
lines. A damaged line anywhere else cannot be repaired without guessing:
that is one ConfigError saying how to recover.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from fastcam.errors import ConfigError


def repair_tail(path: Path, echo: Callable[[str], None] = print) -> Path | None:
    """Cut a partial last record off ``path``; returns where it was kept (None: nothing to repair)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        kept = None
        if not data.endswith(b"\n"):
            cut_at = data.rfind(b"\n") + 1
            tail = data[cut_at:]
            kept = path.with_name(f"{path.name}.cut-{time.strftime('%Y%m%d-%H%M%S')}")
            kept.write_bytes(tail)
            with open(path, "r+b") as f:
                f.truncate(cut_at)
                f.flush()
                os.fsync(f.fileno())
            data = data[:cut_at]
            echo(f"{path}: its last record was cut ({len(tail)} bytes, a write was interrupted); "
                 f"removed it and kept it as {kept}")
        _check_records(path, data)
        return kept
    finally:
        lock.release()


def _check_records(path: Path, data: bytes) -> None:
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            json.loads(line)
        except ValueError:
            raise ConfigError(
                f"{path}: line {number} is not a journal record (damaged by an interrupted write); the "
                f"{number - 1} records before it are intact: keep them (head -n {number - 1}) in a new file "
                "and pass it to --storage, or start a new --study_name") from None
