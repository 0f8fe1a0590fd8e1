"""Which device a run uses, and the device-generic operations on it (issue 15).

One place knows about device kinds, so the generic paths (trainer, bench,
distributed wire-up, checkpoints, packaging) never call ``torch.cuda`` directly.
fastcam supports CUDA, ROCm (a HIP build of torch: the device type is still
``cuda`` and ``torch.version.hip`` is set), Intel XPU and the CPU.

torch APIs relied on:

* ``torch.accelerator`` (torch >= 2.6): ``is_available``/``current_accelerator``
  name the one accelerator this build was compiled for; ``synchronize``,
  ``reset_peak_memory_stats``, ``max_memory_allocated`` and
  ``set_device_index`` work on it whatever its kind. Missing (older torch) or
  serving another device type, we fall back to the device module.
* the device modules torch.cuda and torch.xpu (same function names): the
  per-kind calls torch.accelerator lacks (name, properties, RNG state).
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from types import ModuleType

import torch

from fastcam.errors import ConfigError

ACCELERATOR_TYPES = ("cuda", "xpu")  # device types fastcam runs on besides cpu (ROCm is "cuda")
_LABELS = {"cuda": "CUDA (or ROCm)", "xpu": "Intel XPU"}


def _accelerator_api() -> ModuleType | None:
    return getattr(torch, "accelerator", None)  # absent before torch 2.6


def _compiled_accelerator() -> torch.device | None:
    """The accelerator torch can use now, or None. Without torch.accelerator,
    probe the device modules fastcam supports."""
    api = _accelerator_api()
    if api is not None:
        return api.current_accelerator() if api.is_available() else None
    return next((torch.device(t) for t in ACCELERATOR_TYPES if device_count(t)), None)


def _api_for(device: torch.device) -> ModuleType | None:
    """torch.accelerator where it serves ``device`` (it serves only the build's own
    accelerator type), else None: the caller then uses the device module."""
    api = _accelerator_api()
    if api is None or device.type == "cpu":
        return None
    current = api.current_accelerator()
    return api if current is not None and current.type == device.type else None


def _function(device: torch.device, name: str, module_name: str | None = None):
    """torch.accelerator's ``name`` where torch.accelerator serves ``device`` and
    has it, else the device module's (torch.cuda / torch.xpu) ``module_name``
    (default: the same name)."""
    api = _api_for(device)
    if api is not None and hasattr(api, name):
        return getattr(api, name)
    return getattr(device_module(device.type), module_name or name)


def device_module(device_type: str) -> ModuleType | None:
    """torch.cuda / torch.xpu, or None where this torch has no such module."""
    return getattr(torch, device_type, None) if device_type in ACCELERATOR_TYPES else None


def device_count(device_type: str) -> int:
    """Visible devices of ``device_type`` (cuda or xpu); 0 where torch has none."""
    module = device_module(device_type)
    return module.device_count() if module is not None and module.is_available() else 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``run.device`` (auto|cpu|cuda|cuda:N|xpu|xpu:N, spelling checked by the
    config) as a torch.device. ``auto``: the accelerator torch reports if it is
    one fastcam supports, else the CPU. A bare ``cuda``/``xpu`` is this rank's
    device: ``local_rank`` modulo the visible devices (the reference's
    get_local_rank: works with all devices visible or one per rank)."""
    if name == "auto":
        found = _compiled_accelerator()
        name = found.type if found is not None and found.type in ACCELERATOR_TYPES else "cpu"
    device_type, _, index = name.partition(":")
    if device_type == "cpu":
        return torch.device("cpu")
    if device_type not in ACCELERATOR_TYPES:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N, xpu or xpu:N, got {name!r}")
    count = device_count(device_type)
    if count == 0:
        raise ConfigError(f"device {name} requested but no {_LABELS[device_type]} device is available "
                          f"to torch {torch.__version__}")
    if not index:
        return torch.device(device_type, local_rank % count)
    if int(index) >= count:
        raise ConfigError(f"device {name} requested but only {count} {device_type} device(s) are visible")
    return torch.device(device_type, int(index))


def is_rocm() -> bool:
    """A HIP (ROCm) build of torch: its ``cuda`` device is an AMD GPU."""
    return bool(getattr(torch.version, "hip", None))


def _type(device: torch.device | str) -> str:
    return device.partition(":")[0] if isinstance(device, str) else device.type


def kind(device: torch.device | str) -> str:
    """"cuda", "rocm", "xpu" or "cpu" (accepts a torch.device or a device type name)."""
    device_type = _type(device)
    if device_type == "cuda":
        return "rocm" if is_rocm() else "cuda"
    if device_type in ("xpu", "cpu"):
        return device_type
    raise ConfigError(f"device type must be 'cuda', 'xpu' or 'cpu', not {device_type!r}")


def distributed_backend(device: torch.device | str) -> str:
    """nccl on CUDA and ROCm (RCCL registers under the nccl name), xccl on XPU
    (torch >= 2.8's oneCCL backend), gloo on the CPU."""
    return {"cuda": "nccl", "rocm": "nccl", "xpu": "xccl", "cpu": "gloo"}[kind(device)]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 / AMX through oneDNN).
    torch has no public query; ``mkldnn._is_mkldnn_bf16_supported`` is what its
    own CPU autocast tests use."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_amp_precision(device: torch.device, native_bf16: bool | None = None) -> str:
    """What ``--precision auto`` computes in: fp16 + GradScaler on NVIDIA CUDA
    (fastest measured there); bf16 on ROCm and XPU (their matrix units run
    bf16 at fp16 speed, and bf16 needs no loss scaling); on a CPU bf16 where it
    is native (1.62x with channels-last at 128x192 on the 2-core AVX-512 BF16
    machine, issue 13), else fp32. ``native_bf16`` overrides the CPU probe."""
    found = kind(device)
    if found == "cuda":
        return "fp16"
    if found in ("rocm", "xpu"):
        return "bf16"
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return "bf16" if native else "fp32"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if device.type == "cpu":
        return
    _function(device, "synchronize")(device)


def reset_peak_memory(device: torch.device) -> None:
    """Restart the device's peak-memory count (the CPU's peak resident set cannot be reset)."""
    if device.type == "cpu":
        return
    _function(device, "reset_peak_memory_stats")(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak memory held by tensors on an accelerator since the last reset; on the
    CPU the process's peak resident set (everything loaded so far), None where
    the platform cannot say."""
    if device.type == "cpu":
        import resource  # POSIX only

        try:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except (OSError, ValueError):
            return None
        return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
    return int(_function(device, "max_memory_allocated")(device))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """The accelerator's marketing name ("NVIDIA H100 80GB HBM3", "AMD Instinct
    MI250X", "Intel(R) Data Center GPU Max 1550"), or "CPU: <model>"."""
    if device.type == "cpu":
        return f"CPU: {cpu_model()}"
    return device_module(device.type).get_device_name(device)


def memory_capacity_bytes(device: torch.device) -> int | None:
    """The accelerator's total memory (device properties), None on the CPU."""
    if device.type == "cpu":
        return None
    return int(device_module(device.type).get_device_properties(device).total_memory)


def pin_memory(device: torch.device) -> bool:
    """Pinned host buffers speed up copies to a real accelerator only; on the CPU
    pinning costs time and memory (and needs an accelerator to exist)."""
    return device.type in ACCELERATOR_TYPES


def set_current(device: torch.device) -> None:
    """Make ``device`` the current one (torch.cuda.set_device / torch.xpu.set_device
    through torch.accelerator.set_device_index); nothing on the CPU."""
    if device.type == "cpu":
        return
    _function(device, "set_device_index", "set_device")(device)


def current_index(device: torch.device) -> int:
    """``device``'s index, or the current device's where it names none (DDP and
    barrier device ids)."""
    if device.index is not None:
        return device.index
    return _function(device, "current_device_index", "current_device")()


def accelerators_per_node(device: torch.device, local_size: int) -> int:
    """The MLPerf ``accelerators_per_node``: one accelerator per local rank, 0 on the CPU."""
    return 0 if device.type == "cpu" else local_size


def software_versions(device: torch.device) -> dict[str, str]:
    """The software a run on ``device`` uses, as strings; keys that do not apply
    are absent. Only what torch and the installed packages say: nothing is
    spawned. On CUDA ``driver`` is the CUDA version the driver supports
    (cuDriverGetVersion, through torch's private ``_cuda_getDriverVersion``): the
    kernel driver's own version (e.g. 550.54) needs nvidia-smi or NVML."""
    import fastcam

    versions = {"fastcam": getattr(fastcam, "__version__", None) or _package_version("fastcam"),
                "python": platform.python_version(), "torch": torch.__version__}
    found = kind(device)
    if found in ("cuda", "rocm"):
        versions.update(_cuda_stack(found == "rocm"))
    elif found == "xpu":
        versions["xpu"] = getattr(torch.version, "xpu", None)
        try:  # _XpuDeviceProperties.driver_version: the GPU driver (SYCL device info)
            versions["xpu_driver"] = torch.xpu.get_device_properties(device).driver_version
        except (AttributeError, RuntimeError, AssertionError):
            pass
    elif torch.backends.mkldnn.is_available():
        versions["onednn"] = _onednn_version()
    if found != "cpu":  # inductor's kernels on a GPU (on the CPU it generates C++); DALI's GPU loader
        versions["triton"] = _installed("triton", "pytorch-triton")
        versions["nvidia-dali"] = _installed("nvidia-dali") if found == "cuda" else None
    return {key: str(value) for key, value in versions.items() if value}


def _cuda_stack(rocm: bool) -> dict[str, object]:
    """cuda/cudnn/nccl/driver, or rocm/miopen/rccl on a HIP build (where
    torch.backends.cudnn is MIOpen and torch.cuda.nccl is RCCL)."""
    out: dict[str, object] = {"rocm": torch.version.hip} if rocm else {"cuda": torch.version.cuda}
    if torch.backends.cudnn.is_available():
        out["miopen" if rocm else "cudnn"] = torch.backends.cudnn.version()
    try:
        nccl = torch.cuda.nccl.version()  # (major, minor, patch[, suffix])
        out["rccl" if rocm else "nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
    except (AttributeError, RuntimeError):  # a build without NCCL
        pass
    driver = getattr(torch._C, "_cuda_getDriverVersion", None)
    if driver is not None and not rocm:  # on HIP the number's encoding differs: left out
        try:
            value = int(driver())
            out["driver"] = f"CUDA {value // 1000}.{value % 1000 // 10}" if value else None
        except RuntimeError:
            pass
    return out


def _onednn_version() -> str | None:
    """oneDNN has no version query in torch's Python API; its build summary
    (torch.__config__.show) names it, e.g. "Intel(R) MKL-DNN v3.12.0"."""
    import re

    found = re.search(r"(?:MKL-DNN|oneDNN)[^\n]*?v(\d+(?:\.\d+)+)", torch.__config__.show())
    return found.group(1) if found else "available"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(*prefixes: str) -> str | None:
    """The version of the first installed distribution named by a prefix: DALI is
    nvidia-dali-cuda120/-cuda130, triton is triton or pytorch-triton-rocm/-xpu."""
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if any(name == p or name.startswith(p + "-") for p in prefixes):
            return dist.version
    return None
