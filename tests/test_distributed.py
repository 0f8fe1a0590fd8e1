"""fastcam.distributed: wire-up from launcher variables and the DDP helpers.

In-process tests cover detection, validation and the single-process paths.
The multi-process tests launch this file twice as a worker (``--worker``) with
the variables Slurm, Slurm+PMI or torchrun would set, so each worker builds a
real gloo process group; the workers report JSON that the parent checks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastcam import distributed as fd
from fastcam.distributed import DistContext
from fastcam.errors import ConfigError

LAUNCHER_PREFIXES = ("SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_LOCALRANKID", "TORCHELASTIC_")
LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
WORKER_TIMEOUT_S = 120


def _is_launcher_var(name: str) -> bool:
    return name in LAUNCHER_NAMES or name.startswith(LAUNCHER_PREFIXES)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if _is_launcher_var(name):
            monkeypatch.delenv(name)
    return monkeypatch


def _set(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


# --- detection and validation (in process) -----------------------------------

@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "env"),
        ({"PMI_RANK": "1", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, "nccl-slurm-pmi"),
        ({"PMI_RANK": "1", "PMI_SIZE": "2"}, "single"),  # PMI without Slurm is not a Slurm launch
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2"}, "nccl-slurm"),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "single"),  # an sbatch script outside srun
        ({"SLURM_PROCID": "0"}, "single"),
        ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}, "nccl-openmpi"),
        ({}, "single"),
    ],
)
def test_detect_method(clean_env: pytest.MonkeyPatch, variables: dict[str, str], expected: str) -> None:
    _set(clean_env, variables)
    assert fd.detect_method() == expected


def test_auto_without_launcher_is_one_process_without_group(clean_env: pytest.MonkeyPatch) -> None:
    ctx = fd.init_distributed("auto")
    assert ctx == DistContext(0, 1, 0, 1, 1, None, "single")
    assert not ctx.is_distributed and ctx.is_main
    assert not dist.is_initialized()
    fd.shutdown(ctx)  # nothing to destroy; must not raise


@pytest.mark.parametrize(
    ("variables", "method"),
    [
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS_PER_NODE": "1"},
         "nccl-slurm"),
        ({"PMI_RANK": "0", "PMI_SIZE": "1", "SLURM_NTASKS": "1"}, "nccl-slurm-pmi"),
        ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}, "nccl-openmpi"),
        ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, "env"),
    ],
)
def test_auto_one_task_launch_needs_no_master_and_creates_no_group(
    clean_env: pytest.MonkeyPatch, variables: dict[str, str], method: str
) -> None:
    _set(clean_env, variables)
    ctx = fd.init_distributed("auto")
    assert (ctx.method, ctx.rank, ctx.world_size, ctx.backend) == (method, 0, 1, None)
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("method", "variables", "missing"),
    [
        ("nccl-slurm", {"SLURM_NTASKS": "2", "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1"}, "SLURM_PROCID"),
        ("nccl-slurm", {"SLURM_PROCID": "0", "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1"}, "SLURM_NTASKS"),
        ("nccl-slurm", {"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "SLURM_LAUNCH_NODE_IPADDR"),
        # PMIX_RANK is not a substitute: it is not always set under Slurm.
        ("nccl-slurm-pmi", {"PMIX_RANK": "0", "SLURM_NTASKS": "2", "SLURM_LAUNCH_NODE_IPADDR": "h"}, "PMI_RANK"),
        ("nccl-slurm-pmi", {"PMI_RANK": "0"}, "PMI_SIZE"),
        ("nccl-slurm-pmi", {"PMI_RANK": "0", "PMI_SIZE": "2"}, "SLURM_LAUNCH_NODE_IPADDR"),
        ("nccl-openmpi", {"OMPI_COMM_WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "OMPI_COMM_WORLD_RANK"),
        ("nccl-openmpi", {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}, "MASTER_ADDR"),
        ("env", {"WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK"),
        ("env", {"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1"}, "MASTER_ADDR"),
        ("env", {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "MASTER_PORT"),
    ],
)
def test_explicit_method_names_missing_variable(
    clean_env: pytest.MonkeyPatch, method: str, variables: dict[str, str], missing: str
) -> None:
    _set(clean_env, variables)
    with pytest.raises(ConfigError, match=rf"\b{missing}\b"):
        fd.init_distributed(method)
    assert not dist.is_initialized()


def test_malformed_variables_raise_config_error(clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, {"SLURM_PROCID": "zero", "SLURM_NTASKS": "2"})
    with pytest.raises(ConfigError, match="SLURM_PROCID='zero'"):
        fd.init_distributed("nccl-slurm")
    _set(clean_env, {"SLURM_PROCID": "2", "SLURM_NTASKS": "2", "SLURM_LAUNCH_NODE_IPADDR": "h"})
    with pytest.raises(ConfigError, match="rank 2 for world size 2"):
        fd.init_distributed("nccl-slurm")
    with pytest.raises(ConfigError, match="unknown distributed method 'slurm'"):
        fd.init_distributed("slurm")
    with pytest.raises(ConfigError, match="device type"):
        fd.init_distributed("single", device_type="tpu")


def test_openmpi_master_falls_back_to_pmix_server_uri(clean_env: pytest.MonkeyPatch) -> None:
    # the reference's source of the master address under OpenMPI
    _set(clean_env, {"PMIX_SERVER_URI2": "pmix-server.77;tcp4://10.1.2.3:40000"})
    assert fd._openmpi_master(os.environ) == "10.1.2.3"
    clean_env.setenv("MASTER_ADDR", "node07")
    assert fd._openmpi_master(os.environ) == "node07"


def test_select_backend_follows_device_not_method() -> None:
    assert fd.select_backend("cpu") == "gloo"
    assert fd.select_backend("cuda") == "nccl"


def test_local_size_sources_and_precedence() -> None:
    assert fd._tasks_per_node("4(x2),3") == 4
    assert fd._tasks_per_node("2") == 2
    env = {"SLURM_TASKS_PER_NODE": "4(x2)", "LOCAL_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "3"}
    assert fd._first_int(env, fd._local_size_vars("nccl-slurm"), "nccl-slurm") == 4
    assert fd._first_int(env, fd._local_size_vars("env"), "env") == 2  # torchrun inside Slurm
    assert fd._first_int(env, fd._local_size_vars("nccl-openmpi"), "nccl-openmpi") == 3
    assert fd._first_int({}, fd._local_size_vars("env"), "env") is None


def test_mpi_method(clean_env: pytest.MonkeyPatch) -> None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="mpi4py"):
            fd.init_distributed("mpi")
        # mpi4py (and an MPI library) is not installed here: a one-rank stand-in for
        # MPI.COMM_WORLD checks that rank, size, local rank and address come from MPI.
        stub = _one_rank_mpi4py()
        clean_env.setitem(sys.modules, "mpi4py", stub)
        clean_env.setitem(sys.modules, "mpi4py.MPI", stub.MPI)
    ctx = fd.init_distributed("mpi")
    assert (ctx.method, ctx.rank, ctx.world_size, ctx.local_size, ctx.backend) == ("mpi", 0, 1, 1, None)


def _one_rank_mpi4py() -> types.ModuleType:
    class Comm:
        def Get_rank(self) -> int:
            return 0

        def Get_size(self) -> int:
            return 1

        def Split_type(self, kind: int) -> "Comm":
            return self

        def bcast(self, obj: object, root: int = 0) -> object:
            return obj

    mpi = types.SimpleNamespace(COMM_WORLD=Comm(), COMM_TYPE_SHARED=0)
    module = types.ModuleType("mpi4py")
    module.MPI = mpi  # type: ignore[attr-defined]
    return module


# --- single-process helpers ----------------------------------------------------

SINGLE = DistContext(0, 1, 0, 1, 1, None, "single")


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))


def test_single_process_helpers_are_identity() -> None:
    model = _bn_net()
    model(torch.randn(4, 2, 5, 5))  # move the running statistics off their initial values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fd.wrap_model(model, SINGLE, torch.device("cpu")) is model
    assert fd.convert_batchnorm(model, SINGLE, 1, torch.device("cpu")) is model
    fd.average_batchnorm_stats(model, SINGLE)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    value = torch.tensor([3.0])
    assert fd.all_reduce_sum(value, SINGLE) is value and value.item() == 3.0
    assert fd.broadcast_object({"seed": 5}, SINGLE) == {"seed": 5}
    fd.barrier(SINGLE)


def test_convert_batchnorm_rejects_cpu_and_bad_group_sizes() -> None:
    two_ranks = DistContext(0, 2, 0, 2, 1, "gloo", "env")  # checks run before any collective call
    with pytest.raises(ConfigError, match="only on CUDA"):
        fd.convert_batchnorm(_bn_net(), two_ranks, 2, torch.device("cpu"))
    with pytest.raises(ConfigError, match="group size 3 does not divide the number of ranks \\(2\\)"):
        fd.convert_batchnorm(_bn_net(), two_ranks, 3, torch.device("cpu"))
    with pytest.raises(ConfigError, match=">= 1"):
        fd.convert_batchnorm(_bn_net(), two_ranks, 0, torch.device("cpu"))


def test_batchnorm_group_ranks_are_consecutive() -> None:
    assert fd.batchnorm_group_ranks(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert fd.batchnorm_group_ranks(4, 1) == [[0], [1], [2], [3]]


def test_describe_platform_cpu() -> None:
    text = fd.describe_platform(DistContext(0, 8, 0, 4, 2, "gloo", "env"), torch.device("cpu"))
    assert text.startswith("2 nodes x 4 processes, CPU: ")
    assert text.split("CPU: ", 1)[1] == fd.cpu_model() != ""
    assert fd.describe_platform(SINGLE, torch.device("cpu")).startswith("1 node x 1 process, CPU: ")


# --- real two-process runs -------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)  # identical initial weights everywhere, as DDP's initial broadcast also ensures
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(6, 4, generator=gen), torch.randn(6, 2, generator=gen)


def _sgd_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    nn.functional.mse_loss(model(inputs), targets).backward()
    optimizer.step()


def _worker(method: str) -> dict[str, object]:
    """Runs in a launched process: exercises every helper on a real gloo group."""
    torch.set_num_threads(1)
    ctx = fd.init_distributed(method, "cpu", timeout=timedelta(seconds=60))
    report: dict[str, object] = {"ctx": [ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_size,
                                         ctx.num_nodes, ctx.backend, ctx.method]}
    report["group_size"] = dist.get_world_size()
    report["sum"] = fd.all_reduce_sum(torch.tensor([ctx.rank + 1.0]), ctx).item()
    report["broadcast"] = fd.broadcast_object({"seed": 1234 + ctx.rank}, ctx)

    bn = _bn_net()
    gen = torch.Generator().manual_seed(ctx.rank)
    for module in bn.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen))
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.num_batches_tracked.fill_(7 + ctx.rank)
    report["bn_before"] = {k: v.tolist() for k, v in bn.state_dict().items() if "running" in k}
    fd.average_batchnorm_stats(bn, ctx)
    report["bn_after"] = {k: v.tolist() for k, v in bn.state_dict().items() if "running" in k}
    report["bn_batches"] = [v.item() for k, v in bn.state_dict().items() if "num_batches" in k]

    ddp = fd.wrap_model(_tiny_net(), ctx, torch.device("cpu"))
    report["ddp"] = [type(ddp).__name__, getattr(ddp, "device_ids", "absent")]
    _sgd_step(ddp, *_rank_batch(ctx.rank))
    report["weights"] = [p.detach().flatten().tolist() for p in ddp.parameters()]

    try:
        fd.convert_batchnorm(_bn_net(), ctx, 2, torch.device("cpu"))
        report["syncbn_cpu"] = "no error"
    except ConfigError as err:
        report["syncbn_cpu"] = str(err)
    group = fd.create_batchnorm_group(ctx, 2)
    in_group = torch.tensor([10.0 * (ctx.rank + 1)])
    dist.all_reduce(in_group, group=group)
    report["group_sum"] = in_group.item()

    fd.barrier(ctx)
    fd.shutdown(ctx)
    report["initialized_after_shutdown"] = dist.is_initialized()
    return report


def _launch(per_rank_env: list[dict[str, str]], method: str, tmp_path: Path) -> list[dict]:
    base = {k: v for k, v in os.environ.items() if not _is_launcher_var(k)}
    base["OMP_NUM_THREADS"] = "1"
    procs = []
    for rank, variables in enumerate(per_rank_env):
        out = tmp_path / f"rank{rank}.json"
        procs.append((out, subprocess.Popen(
            [sys.executable, __file__, "--worker", method, str(out)],
            env={**base, **variables}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )))
    reports = []
    try:
        for out, proc in procs:
            log, _ = proc.communicate(timeout=WORKER_TIMEOUT_S)
            assert proc.returncode == 0, f"worker failed:\n{log}"
            reports.append(json.loads(out.read_text()))
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
    return reports


def _expected_weights() -> list[list[float]]:
    """One process, both ranks' batches at once: what DDP's gradient averaging must equal."""
    model = _tiny_net()
    (x0, y0), (x1, y1) = _rank_batch(0), _rank_batch(1)
    _sgd_step(model, torch.cat([x0, x1]), torch.cat([y0, y1]))
    return [p.detach().flatten().tolist() for p in model.parameters()]


def _check_reports(reports: list[dict], method: str, local_ranks: list[int], local_size: int) -> None:
    assert [r["ctx"] for r in reports] == [
        [rank, 2, local_ranks[rank], local_size, 2 // local_size, "gloo", method] for rank in range(2)
    ]
    for report in reports:
        assert report["group_size"] == 2
        assert report["sum"] == 3.0
        assert report["broadcast"] == {"seed": 1234}
        assert report["ddp"] == ["DistributedDataParallel", None]
        assert "only on CUDA" in report["syncbn_cpu"]
        assert report["group_sum"] == 30.0
        assert report["initialized_after_shutdown"] is False
        # only means and variances are averaged; the step counters stay per rank
        assert report["bn_batches"] == [7 + reports.index(report)] * 2
    before = [torch.tensor(sum(r["bn_before"].values(), [])) for r in reports]
    assert not torch.allclose(before[0], before[1])
    mean = (before[0] + before[1]) / 2
    for report in reports:
        assert torch.allclose(torch.tensor(sum(report["bn_after"].values(), [])), mean, atol=1e-6)
    expected = _expected_weights()
    for report in reports:
        for got, want in zip(report["weights"], expected):
            assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-6)
    assert reports[0]["weights"] == reports[1]["weights"]


@pytest.mark.slow
def test_two_ranks_as_slurm_launches_them(tmp_path: Path) -> None:
    port = str(_free_port())
    common = {"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1",
              "MASTER_PORT": port, "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_ID": "42"}  # one task on each of two nodes
    envs = [{**common, "SLURM_PROCID": str(r), "SLURM_LOCALID": "0"} for r in range(2)]
    _check_reports(_launch(envs, "auto", tmp_path), "nccl-slurm", [0, 0], 1)


@pytest.mark.slow
def test_two_ranks_with_slurm_pmi_variables(tmp_path: Path) -> None:
    port = str(_free_port())
    common = {"PMI_SIZE": "2", "SLURM_NTASKS": "2", "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1",
              "SLURM_TASKS_PER_NODE": "2", "MASTER_PORT": port, "SLURM_JOB_ID": "42"}
    envs = [{**common, "PMI_RANK": str(r)} for r in range(2)]  # no PMIX_RANK, no SLURM_LOCALID
    _check_reports(_launch(envs, "auto", tmp_path), "nccl-slurm-pmi", [0, 1], 2)


@pytest.mark.slow
def test_two_ranks_torchrun_style(tmp_path: Path) -> None:
    port = str(_free_port())
    common = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    envs = [{**common, "RANK": str(r), "LOCAL_RANK": str(r)} for r in range(2)]
    _check_reports(_launch(envs, "env", tmp_path), "env", [0, 1], 2)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    Path(sys.argv[3]).write_text(json.dumps(_worker(sys.argv[2])))
