"""Rank wire-up and the distributed helpers the training loop uses.

The launch scripts of the MLCommons reference (deepcam ``utils/comm.py``) wire
ranks up from launcher environment variables: ``nccl-slurm`` (SLURM_PROCID,
SLURM_NTASKS, SLURM_LAUNCH_NODE_IPADDR, port 29500), ``nccl-slurm-pmi``
(PMI_RANK), ``nccl-openmpi`` (OMPI_COMM_WORLD_*) and ``mpi``. fastcam keeps
those names and semantics, adds torchrun's variables (``env``) and detection
(``auto``), and fixes the known problems: it never reads PMIX_RANK (not always
set under Slurm), never wraps a single process in DDP, never gives DDP device
ids on CPU, and uses gloo whenever it runs on CPU whatever the method is called.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from fastcam import accelerator
from fastcam.accelerator import cpu_model  # noqa: F401 -- moved there; still importable from here
from fastcam.errors import ConfigError

DEFAULT_MASTER_PORT = 29500  # the reference's (and torch's) default
METHODS = ("auto", "nccl-slurm", "nccl-slurm-pmi", "nccl-openmpi", "mpi", "env", "local", "single")
DDP_BUCKET_CAP_MB = 25
DDP_BUCKET_CAP_MB_BN_GROUPS = 220  # the reference's value when batchnorm groups > 1


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job; ``backend`` is None when no process group exists."""

    rank: int
    world_size: int
    local_rank: int
    local_size: int
    num_nodes: int
    backend: str | None
    method: str
    # A gloo group with a long timeout for waits that may legitimately take
    # long (staging); everything else uses the default group's timeout.
    wait_group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class _Wiring:
    """What the launcher says about this process (before any process group exists)."""

    rank: int
    world_size: int
    local_rank: int | None
    local_size: int | None
    master_addr: str | None
    master_port: int


def detect_method(environ: Mapping[str, str] | None = None) -> str:
    """The wire-up method ``auto`` resolves to for this environment."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return "env"
    if "PMI_RANK" in env and ("SLURM_NTASKS" in env or "SLURM_JOB_ID" in env):
        return "nccl-slurm-pmi"
    # SLURM_STEP_NUM_TASKS exists only inside an srun step. The batch script
    # itself also has SLURM_PROCID=0 and SLURM_NTASKS=N (checked on Slurm
    # 22.05), and treating it as rank 0 of N would wait forever for the others.
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SLURM_STEP_NUM_TASKS" in env:
        return "nccl-slurm"
    if "OMPI_COMM_WORLD_RANK" in env:
        return "nccl-openmpi"
    return "single"


def select_backend(device_type: str) -> str:
    """The backend follows the device, whatever the wire-up method is called:
    nccl on CUDA and ROCm, xccl on XPU, gloo on CPU (fastcam.accelerator.distributed_backend)."""
    return accelerator.distributed_backend(device_type)


def _require(env: Mapping[str, str], name: str, method: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"distributed method {method!r} needs the environment variable {name}, which is not set")
    return value


def _int_var(env: Mapping[str, str], name: str, method: str) -> int:
    value = _require(env, name, method)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (method {method!r})") from None


def _first_int(env: Mapping[str, str], names: tuple[str, ...], method: str) -> int | None:
    """The first of ``names`` that is set, as an integer (None when none is set)."""
    for name in names:
        if env.get(name, "").strip():
            if name == "SLURM_TASKS_PER_NODE":
                return _tasks_per_node(env[name])
            return _int_var(env, name, method)
    return None


def _tasks_per_node(value: str) -> int:
    """First count of Slurm's compressed SLURM_TASKS_PER_NODE, e.g. '4(x2),3' -> 4."""
    match = re.match(r"\s*(\d+)", value)
    if match is None:
        raise ConfigError(f"environment variable SLURM_TASKS_PER_NODE={value!r} is not a Slurm task count")
    return int(match.group(1))


_LOCAL_SIZE_VARS = ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE")


def _local_size_vars(method: str) -> tuple[str, ...]:
    """The launcher's own variable first: torchrun inside a Slurm job sees Slurm's per-node count too."""
    own = {"env": "LOCAL_WORLD_SIZE", "nccl-openmpi": "OMPI_COMM_WORLD_LOCAL_SIZE"}.get(method)
    return ((own,) if own else ()) + tuple(name for name in _LOCAL_SIZE_VARS if name != own)


def _master_port(env: Mapping[str, str], master_port: int | None, method: str) -> int:
    if master_port is not None:
        return master_port
    if env.get("MASTER_PORT", "").strip():
        return _int_var(env, "MASTER_PORT", method)
    return DEFAULT_MASTER_PORT


def _openmpi_master(env: Mapping[str, str]) -> str:
    if env.get("MASTER_ADDR", "").strip():
        return env["MASTER_ADDR"].strip()
    # The reference takes the host of the PMIx server URI ("pmix-server.1234;tcp4://10.0.0.1:5678").
    uri = env.get("PMIX_SERVER_URI2", "")
    if "//" in uri:
        return uri.split("//", 1)[1].split(":", 1)[0]
    return _require(env, "MASTER_ADDR", "nccl-openmpi")


def _wiring_from_env(method: str, env: Mapping[str, str], master_port: int | None) -> _Wiring:
    if method == "nccl-slurm":
        rank, size = _int_var(env, "SLURM_PROCID", method), _int_var(env, "SLURM_NTASKS", method)
        local_rank = _first_int(env, ("SLURM_LOCALID",), method)
    elif method == "nccl-slurm-pmi":
        rank = _int_var(env, "PMI_RANK", method)
        size = _first_int(env, ("PMI_SIZE", "SLURM_NTASKS"), method)
        if size is None:
            _require(env, "PMI_SIZE", method)  # raises, naming the variable
        local_rank = _first_int(env, ("SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"), method)
    elif method == "nccl-openmpi":
        rank, size = _int_var(env, "OMPI_COMM_WORLD_RANK", method), _int_var(env, "OMPI_COMM_WORLD_SIZE", method)
        local_rank = _first_int(env, ("OMPI_COMM_WORLD_LOCAL_RANK",), method)
    elif method == "env":
        rank, size = _int_var(env, "RANK", method), _int_var(env, "WORLD_SIZE", method)
        local_rank = _first_int(env, ("LOCAL_RANK",), method)
    else:
        raise ConfigError(f"unknown distributed method {method!r}; choose one of {', '.join(METHODS)}")
    assert size is not None
    addr = None
    if size > 1:  # a one-task job needs no rendezvous
        if method in ("nccl-slurm", "nccl-slurm-pmi"):
            addr = _require(env, "SLURM_LAUNCH_NODE_IPADDR", method)
        elif method == "nccl-openmpi":
            addr = _openmpi_master(env)
        else:
            addr = _require(env, "MASTER_ADDR", method)
            _require(env, "MASTER_PORT", method)
    local_size = _first_int(env, _local_size_vars(method), method)
    return _Wiring(rank, size, local_rank, local_size, addr, _master_port(env, master_port, method))


def _wiring_from_mpi(master_port: int | None) -> _Wiring:
    try:
        from mpi4py import MPI  # optional: only the 'mpi' method needs it
    except ImportError:
        raise ConfigError("distributed method 'mpi' needs the mpi4py package (pip install mpi4py)") from None
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED)
    # Rank 0 hosts torch's rendezvous store, so everyone connects to its host.
    own_addr = os.environ.get("MASTER_ADDR", "").strip() or socket.gethostname()
    addr = comm.bcast(own_addr if rank == 0 else None, root=0)
    port = comm.bcast(_master_port(os.environ, master_port, "mpi") if rank == 0 else None, root=0)
    return _Wiring(rank, size, node_comm.Get_rank(), node_comm.Get_size(), addr, port)


def _tcp_url(addr: str, port: int) -> str:
    host = f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr  # IPv6 literal
    return f"tcp://{host}:{port}"


def init_distributed(
    method: str = "auto",
    device_type: str = "cpu",
    master_port: int | None = None,
    timeout: timedelta | None = None,
    wait_timeout: timedelta | None = None,
) -> DistContext:
    """Wire this process up; creates the default process group when world size > 1.

    ``timeout`` is the default group's (every collective of the run); with
    ``wait_timeout``, a second (gloo) group with that timeout serves
    :func:`barrier`'s ``long_wait``, so a short collective timeout still lets
    a rank wait hours for the others' staging. ``master_port`` overrides MASTER_PORT (default 29500) except for ``env``,
    where torchrun owns the rendezvous store. On an accelerator the current device
    is set to the local rank (modulo visible devices) before the group exists.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown distributed method {method!r}; choose one of {', '.join(METHODS)}")
    backend = select_backend(device_type)
    resolved = detect_method() if method == "auto" else method
    if resolved in ("local", "single"):
        wiring = _Wiring(0, 1, 0, 1, None, DEFAULT_MASTER_PORT)
    elif resolved == "mpi":
        wiring = _wiring_from_mpi(master_port)
    else:
        wiring = _wiring_from_env(resolved, os.environ, master_port)
    if wiring.world_size < 1 or not 0 <= wiring.rank < wiring.world_size:
        raise ConfigError(
            f"method {resolved!r} gave rank {wiring.rank} for world size {wiring.world_size}; "
            "the rank must lie in [0, world size)"
        )
    local_size = min(max(wiring.local_size or wiring.world_size, 1), wiring.world_size)
    local_rank = wiring.local_rank if wiring.local_rank is not None else wiring.rank % local_size
    device = None
    if device_type != "cpu":
        # As the reference's get_local_rank: works with all GPUs visible or one per rank
        # (resolve_device raises the one-line ConfigError where none is available).
        device = accelerator.resolve_device(device_type, local_rank)
        accelerator.set_current(device)
    if wiring.world_size > 1:
        init_method = "env://" if resolved == "env" else _tcp_url(wiring.master_addr or "", wiring.master_port)
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            dist.init_process_group(
                backend=backend, init_method=init_method, rank=wiring.rank, world_size=wiring.world_size, **kwargs
            )
        except (RuntimeError, ValueError, TimeoutError, OSError) as err:  # DistNetworkError/DistStoreError too
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"wire-up {resolved!r} failed: rank {wiring.rank} of {wiring.world_size} could not "
                              f"join the process group at {init_method} ({first})") from None
        # barrier's device_ids pick the device of its one-element all-reduce (not for gloo).
        barrier_ids = [accelerator.current_index(device)] if device is not None else None
        dist.barrier(device_ids=barrier_ids)  # the reference's barrier: all ranks are up before anything else
    wait_group = None
    if wiring.world_size > 1 and wait_timeout is not None:
        wait_group = dist.new_group(backend="gloo", timeout=wait_timeout)  # every rank, same order
    return DistContext(
        rank=wiring.rank,
        world_size=wiring.world_size,
        local_rank=local_rank,
        local_size=local_size,
        num_nodes=-(-wiring.world_size // local_size),  # ceil: a last, partly filled node still counts
        backend=backend if wiring.world_size > 1 else None,
        method=resolved,
        wait_group=wait_group,
    )


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group, if this run created one."""
    if ctx.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext, long_wait: bool = False) -> None:
    """All ranks meet. ``long_wait``: a wait that may last hours (the slowest
    rank's staging), on the wait group when there is one."""
    if not ctx.is_distributed:
        return
    if long_wait and ctx.wait_group is not None:
        dist.barrier(group=ctx.wait_group)
    else:
        dist.barrier(device_ids=_barrier_ids(ctx.backend))


def _barrier_ids(backend: str | None) -> list[int] | None:
    """This rank's current device for a barrier on a device backend (nccl, xccl)."""
    if backend in (None, "gloo"):
        return None
    device_type = "xpu" if backend == "xccl" else "cuda"
    return [accelerator.current_index(torch.device(device_type))]


def is_timeout(err: BaseException) -> bool:
    """Whether ``err`` is a collective that timed out (gloo: "Timed out waiting
    ...ms"; torch's DistTimeoutError where the backend raises it)."""
    timeout_type = getattr(dist, "DistTimeoutError", None)
    if timeout_type is not None and isinstance(err, timeout_type):
        return True
    return isinstance(err, RuntimeError) and "timed out" in str(err).lower()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place; returns it for convenience."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s (picklable) ``obj`` on every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device, bn_group_size: int = 1,
               fast_ddp: bool = False) -> nn.Module:
    """DDP as the reference configures it; a single process gets its model back unwrapped.

    ``fast_ddp`` (the optimized path only; default the reference's DDP) adds
    ``static_graph=True`` (the set of used parameters never changes, so DDP
    can skip its per-iteration search and overlap better) and
    ``gradient_as_bucket_view=True`` (gradients live in the all-reduce buckets:
    one copy less per step, less memory). Neither changes a number: the same
    buckets are reduced in the same order (tests/test_faults_ddp.py compares
    the weights bitwise on two gloo ranks)."""
    if not ctx.is_distributed:
        return model
    device_ids = None  # DDP rejects device ids for CPU modules
    if device.type != "cpu":
        device_ids = [accelerator.current_index(device)]
    return DistributedDataParallel(
        model,
        device_ids=device_ids,
        bucket_cap_mb=DDP_BUCKET_CAP_MB_BN_GROUPS if bn_group_size > 1 else DDP_BUCKET_CAP_MB,
        broadcast_buffers=False,
        static_graph=fast_ddp,
        gradient_as_bucket_view=fast_ddp,
    )


def batchnorm_group_ranks(world_size: int, group_size: int) -> list[list[int]]:
    """Consecutive rank groups of ``group_size``: (8, 4) -> [[0, 1, 2, 3], [4, 5, 6, 7]]."""
    if group_size < 1:
        raise ConfigError(f"batchnorm group size must be >= 1, not {group_size}")
    if world_size % group_size:
        raise ConfigError(
            f"batchnorm group size {group_size} does not divide the number of ranks ({world_size})"
        )
    return [list(range(start, start + group_size)) for start in range(0, world_size, group_size)]


def create_batchnorm_group(ctx: DistContext, group_size: int) -> dist.ProcessGroup:
    """This rank's batchnorm group. Every rank creates every group, in the same order, as new_group requires."""
    own = None
    for ranks in batchnorm_group_ranks(ctx.world_size, group_size):
        group = dist.new_group(ranks=ranks)
        if ctx.rank in ranks:
            own = group
    assert own is not None
    return own


def convert_batchnorm(model: nn.Module, ctx: DistContext, group_size: int, device: torch.device) -> nn.Module:
    """SyncBatchNorm within consecutive groups of ``group_size`` ranks; group size 1 leaves the model as is."""
    batchnorm_group_ranks(ctx.world_size, group_size)  # validates before any collective call
    if group_size == 1:
        return model
    if device.type == "cpu":  # torch's SyncBatchNorm.forward accepts cuda, hpu, xpu and privateuse1 inputs
        raise ConfigError(
            f"batchnorm group size {group_size} needs SyncBatchNorm, which PyTorch supports only on CUDA, "
            "ROCm or XPU devices; use batchnorm group size 1 on CPU"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=create_batchnorm_group(ctx, group_size))


def average_batchnorm_stats(model: nn.Module, ctx: DistContext) -> None:
    """Average BatchNorm running means and variances over all ranks (one all-reduce per dtype)."""
    if not ctx.is_distributed:
        return
    buffers: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            for stat in (module.running_mean, module.running_var):
                if stat is not None:
                    buffers.setdefault((stat.device, stat.dtype), []).append(stat)
    with torch.no_grad():
        for tensors in buffers.values():
            flat = _flatten_dense_tensors(tensors)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= ctx.world_size
            for stat, averaged in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
                stat.copy_(averaged)


def describe_platform(ctx: DistContext, device: torch.device) -> str:
    """The ``submission_platform`` string, e.g. '4 nodes x 4 NVIDIA H100 80GB HBM3'
    (an AMD or Intel GPU likewise, by its device name)."""
    nodes = f"{ctx.num_nodes} node{'s' if ctx.num_nodes != 1 else ''}"
    if device.type != "cpu":
        return f"{nodes} x {ctx.local_size} {accelerator.device_name(device)}"
    processes = f"{ctx.local_size} process{'es' if ctx.local_size != 1 else ''}"
    return f"{nodes} x {processes}, {accelerator.device_name(device)}"
