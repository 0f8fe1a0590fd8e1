"""The optimized step (issue 13): no host read per training step, batched
evaluation equal to the reference's batch 1, the CPU recipe, and a non-finite
loss stopping the run with one line naming the batch's files."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import small_network, write_random_dataset
from fastcam.cli import main
from fastcam.config import optimized
from fastcam.data import layout
from fastcam.distributed import init_distributed
from fastcam.train import Trainer, execution
from fastcam.train.inputs import build_loaders, stage_inputs
from fastcam.train.plan import resolve_plan

# aten ops through which the host reads a tensor's value (.item(), bool(), .tolist()).
HOST_READS = {"_local_scalar_dense", "item", "equal", "is_nonzero", "nonzero"}


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in HOST_READS:
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def trainer_for(config, data, model=None):
    ctx = init_distributed("single", "cpu")
    torch.manual_seed(0)
    return Trainer(resolve_plan(config, ctx, torch.device("cpu"), data_dir=data), ctx, model=model)


def test_the_optimized_step_reads_nothing_back_to_the_host(tiny_synthetic):
    trainer = trainer_for(optimized().replace(hyperparameters={"local_batch_size": 2}), tiny_synthetic)
    inputs, labels, _ = trainer.synthetic_batch(2)
    trainer.train_step(inputs, labels)  # first step: optimizer state created
    with HostReads() as reads:
        for _ in range(2):
            trainer.train_step(inputs, labels)
    assert reads.ops == []
    # The counter does see a read: the test can fail.
    with HostReads() as reads:
        trainer.train_step(inputs, labels)[0].item()
    assert reads.ops == ["_local_scalar_dense"]


def test_batched_evaluation_equals_batch_one_with_a_padded_last_batch(tiny_synthetic, tmp_path):
    # 5 validation samples at batch 4: one full batch and one padded to 4 with 3 rows not counted.
    base = optimized().replace(run={"stage_dir": str(tmp_path / "stage"), "max_inter_threads": 0},
                               hyperparameters={"local_batch_size": 4})
    results = {}
    for size in (1, 4):
        trainer = trainer_for(base.replace(optimizations={"local_batch_size_validation": size}), tiny_synthetic)
        stage_inputs(trainer.plan, trainer.ctx, say=lambda _m: None)
        loaders = build_loaders(trainer.plan, trainer.ctx, seed=0)
        assert {b[1].shape[0] for b in loaders.validation} == ({1} if size == 1 else {4, 1})
        results[size] = trainer.evaluate(loaders.validation)
    one, four = results[1], results[4]
    assert four.samples == one.samples == 5
    assert four.iou == pytest.approx(one.iou, rel=1e-6)
    assert four.loss == pytest.approx(one.loss, rel=1e-5)


def test_the_optimized_recipe_on_a_cpu_uses_bf16_only_where_native(monkeypatch):
    config = optimized()
    cpu = torch.device("cpu")
    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: True)
    ex = execution.resolve_execution(config, cpu)
    assert ex.autocast_dtype is torch.bfloat16 and not ex.grad_scaler and ex.channels_last and not ex.compile
    monkeypatch.setattr(execution, "cpu_has_native_bf16", lambda: False)
    assert execution.resolve_execution(config, cpu).autocast_dtype is None
    # The baseline is the reference's execution whatever the CPU.
    from fastcam.config import baseline

    assert execution.resolve_execution(baseline(), cpu).autocast_dtype is None


def test_a_non_finite_loss_stops_the_run_naming_the_batch(tmp_path, capsys, monkeypatch):
    data = write_random_dataset(tmp_path / "d", n_train=8, n_validation=2)
    bad = data / "train" / "data-000005.h5"
    with h5py.File(bad, "r+") as f:
        values = f[layout.DATA_KEY][...]
        values[3, 4, 0] = np.nan
        f[layout.DATA_KEY][...] = values
    from fastcam.train import run

    monkeypatch.setattr(run, "Trainer", lambda plan, ctx, model=None: Trainer(plan, ctx, model=small_network()))
    rc = main(["train", "--mode", "baseline", "--data_dir_prefix", str(data), "--output_dir", str(tmp_path / "o"),
               "--max_inter_threads", "0", "--device", "cpu", "--seed", "3", "--max_epochs", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "non-finite training loss" in err[0] and "data-000005.h5" in err[0]
    log = (tmp_path / "o" / "logs" / "deepcam.log").read_text()
    assert '"key": "run_stop"' in log and '"status": "aborted"' in log
