"""Count host-device synchronisations in a block of code.

On CUDA: ``torch.cuda.set_sync_debug_mode("warn")`` makes every synchronising
CUDA call (``.item()``, ``.tolist()``, a blocking copy to the host, ``nonzero``
...) emit a UserWarning "called a synchronizing CUDA operation"; we count those
warnings (PyTorch docs: not every synchronising operation is covered yet, e.g.
torch.distributed, so this is a lower bound).

The sync debug mode is CUDA's only (c10/cuda; a ROCm build, whose device type
is also ``cuda``, compiles the same code, not verified on ROCm hardware):
torch has no generic equivalent (torch.accelerator has none, torch.xpu none).
Every other device -- the CPU, XPU -- gets the dispatch-mode proxy instead.

On the CPU nothing synchronises, so the smoke mode counts a proxy with a
TorchDispatchMode: the aten ops whose result or output size the host must
read (``_local_scalar_dense`` behind ``.item()``/``bool()``, ``nonzero``,
``masked_select``, ``unique``). It over-counts what CUDA would do: it cannot
tell host-side state (e.g. torch AdamW's per-parameter step counters, kept on
the CPU on CUDA too) from device values, and ``.tolist()`` of a CPU tensor
does not dispatch. It exists to exercise the counting path, not as a figure.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastcam.accelerator import synchronize

_SYNC_WARNING = "called a synchronizing"  # c10/cuda/CUDAFunctions.cpp warn_or_error_on_sync
_HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}
CUDA_METHOD = "torch.cuda.set_sync_debug_mode('warn') warnings"
CPU_METHOD = ("CPU proxy, not a sync count: aten ops that read a tensor value on the host ("
              + ", ".join(sorted(_HOST_READS)) + "), host-side state included")


class _HostReadCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in _HOST_READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


class SyncCount:
    """``with SyncCount(device) as s: ...`` then ``s.count``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.count = 0
        self.method = CUDA_METHOD if device.type == "cuda" else CPU_METHOD
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "SyncCount":
        if self.device.type == "cuda":  # the CUDA-only sync debug mode (module docstring)
            synchronize(self.device)
            self._caught = self._stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")  # count repeats, not only the first of each call site
            torch.cuda.set_sync_debug_mode("warn")
        else:
            self._mode = self._stack.enter_context(_HostReadCounter())
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            self.count = sum(_SYNC_WARNING in str(w.message) for w in self._caught)
        else:
            self.count = self._mode.count
        self._stack.close()
