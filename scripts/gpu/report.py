"""Settings and the incremental JSON report shared by the GPU check's parts.

Every part of ``scripts/gpu_check.sh`` is one process that may be killed at any
moment (its ``timeout``, the machine's command limit, a compiler crash), so a
part rewrites ``$OUT/<part>.json`` atomically after each measurement: whatever
was measured before the kill is on disk. Knobs (environment, set by the shell
script or by hand):

- ``FASTCAM_CHECK_DEVICE``: ``cuda`` (default, full size) or ``cpu`` (the smoke
  mode: every part at a tiny size, so the script is tested in CI);
- ``OUT`` (results, default ``$PWD/gpu-out``), ``FASTCAM_CHECK_WORK`` (data,
  staged caches, logs; default ``/tmp/fastcam-gpu-check``);
- ``FASTCAM_CHECK_FAIL``: comma list of ``part[:kill|hang|raise]`` that make a
  part fail right after its first measurement is written (SIGKILL itself, sleep
  until its timeout, or raise), to test that the other parts and the written
  figures survive.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import tree  # noqa: F401  (first: resolves fastcam's mapped packages from the working tree)

from fastcam.files import atomic_write_text

DEVICES = ("cuda", "cpu")
FAIL_MODES = ("kill", "hang", "raise")


@dataclass(frozen=True)
class Size:
    """What every part measures at; full size is the benchmark's (shared/spec/benchmark.md)."""

    height: int
    width: int
    batch: int  # local batch size
    warmup: int  # untimed steps before a timed measurement
    steps: int  # timed steps
    train_samples: int  # synthetic data set for the loader and epoch parts
    validation_samples: int
    workers: int  # loader threads/processes and staging workers
    epochs: int  # training epochs of the epoch part


FULL = Size(768, 1152, 8, warmup=3, steps=10, train_samples=64, validation_samples=32, workers=8,
            epochs=2)
# Small enough that all six parts finish in about two minutes on a 2-core CPU.
SMOKE = Size(64, 96, 2, warmup=1, steps=2, train_samples=4, validation_samples=2, workers=1,
             epochs=1)


@dataclass(frozen=True)
class Settings:
    part: str
    device: str
    size: Size
    out: Path
    work: Path
    fail: str | None  # how this part is told to fail, if at all

    @property
    def smoke(self) -> bool:
        return self.device == "cpu"

    @classmethod
    def from_env(cls, part: str) -> "Settings":
        device = os.environ.get("FASTCAM_CHECK_DEVICE", "cuda")
        if device not in DEVICES:
            raise SystemExit(f"FASTCAM_CHECK_DEVICE must be one of {', '.join(DEVICES)}, got {device!r}")
        out = Path(os.environ.get("OUT") or Path.cwd() / "gpu-out")
        work = Path(os.environ.get("FASTCAM_CHECK_WORK") or "/tmp/fastcam-gpu-check")
        return cls(part, device, SMOKE if device == "cpu" else FULL, out, work, _fail_mode(part))


def _fail_mode(part: str) -> str | None:
    for entry in filter(None, os.environ.get("FASTCAM_CHECK_FAIL", "").split(",")):
        name, _, mode = entry.strip().partition(":")
        mode = mode or "kill"
        if mode not in FAIL_MODES:
            raise SystemExit(f"FASTCAM_CHECK_FAIL: {entry!r}: the mode must be one of {', '.join(FAIL_MODES)}")
        if name == part:
            return mode
    return None


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def say(message: str) -> None:
    """One progress line on the part's output (the shell script shows and logs it)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def error_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class Report:
    """``$OUT/<part>.json``: ``status`` (running, ok, failed), ``results`` (the
    figures, nested by measurement) and ``errors`` (one line per measurement
    that failed), rewritten atomically on every change."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = settings.out / f"{settings.part}.json"
        self._measured = False
        self.data: dict[str, Any] = {
            "part": settings.part, "status": "running", "device": settings.device, "smoke": settings.smoke,
            "size": asdict(settings.size), "started": now(), "updated": now(), "results": {}, "errors": {}}
        self.write()

    def write(self) -> None:
        self.data["updated"] = now()
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=_jsonable) + "\n")

    def set_info(self, **fields: Any) -> None:
        """Context that is not a measurement (versions, chosen switches)."""
        self.data.update(fields)
        self.write()

    def record(self, key: str, **fields: Any) -> None:
        """Merge ``fields`` into ``results[key]`` and write the file now."""
        self.data["results"].setdefault(key, {}).update(fields)
        self.write()
        if not self._measured:
            self._measured = True
            self._maybe_fail()

    def attempt(self, key: str, measure: Callable[[], Any]) -> Any:
        """Run one measurement; an exception is recorded under ``errors[key]``
        (and its traceback goes to the log), and the part carries on."""
        try:
            return measure()
        except Exception as err:  # noqa: BLE001 -- one failing measurement must not lose the others
            traceback.print_exc()
            self.data["errors"][key] = error_line(err)
            self.write()
            say(f"{key}: FAILED ({error_line(err)})")
            return None

    def finish(self) -> int:
        self.data["status"] = "failed" if self.data["errors"] else "ok"
        self.write()
        return 1 if self.data["errors"] else 0

    def _maybe_fail(self) -> None:
        mode = self.settings.fail
        if mode is None:
            return
        say(f"FASTCAM_CHECK_FAIL: {self.settings.part} fails now ({mode})")
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif mode == "hang":
            time.sleep(24 * 3600)  # until the shell script's timeout kills this part
        raise RuntimeError(f"forced failure of {self.settings.part} (FASTCAM_CHECK_FAIL)")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def main(part: str, body: Callable[[Report, Settings], None], needs_device: bool = True) -> None:
    """Run ``body`` as the part named ``part``: exit 0 when every measurement
    succeeded, 1 when one failed (its error is in the JSON). A part that
    ``needs_device`` fails at once, with one error line, when the device is
    missing, rather than after minutes of preparation."""
    settings = Settings.from_env(part)
    if settings.smoke:
        # No GPU: triton kernels can only run in triton's interpreter, as the kernel tests run them;
        # it must be set before triton is first imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    report = Report(settings)
    say(f"{part}: device {settings.device}, {settings.size.height}x{settings.size.width}, "
        f"batch {settings.size.batch}; writing {report.path}")

    def run_part() -> None:
        if needs_device:
            _check_device(settings)
        body(report, settings)

    report.attempt(part, run_part)
    rc = report.finish()
    say(f"{part}: {report.data['status']}")
    sys.exit(rc)


def _check_device(settings: Settings) -> None:
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available; FASTCAM_CHECK_DEVICE=cpu runs the CPU smoke mode")
