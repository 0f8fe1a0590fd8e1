"""fastcam.accelerator (issue 15): device choice and device-generic operations.

Only a CPU is here, so the CUDA, ROCm and XPU paths run with the device choice
faked: torch.accelerator, torch.cuda / torch.xpu availability and counts,
torch.version.hip, and the per-device calls, recorded instead of executed."""

from __future__ import annotations

import platform

import pytest
import torch

import fastcam
from fastcam import accelerator as acc
from fastcam import distributed as fd
from fastcam.config import optimized
from fastcam.distributed import DistContext
from fastcam.errors import ConfigError
from fastcam.hostsync import CPU_METHOD, SyncCount
from fastcam.train import checkpoint, execution

CPU, CUDA0, CUDA1, XPU0 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1), torch.device("xpu", 0)


def fake(monkeypatch, device_type: str | None, count: int = 0, hip: str | None = None) -> None:
    """Make torch report ``count`` devices of ``device_type`` (None: no accelerator)."""
    current = torch.device(device_type) if device_type else None
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: current is not None)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: current)
    for name in acc.ACCELERATOR_TYPES:
        n = count if name == device_type else 0
        monkeypatch.setattr(getattr(torch, name), "is_available", lambda n=n: n > 0)
        monkeypatch.setattr(getattr(torch, name), "device_count", lambda n=n: n)
    monkeypatch.setattr(torch.version, "hip", hip)


def record(monkeypatch, owner, name: str, result=None) -> list:
    calls: list = []
    monkeypatch.setattr(owner, name, lambda *args, **kwargs: calls.append(args) or result, raising=False)
    return calls


@pytest.mark.skipif(torch.accelerator.is_available(), reason="checks auto on a machine without an accelerator")
def test_auto_is_the_cpu_on_this_machine():
    assert acc.resolve_device("auto") == CPU and acc.resolve_device("cpu", local_rank=3) == CPU


def test_auto_picks_the_faked_cuda_or_xpu_and_bare_names_follow_the_local_rank(monkeypatch):
    fake(monkeypatch, "cuda", count=4)
    assert acc.resolve_device("auto", local_rank=5) == CUDA1  # 5 % 4 visible devices
    assert acc.resolve_device("cuda:3") == torch.device("cuda", 3)
    with pytest.raises(ConfigError, match="cuda:4 requested but only 4 cuda"):
        acc.resolve_device("cuda:4")
    fake(monkeypatch, "xpu", count=2)
    assert acc.resolve_device("auto", local_rank=3) == torch.device("xpu", 1)
    assert acc.resolve_device("xpu") == XPU0


def test_auto_falls_back_to_the_cpu_for_an_unsupported_accelerator_or_an_old_torch(monkeypatch):
    fake(monkeypatch, "mps", count=0)
    assert acc.resolve_device("auto") == CPU
    fake(monkeypatch, "cuda", count=2)
    monkeypatch.delattr(torch, "accelerator")  # torch < 2.6: probe torch.cuda / torch.xpu
    assert acc.resolve_device("auto", local_rank=1) == CUDA1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert acc.resolve_device("auto") == CPU


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "xpu"])
def test_an_unavailable_device_is_one_config_error(monkeypatch, name):
    fake(monkeypatch, None)
    with pytest.raises(ConfigError) as err:
        acc.resolve_device(name)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"device {name} requested but no ")
    with pytest.raises(ConfigError, match="requested but no"):
        fd.init_distributed("single", name.partition(":")[0])  # the wire-up refuses it alike


def test_kind_and_backend_per_device(monkeypatch):
    fake(monkeypatch, None)
    assert [(acc.kind(d), acc.distributed_backend(d)) for d in (CPU, CUDA0, XPU0)] == [
        ("cpu", "gloo"), ("cuda", "nccl"), ("xpu", "xccl")]
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    assert acc.is_rocm() and acc.kind(CUDA0) == "rocm" and acc.distributed_backend(CUDA0) == "nccl"
    assert fd.select_backend("xpu") == "xccl" and fd.select_backend("cuda") == "nccl"
    with pytest.raises(ConfigError, match="device type must be 'cuda', 'xpu' or 'cpu', not 'tpu'"):
        acc.distributed_backend("tpu")


def test_amp_defaults_per_kind(monkeypatch):
    fake(monkeypatch, None)
    assert acc.default_amp_precision(CUDA0) == "fp16"
    assert acc.default_amp_precision(XPU0) == "bf16"
    assert acc.default_amp_precision(CPU, native_bf16=True) == "bf16"
    assert acc.default_amp_precision(CPU, native_bf16=False) == "fp32"
    monkeypatch.setattr(acc, "cpu_has_native_bf16", lambda: False)
    assert acc.default_amp_precision(CPU) == "fp32"
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert acc.default_amp_precision(CUDA0) == "bf16"
    # The execution follows: bf16 on ROCm needs no GradScaler; fp16 on NVIDIA does.
    ex = execution.resolve_execution(optimized(), CUDA0)
    assert ex.autocast_dtype is torch.bfloat16 and not ex.grad_scaler and ex.compile
    monkeypatch.setattr(torch.version, "hip", None)
    ex = execution.resolve_execution(optimized(), CUDA0)
    assert ex.autocast_dtype is torch.float16 and ex.grad_scaler
    assert execution.auto_precision(XPU0) == "bf16"


def test_software_versions_on_this_cpu():
    versions = acc.software_versions(CPU)
    assert versions["fastcam"] == fastcam.__version__ and versions["torch"] == torch.__version__
    assert versions["python"] == platform.python_version()
    assert not {"cuda", "rocm", "cudnn", "miopen", "nccl", "rccl", "driver", "nvidia-dali"} & set(versions)
    assert all(isinstance(v, str) and v for v in versions.values())


def test_software_versions_on_faked_cuda_and_rocm(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 21, 5))
    monkeypatch.setattr(torch._C, "_cuda_getDriverVersion", lambda: 12040, raising=False)
    versions = acc.software_versions(CUDA0)
    assert {k: versions[k] for k in ("cuda", "cudnn", "nccl", "driver")} == {
        "cuda": "12.4", "cudnn": "90100", "nccl": "2.21.5", "driver": "CUDA 12.4"}
    assert "rocm" not in versions and "onednn" not in versions
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    versions = acc.software_versions(CUDA0)
    assert versions["rocm"] == "6.2.41133" and versions["miopen"] == "90100" and versions["rccl"] == "2.21.5"
    assert not {"cuda", "cudnn", "nccl", "driver"} & set(versions)


def test_pin_memory_and_accelerators_per_node():
    assert not acc.pin_memory(CPU) and acc.pin_memory(CUDA0) and acc.pin_memory(XPU0)
    assert acc.accelerators_per_node(CPU, 4) == 0 and acc.accelerators_per_node(CUDA0, 4) == 4


def test_cpu_operations_touch_no_device_and_report_the_resident_set(monkeypatch):
    for name in ("synchronize", "reset_peak_memory_stats", "set_device_index"):
        monkeypatch.setattr(torch.accelerator, name, lambda *a, name=name: pytest.fail(f"{name} called for the CPU"))
    acc.synchronize(CPU), acc.reset_peak_memory(CPU), acc.set_current(CPU)
    peak = acc.peak_memory_bytes(CPU)
    assert isinstance(peak, int) and peak > 10**6  # this process holds torch: well over a megabyte
    assert acc.device_name(CPU) == f"CPU: {acc.cpu_model()}"


def test_accelerator_operations_go_through_torch_accelerator(monkeypatch):
    fake(monkeypatch, "cuda", count=2)
    synced = record(monkeypatch, torch.accelerator, "synchronize")
    reset = record(monkeypatch, torch.accelerator, "reset_peak_memory_stats")
    current = record(monkeypatch, torch.accelerator, "set_device_index")
    record(monkeypatch, torch.accelerator, "max_memory_allocated", result=123)
    acc.synchronize(CUDA1), acc.reset_peak_memory(CUDA1), acc.set_current(CUDA1)
    assert synced == reset == current == [(CUDA1,)] and acc.peak_memory_bytes(CUDA1) == 123


def test_other_device_types_fall_back_to_their_module(monkeypatch):
    fake(monkeypatch, "cuda", count=1)  # torch.accelerator serves cuda; an xpu device goes to torch.xpu
    synced = record(monkeypatch, torch.xpu, "synchronize")
    current = record(monkeypatch, torch.xpu, "set_device")
    record(monkeypatch, torch.xpu, "get_device_name", result="Intel(R) Data Center GPU Max 1550")
    acc.synchronize(XPU0), acc.set_current(XPU0)
    assert synced == current == [(XPU0,)]
    ctx = DistContext(0, 2, 0, 2, 1, "xccl", "env")
    assert fd.describe_platform(ctx, XPU0) == "1 node x 2 Intel(R) Data Center GPU Max 1550"


def test_single_process_wire_up_on_a_faked_accelerator_sets_the_current_device(monkeypatch):
    fake(monkeypatch, "xpu", count=2)
    current = record(monkeypatch, torch.accelerator, "set_device_index")
    ctx = fd.init_distributed("single", "xpu")
    assert current == [(XPU0,)] and ctx.backend is None and ctx.world_size == 1


def test_rng_state_keeps_each_accelerator_under_its_device_type(monkeypatch):
    fake(monkeypatch, "xpu", count=1)
    monkeypatch.setattr(torch.xpu, "is_initialized", lambda: True)
    xpu_state = torch.arange(8, dtype=torch.uint8)
    record(monkeypatch, torch.xpu, "get_rng_state", result=xpu_state)
    restored = record(monkeypatch, torch.xpu, "set_rng_state")
    state = checkpoint.rng_state()
    assert "cuda" not in state and torch.equal(state["xpu"], xpu_state)
    checkpoint.set_rng_state(state)
    assert len(restored) == 1 and torch.equal(restored[0][0], xpu_state)
    # A checkpoint written on CUDA (key "cuda", possibly a per-device list) restores on a CUDA machine.
    fake(monkeypatch, "cuda", count=1)
    cuda_restored = record(monkeypatch, torch.cuda, "set_rng_state")
    checkpoint.set_rng_state({**state, "cuda": [xpu_state, torch.zeros(8, dtype=torch.uint8)]})
    assert len(cuda_restored) == 1 and torch.equal(cuda_restored[0][0], xpu_state)
    assert len(restored) == 1  # no XPU on this faked machine: its state is left alone


def test_sync_count_on_a_non_cuda_accelerator_uses_the_dispatch_proxy():
    with SyncCount(XPU0) as sync:
        torch.ones(3).sum().item()
    assert sync.method == CPU_METHOD and sync.count == 1
