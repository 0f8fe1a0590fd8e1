"""The optimized execution: its switches, warm-up, fp16 loss scaling, and
agreement with the baseline on the same hyperparameters."""

import json

import pytest
import torch

from conftest import small_network
from fastcam.compliance import failed_keys, run_checker
from fastcam.config import optimized
from fastcam.distributed import init_distributed
from fastcam.model import to_reference_state_dict
from fastcam.train import Trainer, train
from fastcam.train.cli import parse_train_config
from fastcam.train.execution import auto_precision, resolve_execution
from fastcam.train.plan import resolve_plan


def run_args(mode, data, out, *extra):
    return ["--mode", mode, "--data_dir_prefix", str(data), "--output_dir", str(out), "--max_inter_threads", "0",
            "--device", "cpu", "--seed", "13", *extra]


def log_events(path):
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in path.read_text().splitlines()]


def trainer_for(config, data, model=None):
    ctx = init_distributed("single", "cpu")
    torch.manual_seed(0)
    return Trainer(resolve_plan(config, ctx, torch.device("cpu"), data_dir=data), ctx, model=model)


def test_device_defaults_of_the_optimized_recipe():
    config = optimized()
    cpu = resolve_execution(config, torch.device("cpu"))
    assert cpu.channels_last and cpu.fused_optimizer
    assert not cpu.compile  # no inductor on CPU by default (bf16 autocast where native: tests/test_step.py)
    if torch.cuda.is_available():
        gpu = resolve_execution(config, torch.device("cuda"))
        assert gpu.autocast_dtype is torch.float16 and gpu.grad_scaler and gpu.compile


def test_optimized_run_end_to_end_on_cpu_records_every_switch(tiny_synthetic, tmp_path):
    out = tmp_path / "out"
    result = train(parse_train_config(run_args("optimized", tiny_synthetic, out, "--max_epochs", "2",
                                               "--local_batch_size", "4", "--run_tag", "opt")))
    assert len(result.history) == 2 and all(r.eval_samples == 5 for r in result.history)
    events = log_events(out / "logs" / "opt.log")
    keys = [e["key"] for e in events]
    assert keys.index("staging_start") < keys.index("staging_stop") < keys.index("run_start")
    execution = next(e["value"] for e in events if e["key"] == "fastcam_execution")
    precision = auto_precision(torch.device("cpu"))  # bf16 where the CPU has it natively
    assert execution == {"device": "cpu", "channels_last": True, "precision": precision, "grad_scaler": False,
                         "fused_optimizer": True, "compile": "off", "cudnn_benchmark": False,
                         "optimizer_implementation": "LAMB (torch fused-Adam CPU kernel)"}
    assert next(e["value"] for e in events if e["key"] == "fastcam_loader") == "staged"
    assert next(e["value"] for e in events if e["key"] == "opt_name") == "LAMB"
    assert failed_keys(run_checker(out / "logs" / "opt.log")) == {"train_samples", "eval_samples", "eval_accuracy"}
    # Staged data: the run's shards live under OUTPUT_DIR/staged (no --stage_dir given).
    assert any((out / "staged").iterdir())


def test_optimized_execution_matches_baseline_on_the_same_hyperparameters(tiny_synthetic, tmp_path):
    """Same hyperparameters and the same (reference) loader; only channels-last
    and the fused optimizer differ, so the IoU must agree closely."""
    base = train(parse_train_config(run_args("baseline", tiny_synthetic, tmp_path / "b", "--max_epochs", "2")),
                 model_factory=small_network)
    fast = train(parse_train_config(run_args(
        "optimized", tiny_synthetic, tmp_path / "o", "--max_epochs", "2", "--loader", "hdf5",
        "--optimizer", "AdamW", "--start_lr", "1e-3", "--weight_decay", "1e-2",
        "--lr_schedule", "type=multistep,milestones=1200,decay_rate=0.5")), model_factory=small_network)
    assert [r.step for r in fast.history] == [r.step for r in base.history]
    for b, f in zip(base.history, fast.history):
        assert f.eval_iou == pytest.approx(b.eval_iou, abs=0.02)
        assert f.train_loss == pytest.approx(b.train_loss, rel=0.05)


def test_warm_up_leaves_the_run_state_untouched(tiny_synthetic):
    trainer = trainer_for(optimized().replace(hyperparameters={"local_batch_size": 2}), tiny_synthetic)
    assert trainer.plan.input_dtype is torch.float16  # the staged cache's: warm-up batches match it
    before = {k: v.clone() for k, v in to_reference_state_dict(trainer.model).items()}
    rng = torch.get_rng_state()
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.warm_up()
    after = to_reference_state_dict(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not trainer.optimizer.state  # no moments left over
    assert torch.equal(rng, torch.get_rng_state())
    assert trainer.step == 0 and trainer.scheduler.last_epoch == 0 and trainer.optimizer.param_groups[0]["lr"] == lr


def test_grad_scaler_skips_float16_steps_with_infinite_gradients(tiny_synthetic):
    # fp16 asked for explicitly: CPU autocast supports float16.
    config = optimized().replace(optimizations={"precision": "fp16"}, hyperparameters={"local_batch_size": 2})
    trainer = trainer_for(config, tiny_synthetic, small_network())
    assert trainer.scaler is not None
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.endswith("weight")}
    scale = trainer.scaler.get_scale()
    inputs, labels, _ = trainer.synthetic_batch(2)
    inputs[0, 0, 0, 0] = float("inf")
    trainer.train_step(inputs, labels)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the step was skipped
    assert trainer.scaler.get_scale() < scale  # and the scale backed off
    trainer.train_step(*trainer.synthetic_batch(2)[:2])
    assert not all(torch.equal(before[k], trainer.model.state_dict()[k]) for k in before)  # a finite step is taken


@pytest.mark.slow
def test_compiled_tiny_configuration_trains(tiny_synthetic, tmp_path):
    # The compile path's mechanics (warm-up before init_stop, the log) on a small
    # network: inductor on the full one costs minutes on 2 cores.
    result = train(parse_train_config(run_args("optimized", tiny_synthetic, tmp_path / "c", "--max_epochs", "1",
                                               "--local_batch_size", "8", "--compile", "on",
                                               "--run_tag", "compiled")), model_factory=small_network)
    events = log_events(tmp_path / "c" / "logs" / "compiled.log")
    assert next(e["value"] for e in events if e["key"] == "fastcam_execution")["compile"] == "default"
    assert any(e["key"] == "fastcam_warmup_seconds" for e in events)
    assert result.history[0].eval_samples == 5
