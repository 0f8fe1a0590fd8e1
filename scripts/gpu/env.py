"""GPU check part ``env``: what the machine is and whether triton can compile.

Records the GPU (name, memory, compute capability, driver), the versions of
Python, torch, CUDA, cuDNN, NCCL and triton, the TF32 switches (they decide
the fp32 baseline's speed), which optional packages import (the GPU machine
has no optuna, mlperf-logging or pytest), and whether a trivial triton kernel
compiles and computes the right result.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess

from report import Report, Settings, error_line, main, say

OPTIONAL = ("triton", "optuna", "mlperf_logging", "pytest", "nvidia.dali", "h5py", "scipy", "matplotlib", "tqdm",
            "yaml")


def run(report: Report, settings: Settings) -> None:
    import torch

    report.record("host", python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
                  memory_gb=_memory_gb(), work_disk_free_gb=_disk_free_gb(settings), torch=torch.__version__,
                  importable={name: _importable(name) for name in OPTIONAL})
    report.attempt("gpu", lambda: _gpu(report, torch))
    report.attempt("triton", lambda: _triton(report, torch, settings))


def _gpu(report: Report, torch) -> None:
    available = torch.cuda.is_available()
    fields = {"cuda_available": available, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
              "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if available:
        props = torch.cuda.get_device_properties(0)
        fields.update(name=props.name, memory_gb=props.total_memory / 1e9,
                      capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                      device_count=torch.cuda.device_count(), nccl=_nccl(torch), driver=_driver())
    report.record("gpu", **fields)
    say(f"gpu: {fields.get('name', 'none')}, torch {torch.__version__}, CUDA {fields['cuda']}")
    if report.settings.device == "cuda" and not available:
        raise RuntimeError("CUDA is not available; FASTCAM_CHECK_DEVICE=cpu runs the CPU smoke mode")


def _triton(report: Report, torch, settings: Settings) -> None:
    if not _importable("triton"):
        report.record("triton", version=None, kernel="skipped: triton is not importable")
        say("triton: not importable, kernel check skipped")
        return
    if settings.device == "cuda" and not torch.cuda.is_available():
        report.record("triton", kernel="skipped: no CUDA device")  # the gpu entry says so
        return
    import triton
    import triton.language as tl

    @triton.jit
    def add_one(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + 1.0, mask=mask)

    report.record("triton", version=triton.__version__, interpreter=os.environ.get("TRITON_INTERPRET") == "1")
    x = torch.arange(1000, dtype=torch.float32, device=settings.device)
    out = torch.empty_like(x)
    add_one[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)
    ok = bool(torch.equal(out, x + 1))
    report.record("triton", kernel="ok" if ok else "wrong result")
    say(f"triton {triton.__version__}: trivial kernel {'ok' if ok else 'WRONG RESULT'}")
    if not ok:
        raise RuntimeError("the trivial triton kernel computed a wrong result")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError) as err:  # a parent package missing or blocked
        say(f"{name}: not importable ({error_line(err)})")
        return False


def _nccl(torch):
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 -- a build without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else version


def _driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=20, check=False)
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError):
        return None


def _disk_free_gb(settings: Settings) -> float:
    settings.work.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(settings.work).free / 1e9


if __name__ == "__main__":
    main("env", run, needs_device=False)
