"""`fastcam train` flags -> config, YAML round trip, and the guard at the CLI."""

import subprocess
import sys

import pytest

from fastcam import config as cfg
from fastcam import guard
from fastcam.cli import main
from fastcam.errors import ConfigError, GuardError
from fastcam.train.cli import parse_schedule, parse_train_config

PUBLISHED_BASELINE = (
    "--wireup_method nccl-slurm-pmi --run_tag deepcam-baseline --data_dir_prefix /data --output_dir /out "
    "--max_inter_threads 4 --model_prefix classifier --optimizer AdamW --start_lr 1e-3 "
    "--lr_schedule type=multistep,milestones=1200,decay_rate=0.5 --lr_warmup_steps 0 --lr_warmup_factor 0 "
    "--weight_decay 1e-2 --logging_frequency 0 --save_frequency 400 --max_epochs 200 --local_batch_size 8"
).split()


def test_published_baseline_arguments_yield_the_baseline_config(capsys):
    config = parse_train_config(["--mode", "baseline", *PUBLISHED_BASELINE])
    assert "lr_warmup_factor 0 has no effect" in capsys.readouterr().err
    assert config.hyperparameters == cfg.baseline().hyperparameters
    assert config.optimizations == cfg.baseline().optimizations
    assert config.hyperparameters.lr_warmup_factor == 1.0
    run = config.run
    assert (run.wireup_method, run.run_tag, run.data_dir_prefix, run.output_dir, run.model_prefix) == (
        "nccl-slurm-pmi", "deepcam-baseline", "/data", "/out", "classifier")
    guard.check(config)


def test_dashed_aliases_and_schedule_parsing():
    config = parse_train_config(["--mode", "optimized", "--start-lr", "0.002",
                                 "--lr-schedule", "type=cosine,t_max=500,eta_min=1e-5"])
    hp = config.hyperparameters
    assert hp.start_lr == 0.002
    assert hp.lr_schedule.as_dict() == {"type": "cosine_annealing", "t_max": 500, "eta_min": 1e-5}
    assert parse_schedule("type=multistep,milestones=800 1600,decay_rate=0.1")["milestones"] == [800, 1600]


def test_optimized_recipe_is_nvidia_global_batch_128():
    hp = cfg.optimized().hyperparameters
    assert (hp.optimizer, hp.start_lr, hp.weight_decay, hp.lr_warmup_steps) == ("LAMB", 0.00155, 0.01, 0)
    assert hp.lr_schedule.as_dict() == {"type": "cosine_annealing", "t_max": 9000, "eta_min": 0.0}


def test_yaml_round_trip_and_flags_override_the_file(tmp_path):
    original = parse_train_config(["--mode", "optimized", "--start_lr", "0.004", "--seed", "9",
                                   "--lr_warmup_steps", "100", "--lr_warmup_factor", "2"])
    path = tmp_path / "best.yaml"
    original.to_yaml(path)
    assert cfg.Config.from_yaml(path) == original
    replay = parse_train_config(["--config", str(path)])
    assert replay == original
    overridden = parse_train_config(["--config", str(path), "--start_lr", "0.003", "--run_tag", "again"])
    assert overridden.hyperparameters.start_lr == 0.003 and overridden.run.run_tag == "again"
    assert overridden.hyperparameters.lr_warmup_steps == 100  # the rest still from the file


def test_bad_config_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hyperparameters:\n  start_lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.Config.from_yaml(bad)
    bad.write_text("hyperparameters:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        cfg.Config.from_yaml(bad)
    bad.write_text("hyperparameters:\n  local_batch_size: eight\n")
    with pytest.raises(ConfigError, match="local_batch_size"):
        cfg.Config.from_yaml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.Config.from_yaml(tmp_path / "missing.yaml")
    bad.write_text("hyperparameters:\n  local_batch_size: null\n")
    with pytest.raises(ConfigError, match="local_batch_size must not be null"):
        cfg.Config.from_yaml(bad)
    bad.write_text("run:\n  seed: null\n  data_dir_prefix: null\n")  # fields that may be unset
    assert cfg.Config.from_yaml(bad).run.seed is None


def test_config_and_wire_up_agree_on_the_methods():
    from fastcam import distributed

    assert set(cfg.WIREUP_METHODS) == set(distributed.METHODS)


@pytest.mark.parametrize("flag,value,required", [
    ("--save_frequency", "10", "400"),
    ("--gradient_accumulation_frequency", "2", "1"),
    ("--logging_frequency", "5", "0"),
    ("--batchnorm_group_size", "4", "1"),
])
def test_guard_refuses_fixed_hyperparameters_in_optimized_mode(tmp_path, capsys, flag, value, required):
    out = tmp_path / "out"
    rc = main(["train", "--mode", "optimized", "--output_dir", str(out), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and flag in err[0] and value in err[0] and f"requires {required}" in err[0]
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize("args", [
    ["--start_lr", "0.002"],
    ["--optimizer", "LAMB"],
    ["--local_batch_size", "4"],
    ["--lr_schedule", "type=multistep,milestones=800,decay_rate=0.5"],
    ["--weight_decay", "0"],
    ["--precision", "bf16"],
    ["--channels-last"],
])
def test_guard_refuses_baseline_changes(tmp_path, capsys, args):
    out = tmp_path / "out"
    rc = main(["train", "--mode", "baseline", "--output_dir", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not allowed in a baseline run" in err[0]
    assert not out.exists()


def test_baseline_allows_trajectory_neutral_settings():
    config = parse_train_config(["--mode", "baseline", "--seed", "3", "--max_epochs", "5", "--target_iou", "0.5",
                                 "--max_inter_threads", "16", "--device", "cpu", "--wireup_method", "nccl-slurm"])
    guard.check(config)


def test_optimized_allows_mutable_and_open_division_allows_anything():
    guard.check(parse_train_config(["--mode", "optimized", "--optimizer", "AdamW", "--start_lr", "0.01",
                                    "--local_batch_size", "2", "--lr_warmup_steps", "50",
                                    "--lr_warmup_factor", "4", "--weight_decay", "0.1"]))
    anything = parse_train_config(["--mode", "baseline", "--open-division", "--save_frequency", "1",
                                   "--start_lr", "0.5"])
    guard.check(anything)
    with pytest.raises(GuardError, match="decay_rate"):
        guard.check(parse_train_config(["--mode", "optimized", "--lr_schedule",
                                        "type=multistep,milestones=10,decay_rate=2"]))


def test_guard_vets_tuning_names():
    guard.check_name("start_lr")
    guard.check_name("lr_schedule.t_max")
    for fixed in ("save_frequency", "batchnorm_group_size", "optimizer_betas", "channels"):
        with pytest.raises(GuardError, match="fixed"):
            guard.check_name(fixed)


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastcam.cli", "train", "--mode", "optimized",
                           "--save_frequency", "1", "--output_dir", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
