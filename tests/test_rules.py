"""fastcam.rules: the shipped profiles, their strict loader and ``fastcam rules``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from fastcam import config, rules
from fastcam.errors import ConfigError, GuardError
from fastcam.rules import cli as rules_cli

SHIPPED = ("esif-2025-12", "esif-2026-01", "esif-2026-05", "mlperf-hpc-3.0")


# -- the shipped profiles ---------------------------------------------------------
def test_names_lists_the_four_profiles_sorted_with_the_default_among_them():
    assert rules.names() == SHIPPED
    assert rules.DEFAULT == "esif-2025-12"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_profile_loads_and_its_baseline_is_a_valid_recipe(name):
    profile = rules.load(name)
    assert profile.name == name and profile.sources and "baseline" in profile.run_types
    hyper = profile.hyperparameters()
    assert isinstance(hyper, config.Hyperparameters)
    frozen = {k: list(v) if isinstance(v, tuple) else v for k, v in profile.baseline["lr_schedule"].items()}
    assert hyper.lr_schedule.as_dict() == frozen
    assert set(profile.precision) == set(profile.run_types)


def test_default_profile_is_the_december_2025_readme_and_todays_recipe():
    p = rules.load("esif-2025-12")
    b = p.baseline
    assert (b["optimizer"], b["start_lr"], b["weight_decay"], b["local_batch_size"]) == ("AdamW", 1e-3, 1e-2, 8)
    assert dict(b["lr_schedule"]) == {"type": "multistep", "milestones": (1200,), "decay_rate": 0.5}
    # The profile must say what fastcam's built-in baseline recipe does today.
    assert p.hyperparameters() == config.baseline().hyperparameters
    assert p.run_types == ("baseline", "ported", "optimized")
    assert set(p.fixed) == {"save_frequency", "gradient_accumulation_frequency", "logging_frequency",
                            "batchnorm_group_size"}
    assert (p.scales, p.replicates, p.scoring, p.table) == ((1, 2, 4), 1, "single", "esif-2025-12")
    assert p.global_batch_size is None and not p.gradient_accumulation


def test_default_profile_is_fp32_only_for_baseline_and_ported():
    p = rules.load("esif-2025-12")
    for run_type in ("baseline", "ported"):
        assert p.allows_precision(run_type, "fp32")
        assert not p.allows_precision(run_type, "fp16")
        assert not p.allows_precision(run_type, "bf16")
        assert p.allows_stage_dtype(run_type, "fp32") and not p.allows_stage_dtype(run_type, "fp16")
    assert p.allows_precision("optimized", "fp16") and p.allows_precision("optimized", "bf16")
    assert p.allows_stage_dtype("optimized", "fp16")


def test_january_2026_draft_baseline_is_lamb_with_mixed_precision():
    p = rules.load("esif-2026-01")
    b = p.baseline
    assert (b["optimizer"], b["start_lr"], b["weight_decay"], b["lr_warmup_steps"]) == ("LAMB", 1e-3, 0.2, 0)
    assert dict(b["lr_schedule"]) == {"type": "cosine_annealing", "t_max": 9000, "eta_min": 0.0}
    assert p.allows_precision("baseline", "fp16") and p.allows_precision("baseline", "bf16")
    assert not p.allows_precision("baseline", "fp32")
    assert p.staging_allowed
    assert set(p.mutable) >= {"local_batch_size", "optimizer", "start_lr", "lr_schedule", "lr_warmup_steps",
                              "lr_warmup_factor", "weight_decay", "max_inter_threads"}
    assert set(p.fixed) == {"logging_frequency", "batchnorm_group_size"}


def test_may_2026_scenarios_fix_the_global_batch_at_1024():
    p = rules.load("esif-2026-05")
    assert p.global_batch_size == 1024 and not p.gradient_accumulation
    assert (p.scales, p.replicates, p.scoring, p.table) == ((1, 4, 8), 3, "median", "esif-scenarios")
    assert (p.baseline["optimizer"], p.baseline["weight_decay"]) == ("AdamW", 0.2)
    assert p.baseline["lr_schedule"]["type"] == "cosine_annealing"
    assert not p.allows_precision("baseline", "fp32")  # mixed precision is fixed in the baseline
    assert p.per_step_logging and p.staging_allowed
    one, two = p.scenarios["1"], p.scenarios["2"]
    assert (one["metric"], one["scored"], one["convergence"]) == ("median_step_time", False, False)
    assert (two["metric"], two["scored"], two["global_batch_size"]) == ("time_to_target", True, 1024)
    # The local batch follows from the global batch, so it is not separately mutable.
    assert not p.is_mutable("local_batch_size")


def test_mlperf_closed_division_profile():
    import mlperf_logging

    p = rules.load("mlperf-hpc-3.0")
    assert (p.replicates, p.scoring, p.max_unconverged, p.table) == (5, "olympic_mean", 1, "mlperf")
    assert p.run_types == ("baseline", "optimized") and p.gradient_accumulation and p.staging_allowed
    assert p.mutable["optimizer"]["choices"] == ("Adam", "AdamW", "LAMB")
    assert p.mutable["lr_warmup_factor"] == {"min": 1.0}
    assert p.mutable["lr_schedule.decay_rate"] == {"max": 1.0}
    assert "optimizer_eps" in p.fixed and p.baseline["optimizer_eps"] == 1e-6
    assert dict(p.lamb) == {"bias_correction": True, "grad_averaging": True, "max_grad_norm": 1.0}
    # Its baseline is NVIDIA's global-batch-128 configuration, fastcam's optimized recipe.
    assert p.hyperparameters() == config.optimized().hyperparameters
    # The ruleset names a directory of the installed checker's rules.
    checker_rules = Path(mlperf_logging.__file__).parent / "compliance_checker" / f"hpc_{p.mlperf_ruleset}"
    assert (checker_rules / "closed_deepcam.yaml").is_file()


def test_profiles_are_immutable_and_cached():
    p = rules.load("esif-2025-12")
    assert rules.load("esif-2025-12") is p
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "other"
    with pytest.raises(TypeError):
        p.baseline["start_lr"] = 1.0
    with pytest.raises(TypeError):
        p.mutable["start_lr"]["min"] = 1.0
    # hyperparameters() hands out the recipe as a (frozen) config section.
    hyper = p.hyperparameters()
    with pytest.raises(dataclasses.FrozenInstanceError):
        hyper.start_lr = 1.0
    assert hyper.lr_schedule.milestones == p.baseline["lr_schedule"]["milestones"] == (1200,)


def test_unknown_profile_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as err:
        rules.load("esif-2099")
    message = str(err.value)
    assert "\n" not in message and "esif-2099" in message
    assert all(name in message for name in SHIPPED)
    assert err.value.exit_code == 2


def test_allows_precision_refuses_undefined_run_types_and_unresolved_precision():
    p = rules.load("mlperf-hpc-3.0")
    with pytest.raises(ConfigError, match="run type 'ported' is not defined by rules mlperf-hpc-3.0"):
        p.allows_precision("ported", "fp32")
    with pytest.raises(ConfigError, match="resolve 'auto' first"):
        p.allows_precision("optimized", "auto")
    with pytest.raises(ConfigError, match="stage dtype"):
        p.allows_stage_dtype("optimized", "int8")


def test_check_value_applies_the_profile_constraints():
    p = rules.load("esif-2025-12")
    p.check_value("start_lr", 0.004)
    p.check_value("optimizer", "LAMB")
    p.check_value("lr_schedule.decay_rate", 0.1)
    with pytest.raises(GuardError, match="start_lr -1 .* must be >= 0"):
        p.check_value("start_lr", -1.0)
    with pytest.raises(GuardError, match="one of Adam, AdamW, LAMB"):
        p.check_value("optimizer", "SGD")
    with pytest.raises(GuardError, match="must be <= 1"):
        p.check_value("lr_schedule.decay_rate", 2.0)
    with pytest.raises(GuardError, match="batchnorm_group_size is fixed under rules esif-2025-12"):
        p.check_value("batchnorm_group_size", 2)
    rules.load("mlperf-hpc-3.0").check_value("batchnorm_group_size", 4)  # mutable in MLPerf closed


# -- malformed profile files ------------------------------------------------------
def _shipped_data(name: str = "esif-2025-12") -> dict:
    return yaml.safe_load((rules.profiles_dir() / f"{name}.yaml").read_text())


def _write(tmp_path: Path, data, name: str = "esif-2025-12", text: str | None = None) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path


def _set(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split("/")
    for key in parents:
        data = data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()

MALFORMED = [
    # (path in the data, new value, the key the error must name, words it must contain)
    ("colour", "red", "colour", "unknown key"),
    ("replicates", _DELETE, "replicates", "missing"),
    ("replicates", "three", "replicates", "must be an integer"),
    ("replicates", True, "replicates", "must be an integer"),
    ("baseline/start_lr", "1e-3", "baseline.start_lr", "with a dot"),
    ("baseline/momentum", 0.9, "baseline.momentum", "unknown key"),
    ("baseline/lr_warmup_factor", 0.5, "baseline", "lr_warmup_factor must be >= 1"),
    ("baseline/optimizer", "SGD", "baseline", "optimizer must be one of"),
    ("baseline/lr_schedule", {"type": "multistep", "milestones": [1200], "decay_rate": 0.5, "t_max": 9000},
     "baseline.lr_schedule.t_max", "unknown key"),
    ("baseline/lr_schedule", {"type": "step"}, "baseline.lr_schedule.type", "must be one of"),
    ("mutable/momentum", {}, "mutable.momentum", "unknown parameter"),
    ("mutable/start_lr", {"above": 0.0}, "mutable.start_lr.above", "unknown key"),
    ("mutable/start_lr", {"min": 0.1, "max": 0.01}, "mutable.start_lr", "is above max"),
    ("mutable/weight_decay", {"max": 0.001}, "mutable.weight_decay", "baseline value 0.01 breaks"),
    ("mutable/optimizer", {"choices": ["Adam", "SGD"]}, "mutable.optimizer.choices", "'SGD' is not an optimizer"),
    ("mutable/optimizer", {"min": 1}, "mutable.optimizer.min", "not a number"),
    ("mutable/lr_schedule", _DELETE, "mutable.lr_schedule.type", "which is not mutable"),
    ("mutable/local_batch_size", [1, 2], "mutable.local_batch_size", "must be a mapping"),
    ("fixed", ["save_frequency", "start_lr"], "fixed.start_lr", "mutable too"),
    ("fixed", ["save_frequency", "colour"], "fixed[1]", "must be one of"),
    ("precision/optimized", ["fp32", "fp8"], "precision.optimized[1]", "must be one of"),
    ("precision/ported", _DELETE, "precision.ported", "missing"),
    ("run_types", ["optimized"], "run_types", "must include baseline"),
    ("name", "esif-2025-11", "name", "must equal the file name's stem"),
    ("scoring", "olympic_mean", "scoring", "needs replicates >= 3"),
    ("max_unconverged", 1, "max_unconverged", "must be below replicates"),
    ("baseline/gradient_accumulation_frequency", 2, "gradient_accumulation", "is false"),
    ("baseline/logging_frequency", 10, "per_step_logging", "is false"),
    ("scales", [2, 4], "scales", "starting at 1"),
    ("mlperf_ruleset", "3.0", "mlperf_ruleset", "must look like 3.0.0"),
    ("lamb/max_grad_norm", 0.0, "lamb.max_grad_norm", "must be > 0"),
    ("scenarios", {"2": {"title": "x"}}, "scenarios.2.metric", "missing"),
]


@pytest.mark.parametrize("where, value, key, words", MALFORMED, ids=[m[0] + ":" + m[3] for m in MALFORMED])
def test_malformed_profile_is_one_error_naming_file_and_key(tmp_path, where, value, key, words):
    data = _shipped_data()
    _set(data, where, value)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        rules.load_file(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message, message


def test_scenario_profile_must_agree_with_its_scored_scenario(tmp_path):
    data = _shipped_data("esif-2026-05")
    data["scenarios"]["2"]["global_batch_size"] = 512
    with pytest.raises(ConfigError, match=r"scenarios\.2\.global_batch_size: the scored scenario's 512 differs"):
        rules.load_file(_write(tmp_path, data, name="esif-2026-05"))


@pytest.mark.parametrize("text, words", [
    ("baseline: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "(top level): expected a mapping"),
])
def test_file_that_is_not_a_profile_mapping(tmp_path, text, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        rules.load_file(_write(tmp_path, None, text=text))


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read rules profile"):
        rules.load_file(tmp_path / "absent.yaml")


# -- fastcam rules ------------------------------------------------------------------
def _run(argv, capsys) -> str:
    parser = argparse.ArgumentParser(prog="fastcam")
    rules_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_rules_lists_every_profile_as_a_table(capsys):
    out = _run(["rules"], capsys)
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Name | Title | Run types | Precision | Global batch | Replicates | Scoring |")
    body = {row.split(" | ")[0].lstrip("| "): row for row in rows[2:]}  # after the header and --- rows
    assert list(body) == ["esif-2025-12 (default)", *SHIPPED[1:]]
    assert "baseline fp32; ported fp32; optimized fp32/fp16/bf16" in body["esif-2025-12 (default)"]
    assert "| 1024 | 3 | median |" in body["esif-2026-05"]
    assert "| free | 5 | olympic_mean |" in body["mlperf-hpc-3.0"]


def test_rules_name_shows_one_profile(capsys):
    out = _run(["rules", "esif-2025-12"], capsys)
    assert out.startswith("# esif-2025-12 (default): ESIF-HPC-4 DeepCAM, December 2025 README")
    assert "| optimizer | AdamW |" in out
    assert "| lr_schedule | type=multistep, milestones=1200, decay_rate=0.5 |" in out
    assert "| optimizer | one of Adam, AdamW, LAMB |" in out
    assert "| local_batch_size | any valid value |" in out
    assert "| baseline | fp32 | fp32 |" in out and "| optimized | fp32, fp16, bf16 | fp16, fp32 |" in out
    assert "| Node scales | N, 2N, 4N |" in out
    assert "## Sources" in out and "December 2025" in out


def test_rules_json_round_trips_the_profile(capsys):
    listed = json.loads(_run(["rules", "--json"], capsys))
    assert [p["name"] for p in listed] == list(SHIPPED)
    assert [p["default"] for p in listed] == [True, False, False, False]
    one = json.loads(_run(["rules", "esif-2026-05", "--json"], capsys))
    assert one["global_batch_size"] == 1024
    assert one["precision"]["baseline"] == ["fp16", "bf16"]
    assert one["scenarios"]["2"]["metric"] == "time_to_target"
    assert one["baseline"]["lr_schedule"] == {"type": "cosine_annealing", "t_max": 9000, "eta_min": 0.0}


def test_fastcam_rules_unknown_name_exits_2_with_one_line(monkeypatch, capsys):
    from fastcam import cli

    if "fastcam.rules.cli" not in cli.COMMAND_MODULES:  # until the lead registers the command
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "fastcam.rules.cli"))
    assert cli.main(["rules", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("fastcam: error: unknown rules profile 'nope' (known: esif-2025-12, ")


@pytest.mark.parametrize("ranks, local", [(1, 1024), (2, 512), (4, 256)])
def test_scenario_2_global_batch_1024_on_1_2_and_4_ranks(ranks, local):
    p = rules.load("esif-2026-05")
    assert p.local_batch_for(ranks) == local
    assert p.local_batch_for(ranks) * ranks == p.scenarios["2"]["global_batch_size"]


def test_local_batch_for_refuses_what_the_rules_forbid():
    fixed = rules.load("esif-2026-05")
    with pytest.raises(ConfigError, match="global batch 1024 does not divide over 3 ranks"):
        fixed.local_batch_for(3)
    with pytest.raises(ConfigError, match="gradient accumulation is not allowed under rules esif-2026-05"):
        fixed.local_batch_for(4, accumulation=2)
    with pytest.raises(ConfigError, match="global batch 512 is not allowed under rules esif-2026-05: it fixes 1024"):
        fixed.local_batch_for(4, global_batch=512)
    free = rules.load("mlperf-hpc-3.0")
    with pytest.raises(ConfigError, match="do not fix a global batch"):
        free.local_batch_for(4)
    assert free.local_batch_for(16, accumulation=2, global_batch=256) == 8  # MLPerf allows accumulation
