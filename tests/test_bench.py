"""`fastcam bench` on CPU at a small size: the table and every JSON field."""

import json

import pytest
import torch

from conftest import small_network
from fastcam.cli import main
from fastcam.train import trainer


def test_bench_cpu_small_prints_table_and_writes_json(tmp_path, capsys, monkeypatch):
    # The bench's mechanics with the small test network (the reference network's speed is RESULTS.md's).
    monkeypatch.setattr(trainer, "build_model", lambda *args: small_network())
    out = tmp_path / "bench.json"
    # train's flag names (issue 12): --local_batch_size, --max_inter_threads.
    rc = main(["bench", "--device", "cpu", "--height", "32", "--width", "48", "--local_batch_size", "2",
               "--steps", "2", "--warmup", "1", "--max_inter_threads", "0", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    for row in ("| step | baseline", "| step | optimized", "| eval | baseline", "| eval | optimized",
                "| loader | hdf5", "| loader | staged", "| loader | dali",
                "| epoch | baseline", "| epoch | optimized", "optimized / baseline step throughput"):
        assert row in printed
    r = json.loads(out.read_text())
    assert r["bench_schema"] == 2 and r["fastcam_version"]
    assert r["device"].startswith("CPU") and (r["height"], r["width"], r["batch_size"]) == (32, 48, 2)
    flop = 1.97e12 * 32 * 48 / (768 * 1152)
    for mode in ("baseline", "optimized"):
        step = r["step"][mode]
        assert step["samples_per_s"] > 0 and step["timing"] == "median of interleaved steps"
        assert abs(step["ms_per_step"] - 1000 * 2 / step["samples_per_s"]) < 1e-6 * step["ms_per_step"]
        assert step["min_ms_per_step"] <= step["ms_per_step"] and step["mean_ms_per_step"] > 0
        assert abs(step["tflops"] - step["samples_per_s"] * flop / 1e12) < 1e-9
        assert step["peak_memory_gb"] > 0
        assert r["epoch"][mode]["samples_per_s"] > 0
        assert r["eval"][mode]["samples_per_s"] > 0
        assert step["host_syncs_per_step"] >= 0 and step["host_sync_method"]
    # What ran, not what was asked for: the optimized recipe's LAMB is the torch one on a CPU.
    assert r["step"]["optimized"]["optimizer_implementation"] == "LAMB (torch fused-Adam CPU kernel)"
    assert r["step"]["baseline"]["optimizer_implementation"].startswith("AdamW")
    # The reference evaluates one sample at a time; the optimized mode at the training batch.
    assert (r["eval"]["baseline"]["batch_size"], r["eval"]["optimized"]["batch_size"]) == (1, 2)
    assert r["step"]["baseline"]["execution"]["channels_last"] is False
    assert r["step"]["optimized"]["execution"]["channels_last"] is True
    assert r["loader"]["hdf5"]["samples_per_s"] > 0 and r["loader"]["staged"]["samples_per_s"] > 0
    assert r["loader"]["staged"]["staging_s"] > 0
    assert r["epoch"]["baseline"]["loader"] == "hdf5" and r["epoch"]["optimized"]["loader"] == "staged"


def test_bench_rejects_bad_options(tmp_path, capsys):
    assert main(["bench", "--device", "cpu", "--height", "30", "--json", str(tmp_path / "x.json")]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--parts", "step,nope"]) == 2
    # A hyperparameter flag is validated like train's, before any work.
    assert main(["bench", "--device", "cpu", "--local_batch_size", "0", "--json", str(tmp_path / "x.json")]) == 2
    assert "local_batch_size" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_the_modes_steps_alternate_and_the_median_is_reported():
    from types import SimpleNamespace

    from fastcam import bench_step

    calls, durations = [], {"baseline": iter([0.03, 0.01, 0.02]), "optimized": iter([0.001, 0.005, 0.003])}

    class FakeTrainer:
        def __init__(self, mode):
            self.mode = mode
            self.execution = SimpleNamespace(warm_up=False, switches=lambda: {"mode": mode})
            self.optimizer = None

        def synthetic_batch(self, batch):
            return None, None, None

        def train_step(self, inputs, labels):
            calls.append(self.mode)
            if len(calls) > 2:  # past the two untimed host-read counting steps
                clock[0] += next(durations[self.mode])

    clock = [0.0]
    configs = {m: SimpleNamespace(hyperparameters=SimpleNamespace(local_batch_size=2)) for m in durations}
    args = SimpleNamespace(steps=3, warmup=0, height=32, width=48)
    patch = pytest.MonkeyPatch()
    patch.setattr(bench_step.time, "perf_counter", lambda: clock[0])
    patch.setattr("fastcam.train.optim.optimizer_implementation", lambda opt: "fake")
    try:
        out = bench_step.bench_steps(configs, None, torch.device("cpu"), None, args, lambda c, *a: FakeTrainer(
            next(m for m, cfg in configs.items() if cfg is c)), lambda d: None, lambda d: None, lambda d: 0.0)
    finally:
        patch.undo()
    assert calls[2:] == ["baseline", "optimized"] * 3  # interleaved, not one mode's steps after the other's
    assert out["baseline"]["ms_per_step"] == pytest.approx(20.0)  # the median of 30, 10, 20 ms
    assert out["optimized"]["min_ms_per_step"] == pytest.approx(1.0)
    assert out["optimized"]["mean_ms_per_step"] == pytest.approx(3.0)
