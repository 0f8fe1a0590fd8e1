"""The guard reads the rules profile (issue 15): per-profile baselines, the
ported run type, and the precision rules."""

import pytest

from fastcam import guard
from fastcam.cli import main
from fastcam.config import baseline, optimized, ported
from fastcam.errors import ConfigError, GuardError
from fastcam.rules import load, names
from fastcam.train import execution
from fastcam.train.cli import parse_train_config


@pytest.mark.parametrize("name", names())
def test_each_profiles_baseline_recipe_is_its_published_baseline_and_passes_its_guard(name, monkeypatch):
    monkeypatch.setattr(execution, "auto_precision", lambda device: "bf16")  # an AMP-capable device
    config = baseline(name)
    assert config.rules == name and config.hyperparameters == load(name).hyperparameters()
    guard.check(config)


def test_the_january_2026_baseline_is_lamb_with_mixed_precision(monkeypatch):
    config = parse_train_config(["--rules", "esif-2026-01", "--mode", "baseline", "--device", "cpu"])
    assert config.hyperparameters.optimizer == "LAMB" and config.hyperparameters.weight_decay == 0.2
    assert config.optimizations.precision == "auto"  # AMP: fp16 on CUDA, bf16 on a CPU that has it
    monkeypatch.setattr(execution, "auto_precision", lambda device: "bf16")
    guard.check(config)
    monkeypatch.setattr(execution, "auto_precision", lambda device: "fp32")
    with pytest.raises(GuardError, match=r"auto \(fp32 on this device\)"):
        guard.check(config)


def test_baseline_fp16_under_the_default_rules_is_one_line_citing_the_rule(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--mode", "baseline", "--precision", "fp16", "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--precision fp16" in err[0] and "esif-2025-12" in err[0] and "precision-related optimizations" in err[0]
    assert not out.exists()


def test_ported_runs_may_change_the_execution_not_the_hyperparameters():
    ok = ported().replace(optimizations={"channels_last": True, "compile": "on", "fused_optimizer": True,
                                         "cudnn_benchmark": False})
    guard.check(ok)
    with pytest.raises(GuardError, match="--start_lr 0.002 is not allowed in a ported run"):
        guard.check(ported().replace(hyperparameters={"start_lr": 0.002}))
    with pytest.raises(GuardError, match="--precision bf16 is not allowed in a ported run"):
        guard.check(ported().replace(optimizations={"precision": "bf16"}))
    # A float16 stage cache is a precision change where only fp32 is allowed; fp32 staging is not.
    with pytest.raises(GuardError, match="--stage_dtype fp16 stores the inputs as fp16.*use --stage_dtype fp32"):
        guard.check(ported().replace(optimizations={"loader": "staged"}))
    guard.check(ported().replace(optimizations={"loader": "staged", "stage_dtype": "fp32"}))
    # Under the drafts with AMP baselines a port may use reduced precision.
    guard.check(ported("esif-2026-01").replace(optimizations={"precision": "bf16", "loader": "staged"}))


def test_optimized_runs_follow_the_profiles_bounds_and_fixed_list():
    guard.check(optimized())
    with pytest.raises(GuardError, match="--save_frequency 10 is not allowed in an optimized run under rules esif"):
        guard.check(optimized().replace(hyperparameters={"save_frequency": 10}))
    # MLPerf HPC 3.0 closed division: no ported run type.
    with pytest.raises(GuardError, match="define no ported run"):
        guard.check(parse_train_config(["--rules", "mlperf-hpc-3.0", "--mode", "optimized"]).replace(mode="ported"))


def test_an_unknown_profile_is_one_line(capsys):
    with pytest.raises(ConfigError, match="unknown rules profile"):
        baseline("esif-2099")
    assert main(["train", "--rules", "esif-2099", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "esif-2099" in err[0]


@pytest.mark.parametrize("name", names())
def test_each_profiles_guard_refuses_its_fixed_parameters_precision_and_global_batch(name, monkeypatch):
    profile = load(name)
    monkeypatch.setattr(execution, "auto_precision", lambda device: "bf16")
    # A fixed parameter changed in an optimized run.
    fixed = profile.fixed[0]
    value = getattr(profile.hyperparameters(), fixed)
    changed = value + 1 if isinstance(value, int) else value * 10
    with pytest.raises(GuardError, match=f"--{fixed} .* is not allowed in an optimized run under rules {name}"):
        guard.check(optimized(name).replace(hyperparameters={fixed: changed}))
    # A precision the baseline may not compute in.
    refused = next(p for p in ("fp32", "fp16", "bf16") if p not in profile.precision["baseline"]) \
        if len(profile.precision["baseline"]) < 3 else None
    if refused is not None:
        with pytest.raises(GuardError, match=f"--precision {refused} is not allowed in a baseline run"):
            guard.check(baseline(name).replace(optimizations={"precision": refused}))
    # The global batch: the profile's fixed one, or the baseline's local batch x ranks.
    if profile.global_batch_size is not None:
        with pytest.raises(GuardError, match=f"fixes the global batch at {profile.global_batch_size}"):
            guard.check(baseline(name).replace(run={"global_batch_size": profile.global_batch_size // 2}))
    else:
        local = profile.baseline["local_batch_size"]
        config = baseline(name).replace(run={"global_batch_size": local * 4})
        assert guard.resolve_global_batch(config, 4).hyperparameters.local_batch_size == local
        with pytest.raises(GuardError, match=f"keeps local batch {local}"):
            guard.resolve_global_batch(config, 2)


def test_per_step_logging_only_where_the_profile_allows_it():
    with pytest.raises(GuardError, match="--logging_frequency 1 is not allowed in a baseline run"):
        guard.check(baseline().replace(hyperparameters={"logging_frequency": 1}))
    # esif-2026-05 Scenario 1 times steps with per-step logging, baseline runs included.
    step_timing = baseline("esif-2026-05").replace(hyperparameters={"logging_frequency": 1},
                                                   optimizations={"precision": "bf16"})
    guard.check(step_timing)
