"""Writing files so that a crash never leaves a half-written one in place.

A write goes to a temp file beside its target, named
``.<name>.<host>.<pid>.<random>.fastcam-tmp``, is fsynced and renamed over the target.
A process killed mid-write (SIGKILL, out of memory) leaves its temp file
behind -- a checkpoint's is as large as the checkpoint (issue 17, defect 5):
:func:`remove_stale_temps` deletes those whose writer is no longer alive on
this host, and the next run calls it on its output directory. A temp file of
another host (a shared file system) is left alone: its writer may be alive.
A write that fails for want of space or permission raises one
:class:`~fastcam.errors.WriteError` naming the file and the cause.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from pathlib import Path
from typing import IO, Callable

from fastcam.errors import WriteError

TEMP_SUFFIX = ".fastcam-tmp"


def temp_name(path: Path) -> Path:
    """The temp file of this process for ``path`` (host and pid identify the writer)."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = os_error_in(err)
        if cause is not None:
            raise WriteError(describe_write_failure(path, cause)) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind ``err``, if any. torch.save reports a failed write as
    ``RuntimeError: ... unexpected pos`` raised while handling the OSError
    (``[Errno 28] No space left on device``) that caused it: follow the chain."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_write_failure(path: str | os.PathLike, err: OSError) -> str:
    """``cannot write PATH: disk full (...)`` -- the one line for a failed write."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "disk full" if err.errno == errno.ENOSPC else "disk quota exceeded"
        return f"cannot write {path}: {reason} ({_free(Path(path))} free); free some space and run again"
    return f"cannot write {path}: {err.strerror or err}"


def _free(path: Path) -> str:
    import shutil

    for candidate in (path.parent, *path.parents):
        try:
            free = shutil.disk_usage(candidate).free
        except OSError:
            continue
        return f"{free / 1e6:.1f} MB" if free >= 1e5 else f"{free} bytes"
    return "unknown space"


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files in ``directory`` left by killed writers on this host; returns them."""
    directory = Path(directory)
    removed = []
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)]
    except OSError:  # no directory yet: nothing to clean
        return removed
    host = _host()
    for path in candidates:
        parts = path.name[:-len(TEMP_SUFFIX)].rsplit(".", 3)  # .<name>, host, pid, random
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit() or _alive(int(parts[2])):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _host() -> str:
    # Dots separate the name's fields: keep the host name's first label only.
    return socket.gethostname().split(".")[0] or "localhost"


def read_yaml(path: str | os.PathLike, what: str):
    """The data of a YAML file (``yaml.safe_load``: no code runs), or one
    ConfigError naming ``path`` and ``what`` it is for a missing, binary or
    malformed file."""
    import yaml

    from fastcam.errors import ConfigError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML {what}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
