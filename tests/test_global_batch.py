"""A fixed global batch (issue 15): ``--global_batch_size G`` becomes the local
batch G / (ranks x accumulation) once the world size is known, refused with one
line where the rules or the arithmetic forbid it."""

from types import SimpleNamespace

import pytest

from fastcam import guard
from fastcam.cli import main
from fastcam.errors import GuardError
from fastcam.train import execution
from fastcam.train.cli import parse_train_config
from fastcam.train.plan import resolve_plan


def scenario_2(mode: str, *extra: str):
    return parse_train_config(["--rules", "esif-2026-05", "--mode", mode, "--device", "cpu",
                               "--global_batch_size", "1024", *extra])


def ranks(world_size: int, rank: int = 0):
    return SimpleNamespace(world_size=world_size, rank=rank, local_rank=rank, local_size=world_size)


@pytest.mark.parametrize("mode", ["baseline", "ported", "optimized"])
@pytest.mark.parametrize("world_size, local", [(1, 1024), (2, 512), (4, 256)])
def test_scenario_2_at_global_batch_1024_on_1_2_and_4_ranks(mode, world_size, local, random_dataset,
                                                            monkeypatch):
    monkeypatch.setattr(execution, "auto_precision", lambda device: "bf16")  # an AMP-capable device
    config = scenario_2(mode)
    guard.check(config)  # before wire-up: G is the profile's
    plan = resolve_plan(config, ranks(world_size), data_dir=random_dataset)
    assert plan.hyperparameters.local_batch_size == local
    assert plan.global_batch_size == 1024 and plan.config.run.global_batch_size == 1024
    assert config.hyperparameters.local_batch_size == 8  # the config itself is frozen, not changed


def test_the_profiles_fixed_global_batch_is_enforced_before_wire_up(monkeypatch):
    monkeypatch.setattr(execution, "auto_precision", lambda device: "bf16")
    with pytest.raises(GuardError, match="--global_batch_size 512 is not allowed under rules esif-2026-05: "
                                         "it fixes the global batch at 1024"):
        guard.check(parse_train_config(["--rules", "esif-2026-05", "--mode", "optimized",
                                        "--global_batch_size", "512"]))
    with pytest.raises(GuardError, match="does not divide over 3 ranks"):
        guard.resolve_global_batch(scenario_2("optimized"), 3)


def test_a_run_type_with_a_fixed_local_batch_takes_only_that_batch_times_the_ranks():
    baseline = parse_train_config(["--mode", "baseline", "--global_batch_size", "16"])
    assert guard.resolve_global_batch(baseline, 2).hyperparameters.local_batch_size == 8
    with pytest.raises(GuardError, match=r"gives local batch 4 on 4 ranks; a baseline run under rules "
                                         r"esif-2025-12 keeps local batch 8 \(global batch 32 here\)"):
        guard.resolve_global_batch(baseline, 4)
    # An optimized run under the default rules may change the local batch: it follows G.
    optimized = parse_train_config(["--mode", "optimized", "--global_batch_size", "64"])
    assert guard.resolve_global_batch(optimized, 4).hyperparameters.local_batch_size == 16


def test_global_and_local_batch_together_are_refused():
    config = parse_train_config(["--mode", "optimized", "--global_batch_size", "64", "--local_batch_size", "4"])
    with pytest.raises(GuardError, match="--global_batch_size 64 and --local_batch_size 4 both set the batch"):
        guard.check(config)


def test_open_division_divides_over_ranks_and_accumulation():
    config = parse_train_config(["--mode", "optimized", "--open-division", "--global_batch_size", "64",
                                 "--gradient_accumulation_frequency", "2"])
    assert guard.resolve_global_batch(config, 4).hyperparameters.local_batch_size == 8
    with pytest.raises(GuardError, match="does not divide over 3 ranks x 2 accumulation steps"):
        guard.resolve_global_batch(config, 3)


def test_cli_refuses_a_wrong_global_batch_with_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--rules", "esif-2026-05", "--mode", "optimized", "--global_batch_size", "1000",
               "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fixes the global batch at 1024" in err[0]
    assert not out.exists()
