"""`fastcam tune`: the vetted space, guard-checked trials, pruning, storage, workers, results.

The fast tests use real Optuna studies (in memory or a real journal file)
without training. The slow ones run `fastcam tune` for real on a tiny
synthetic data set (8 train / 2 validation samples at 32 x 48, one epoch per
trial): one end to end through the CLI on the reference network, and the
study mechanics (workers sharing a study, a killed worker) as separate
processes whose trials train a one-layer network through the same
``fastcam.train.train`` (``run_tune(..., model_factory=...)``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from conftest import small_network
from fastcam import guard, schema
from fastcam.cli import build_parser, main
from fastcam.config import Config, Hyperparameters, baseline, optimized
from fastcam.errors import ConfigError, FastcamError, GuardError
from fastcam.train import EpochRecord, trainer
from fastcam.train.cli import parse_train_config
from fastcam.tuning import heartbeat, objective, params
from fastcam.tuning import space as sp
from fastcam.tuning import study as st
from fastcam.tuning.cli import worker_device

REFERENCE = sp.RunScale(global_batch=128, steps_per_epoch=947)
SMALL = sp.RunScale(global_batch=8, steps_per_epoch=125)  # 1000 samples at local batch 8


def _space(parameters: dict, **reference) -> sp.SearchSpace:
    return sp.space_from_dict({"reference": reference or {"global_batch_size": 128, "train_samples": 121266},
                               "parameters": parameters}, source="test space")


# -- the space ---------------------------------------------------------------------
def test_default_space_is_vetted_and_scales_with_batch_and_epoch_length():
    space = sp.load_space()
    assert {"optimizer", "start_lr", "lr_schedule.type", "lr_schedule.t_max", "max_inter_threads"} <= set(space.params)
    at_reference = sp.resolve(space, REFERENCE)
    written = space.params
    assert at_reference["start_lr"].low == pytest.approx(written["start_lr"].low)
    assert at_reference["lr_schedule.t_max"].low == round(written["lr_schedule.t_max"].low * 947)
    four_times = sp.resolve(space, sp.RunScale(global_batch=512, steps_per_epoch=236))
    assert four_times["start_lr"].high == pytest.approx(2 * written["start_lr"].high)  # sqrt(512 / 128)
    assert four_times["lr_schedule.t_max"].high == round(written["lr_schedule.t_max"].high * 236)
    assert four_times["weight_decay"] == at_reference["weight_decay"]  # not scaled


@pytest.mark.parametrize("parameters, error, words", [
    ({"save_frequency": {"choices": [1]}}, GuardError, "save_frequency is fixed"),
    ({"optimizer_betas": {"low": 0.8, "high": 0.9}}, GuardError, "optimizer_betas is fixed"),
    ({"lr_schedule.decay_rate": {"low": 0.1, "high": 1.5}}, GuardError, "must be <= 1"),
    ({"lr_warmup_factor": {"low": 0.5, "high": 2.0}}, GuardError, "must be >= 1"),
    ({"optimizer": {"choices": ["SGD"]}}, GuardError, "SGD"),
    ({"start_lr": {"low": 0.0, "high": 1.0}}, GuardError, "must be > 0"),
    ({"start_lr": {"low": 1e-3, "high": 1e-4}}, ConfigError, "above high"),
    ({"start_lr": {"low": 1e-3}}, ConfigError, "both 'low' and 'high'"),
    ({"start_lr": {"low": 1e-4, "high": 1e-3, "step": 2}}, ConfigError, "unknown key"),
    ({"lr_schedule.bogus": {"low": 1, "high": 2}}, ConfigError, "not a tunable parameter"),
    ({"weight_decay": {"low": 0.0, "high": 0.1, "log": True}}, ConfigError, "log-scale"),
    ({"lr_schedule.milestones": {"choices": [0]}}, GuardError, "increasing positive steps"),  # the config's rule
    ({"lr_schedule.t_max": {"low": 1, "high": 2, "unit": "epochs", "scale": "sqrt_batch"}}, ConfigError,
     "sqrt_batch only for real values"),
    ({"start_lr": {"low": 1e-4, "high": 1e-3, "unit": "epochs"}}, ConfigError, "epochs only for step counts"),
    ({"optimizer": {"low": 1, "high": 2}}, ConfigError, "takes 'choices'"),
])
def test_a_space_outside_the_rules_is_refused(parameters, error, words):
    with pytest.raises(error, match=words):
        _space(parameters)


def test_choices_are_held_as_the_config_spells_them():
    space = _space({"optimizer": {"choices": ["lamb", "AdamW"]}, "lr_schedule.type": {"choices": ["cosine"]},
                    "max_inter_threads": {"choices": [2.0]}})
    assert space.params["optimizer"].choices == ("LAMB", "AdamW")
    assert space.params["lr_schedule.type"].choices == ("cosine_annealing",)
    threads = space.params["max_inter_threads"].choices
    assert threads == (2,) and isinstance(threads[0], int)


def test_cli_refuses_a_space_naming_a_fixed_hyperparameter_before_any_trial(tmp_path, capsys):
    bad = tmp_path / "space.yaml"
    bad.write_text(yaml.safe_dump({"parameters": {"start_lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                  "gradient_accumulation_frequency": {"choices": [1, 2]}}}))
    out = tmp_path / "out"
    code = main(["tune", "--space", str(bad), "--output_dir", str(out), "--trials", "2",
                 "--data_dir_prefix", str(tmp_path / "no-data-needed")])
    assert code == 2
    assert "gradient_accumulation_frequency is fixed by the benchmark" in capsys.readouterr().err
    assert not out.exists()  # no journal, no trial log


# -- trial parameters ---------------------------------------------------------------
def test_every_sampled_trial_is_a_compliant_optimized_run():
    resolved = sp.resolve(sp.load_space(), SMALL)
    base = optimized()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    fixed_reference = baseline().hyperparameters
    fixed = [name for name, p in schema.params(Hyperparameters) if p.rule == "fixed"]
    assert "gradient_accumulation_frequency" in fixed
    seen_types = set()
    for number in range(60):
        trial = study.ask()
        config = objective.trial_config(base, params.suggest(trial, resolved, base), number)
        guard.check(config)
        hp = config.hyperparameters
        for name in fixed:
            assert getattr(hp, name) == getattr(fixed_reference, name), name
        schedule = hp.lr_schedule.as_dict()
        seen_types.add(schedule["type"])
        if schedule["type"] == "multistep":
            assert schedule["milestones"] == sorted(set(schedule["milestones"])) and schedule["decay_rate"] <= 1
            assert set(trial.params) >= {"lr_schedule.milestones.count", "lr_schedule.milestones.1"}
            assert "lr_schedule.t_max" not in trial.params
        else:
            assert {"lr_schedule.t_max", "lr_schedule.eta_min"} <= set(trial.params)
            assert not any(k.startswith("lr_schedule.milestones") for k in trial.params)
        assert resolved["start_lr"].low <= hp.start_lr <= resolved["start_lr"].high
        assert hp.lr_warmup_factor >= 1 and config.run.max_inter_threads in (2, 4, 8)
        assert (config.run.run_tag, config.run.wireup_method) == (f"trial-{number:04d}", "single")
        study.tell(trial, 1.0)
    assert seen_types == {"multistep", "cosine_annealing"}


def test_recipes_are_enqueued_exactly_as_published_at_any_scale():
    space = sp.load_space()
    base = optimized()
    for scale in (REFERENCE, SMALL):
        values = params.recipe_params(baseline(), sp.resolve(space, scale), base)
        assert values == {"optimizer": "AdamW", "start_lr": 1e-3, "weight_decay": 1e-2, "lr_warmup_steps": 0,
                          "lr_warmup_factor": 1.0, "max_inter_threads": 4, "lr_schedule.type": "multistep",
                          "lr_schedule.milestones.count": 1, "lr_schedule.milestones.1": 1200,
                          "lr_schedule.decay_rate": 0.5}
    values = params.recipe_params(optimized(), sp.resolve(space, SMALL), base)
    assert values["optimizer"] == "LAMB" and values["lr_schedule.type"] == "cosine_annealing"
    assert (values["lr_schedule.t_max"], values["start_lr"]) == (9000, 0.00155)
    replay = params.apply(base, values).hyperparameters
    assert replay.lr_schedule.as_dict() == optimized().hyperparameters.lr_schedule.as_dict()
    assert replay.start_lr == 0.00155


def test_pinned_flags_remove_parameters_from_the_printed_space(tune_data, tmp_path, capsys):
    flags = _flags(tune_data, tmp_path / "out", 1, "--lr_schedule", "type=multistep,milestones=3,decay_rate=0.5",
                   "--start_lr", "0.002", "--print-config")
    assert main(["tune", *flags]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["base"]["hyperparameters"]["start_lr"] == 0.002
    assert printed["base"]["hyperparameters"]["lr_schedule"]["milestones"] == [3]
    searched = set(printed["space"])
    assert not any(n.startswith("lr_schedule") for n in searched) and "start_lr" not in searched
    # max_inter_threads and local_batch_size are given by _flags: pinned too; the rest is searched.
    assert searched == {"optimizer", "weight_decay", "lr_warmup_steps", "lr_warmup_factor"}
    # 8 training samples at local batch 4: 2 steps per epoch, so one epoch of warmup is 2 steps.
    assert printed["space"]["lr_warmup_steps"] == {"low": 0, "high": 2, "log": False}


# -- objective and pruning -------------------------------------------------------------
def _result(reached, best_iou, epochs, minutes_to_target=None, total_minutes=1.0, train_loss=0.5):
    history = [_record(e, best_iou, train_loss) for e in range(1, epochs + 1)]
    return SimpleNamespace(reached=reached, best_iou=best_iou, epochs=epochs, minutes_to_target=minutes_to_target,
                           total_minutes=total_minutes, history=history)


def test_missing_the_target_is_penalised_but_still_ranked_by_accuracy():
    reached = objective.objective_values(_result(True, 0.83, 10, minutes_to_target=10.0, total_minutes=10.0),
                                         0.82, 10, "time-epochs")
    assert reached == [10.0, 10.0]
    close, far = (objective.objective_values(_result(False, iou, 10, total_minutes=10.0), 0.82, 10, "time-epochs")
                  for iou in (0.80, 0.40))
    assert reached[0] < close[0] < far[0] and reached[1] < close[1] < far[1]
    nan = objective.objective_values(_result(False, float("nan"), 3, total_minutes=3.0), 0.82, 10, "time")
    assert nan == [pytest.approx(2 * objective.PENALTY_MINUTES)]
    # A fast trial that missed ranks below a slow one that reached the target (the speed of the failure is moot).
    slow_success = objective.objective_values(_result(True, 0.83, 10, minutes_to_target=500.0, total_minutes=500.0),
                                              0.82, 10, "time")
    fast_failure = objective.objective_values(_result(False, 0.81, 10, total_minutes=1.0), 0.82, 10, "time")
    assert slow_success[0] < fast_failure[0]
    # A NaN network predicts background everywhere, which can score above a low target: still a failure.
    diverged = objective.objective_values(_result(True, 0.9, 2, minutes_to_target=2.0, total_minutes=2.0,
                                                  train_loss=float("nan")), 0.82, 10, "time-epochs")
    assert diverged == [pytest.approx(2 * objective.PENALTY_MINUTES), pytest.approx(20.0)]


def _record(epoch, eval_iou, train_loss=0.5):
    return EpochRecord(epoch=epoch, step=epoch * 4, train_loss=train_loss, train_iou=0.5, eval_iou=eval_iou,
                       eval_loss=0.5, samples_per_s=1.0, elapsed_s=1.0, eval_samples=2)


def test_pruning_callback_reports_the_error_and_prunes_worse_or_diverged_trials():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    objective.PruningCallback(first, prune=True).on_epoch_end(None, _record(1, 0.6))
    assert first.study.trials[0].intermediate_values == {1: pytest.approx(0.4)}
    study.tell(first, 1.0)
    objective.PruningCallback(study.ask(), prune=True).on_epoch_end(None, _record(1, 0.7))  # better: continues
    with pytest.raises(optuna.TrialPruned):
        objective.PruningCallback(study.ask(), prune=True).on_epoch_end(None, _record(1, 0.5))
    with pytest.raises(optuna.TrialPruned):  # diverged: high IoU of an all-background prediction does not count
        objective.PruningCallback(study.ask(), prune=True).on_epoch_end(None, _record(1, 0.9, train_loss=float("nan")))


# -- storage and heartbeats ----------------------------------------------------------------
def test_study_is_created_once_then_joined_and_a_different_space_is_refused(tmp_path):
    storage = st.open_storage(None, tmp_path)
    args = (["minimize"], None, None)
    study, created = st.open_study("s", storage, args[0], None, None, {"start_lr": {"low": 1, "high": 2}})
    joined, created_again = st.open_study("s", st.open_storage(None, tmp_path), args[0], None, None,
                                          {"start_lr": {"low": 1, "high": 2}})
    assert (created, created_again) == (True, False) and (tmp_path / st.JOURNAL_NAME).is_file()
    with pytest.raises(ConfigError, match="different search space"):
        st.open_study("s", storage, ["minimize"], None, None, {"start_lr": {"low": 1, "high": 3}})
    with pytest.raises(ConfigError, match="objective"):
        st.open_study("s", storage, ["minimize", "minimize"], None, None, {"start_lr": {"low": 1, "high": 2}})


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_without_heartbeat_is_failed_and_retried_once(tmp_path, kind):
    url = None if kind == "journal" else f"sqlite:///{tmp_path / 'tune.db'}"
    study = optuna.create_study(storage=st.open_storage(url, tmp_path), study_name="hb")
    stale, alive = study.ask(), study.ask()
    stale.suggest_float("start_lr", 1e-4, 1e-2)
    alive.suggest_float("start_lr", 1e-4, 1e-2)
    stale.set_user_attr(heartbeat.HEARTBEAT_ATTR, time.time() - 100)
    entered = time.time()
    with heartbeat.Heartbeat(alive, interval=0.05):
        time.sleep(0.3)
        failed = heartbeat.fail_stale_trials(study, grace=10, echo=lambda _m: None)
        again = heartbeat.fail_stale_trials(study, grace=10, echo=lambda _m: None)  # nothing left to fail
    assert (failed, again) == ([stale.number], [])
    assert study.trials[alive.number].user_attrs[heartbeat.HEARTBEAT_ATTR] > entered + 0.1  # it kept beating
    states = {t.number: t.state for t in study.trials}
    assert states[stale.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    retry = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    # Queued as fixed parameters, as enqueue_trial stores them (not re-validated against the ranges).
    assert len(retry) == 1 and retry[0].system_attrs["fixed_params"] == stale.params
    assert retry[0].system_attrs["failed_trial"] == stale.number
    assert heartbeat.HEARTBEAT_ATTR not in retry[0].user_attrs  # the retry starts without the old beat


def test_worker_survives_out_of_memory_trials_but_gives_up_after_several_in_a_row(tmp_path):
    import torch

    study = optuna.create_study(storage=st.open_storage(None, tmp_path), study_name="oom")
    lines: list[str] = []

    def sometimes_out_of_memory(trial):
        if trial.suggest_int("local_batch_size", 1, 64) > 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return 1.0

    for number in range(6):  # batch sizes 8, 48, 16, 40, 24, 4: two failures, never three in a row
        study.enqueue_trial({"local_batch_size": (8, 48, 16, 40, 24, 4)[number]})
    ran = st.run_worker(study, sometimes_out_of_memory, n_trials=4, grace=60, echo=lines.append,
                        catch=(torch.cuda.OutOfMemoryError,))
    assert ran == 6 and _states(study) == {"COMPLETE": 4, "FAIL": 2}
    assert any("trial 1: failed" in line and "out of memory" in line for line in lines)
    with pytest.raises(FastcamError, match="3 trials in a row failed.*out of memory"):
        for _ in range(3):
            study.enqueue_trial({"local_batch_size": 64})
        st.run_worker(study, sometimes_out_of_memory, n_trials=10, grace=60, echo=lines.append,
                      catch=(torch.cuda.OutOfMemoryError,))
    with pytest.raises(ValueError):  # anything else stops the worker at once
        st.run_worker(study, lambda t: int("x"), n_trials=10, grace=60, echo=lines.append)


def test_worker_device_picks_the_local_gpu_when_several_are_visible():
    assert worker_device("auto", {"SLURM_LOCALID": "3"}, cuda_count=4) == "cuda:3"
    assert worker_device("cuda", {"LOCAL_RANK": "5"}, cuda_count=4) == "cuda:1"
    assert worker_device("auto", {"SLURM_LOCALID": "3"}, cuda_count=1) == "auto"  # srun --gpus-per-task=1
    assert worker_device("cuda:2", {"SLURM_LOCALID": "0"}, cuda_count=4) == "cuda:2"
    assert worker_device("cpu", {}, cuda_count=0) == "cpu"


# -- real tuning runs ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tune_data(tmp_path_factory):
    from fastcam.data.synth import synthesize

    root = tmp_path_factory.mktemp("tune") / "data"
    synthesize(root, 8, 2, height=32, width=48, seed=7, workers=1, progress=False)
    return root


def _flags(data: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return ["--data_dir_prefix", str(data), "--output_dir", str(out), "--trials", str(trials),
            "--local_batch_size", "4", "--max_inter_threads", "0", "--device", "cpu", "--loader", "hdf5",
            "--max_epochs", "1", "--target_iou", "0.05", "--seed", "5", *extra]


def _load(out: Path, name: str = "deepcam") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=st.open_storage(None, out))


def _states(study: optuna.Study) -> dict[str, int]:
    names = [t.state.name for t in study.trials]
    return {n: names.count(n) for n in set(names)}


@pytest.mark.slow
def test_tune_prunes_writes_results_and_best_yaml_replays(tune_data, tmp_path, capsys, monkeypatch):
    # End to end through the command line, with the small test network in place of the reference one
    # (the study, the pruning and the replay are under test, not the network). The recipes (enqueued
    # first, their learning rates kept although outside this range) complete; the sampled trial has a
    # learning rate that makes the loss NaN in its first epoch and must be pruned.
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"parameters": {
        "optimizer": {"choices": ["Adam", "AdamW"]},
        "start_lr": {"low": 1e29, "high": 1e30, "log": True},
        "weight_decay": {"low": 1e-3, "high": 1e-1, "log": True}}}))
    out = tmp_path / "out"
    monkeypatch.setattr(trainer, "build_model", lambda *args: small_network())
    assert main(["tune", *_flags(tune_data, out, 3, "--space", str(space), "--pruner_startup_trials", "2",
                                 "--pruner_warmup_epochs", "0")]) == 0
    printed = capsys.readouterr().out
    study = _load(out)
    assert _states(study) == {"COMPLETE": 2, "PRUNED": 1}, printed
    assert [t.user_attrs["enqueued"] for t in study.trials[:2]] == ["baseline", "optimized"]
    assert study.trials[2].params["start_lr"] >= 1e29 and study.trials[2].state.name == "PRUNED"
    # The diverged trial is stopped inside its first epoch, by the trainer's non-finite loss check.
    assert "trial 2: pruned, diverged (non-finite training loss" in printed and "trial 0: start" in printed
    for number in range(3):
        assert (out / "logs" / f"trial-{number:04d}.log").is_file()
    assert not list(out.glob("*.cpt"))  # trial checkpoints are not kept
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("number,state,value,")
    assert (out / "plots" / "history.png").stat().st_size > 0 and (out / "plots" / "parallel.png").is_file()
    assert (out / "plots" / "importances.png").is_file() or "plot importances: skipped" in printed

    best = out / "best.yaml"
    replay = parse_train_config(["--config", str(best)])
    assert replay.mode == "optimized" and not replay.open_division
    guard.check(replay)
    hp = replay.hyperparameters
    assert (hp.optimizer, hp.start_lr, hp.weight_decay) == tuple(
        study.best_params[k] for k in ("optimizer", "start_lr", "weight_decay"))
    assert hp.local_batch_size == 4 and replay.run.max_inter_threads == 0
    assert Config.from_yaml(best) == replay

    from fastcam.compliance import failed_keys, run_checker

    assert main(["train", "--config", str(best), "--run_tag", "replay"]) == 0
    result = run_checker(out / "logs" / "replay.log")
    assert failed_keys(result) <= {"train_samples", "eval_samples", "eval_accuracy"}, result.output


# A tuning worker whose trials train a one-layer network (the loop only needs N x 3 x H x W logits) through
# the same run_tune and train(); argv[1] is a delay per forward pass in seconds: long enough that two workers
# started together both get trials, or an hour for a worker that must be killed mid-trial.
WORKER = """
import sys, time, torch
from fastcam.cli import build_parser
from fastcam.tuning.cli import run_tune

class Net(torch.nn.Conv2d):
    def forward(self, x):
        time.sleep(float(sys.argv[1]))
        return super().forward(x)

args = build_parser().parse_args(["tune", *sys.argv[2:]])
sys.exit(run_tune(args, model_factory=lambda: Net(16, 3, 1)))
"""


def _tune_process(data: Path, out: Path, trials: int, *extra: str, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(delay), *_flags(data, out, trials, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
def test_two_workers_started_at_once_share_one_study(tune_data, tmp_path):
    out = tmp_path / "out"
    workers = [_tune_process(tune_data, out, 4, delay=0.3) for _ in range(2)]
    outputs = [_finish(w) for w in workers]
    study = _load(out)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 4, outputs
    assert len({t.user_attrs["worker"] for t in finished}) == 2, outputs  # both contributed
    assert len({t.number for t in finished}) == len(finished)
    assert sum("(new)" in o for o in outputs) == 1 and sum("(joined)" in o for o in outputs) == 1
    assert [t.user_attrs.get("enqueued") for t in study.trials].count("baseline") == 1


@pytest.mark.slow
def test_a_killed_worker_leaves_a_failed_trial_that_a_rerun_retries(tune_data, tmp_path, capsys):
    out = tmp_path / "out"
    beat = ["--heartbeat_interval", "0.5", "--grace_period", "2"]
    victim = _tune_process(tune_data, out, 3, *beat, delay=3600)  # never finishes its first trial
    log = out / "logs" / "trial-0000.log"
    deadline = time.monotonic() + 120
    while not log.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim.poll() is None, victim.communicate()[0]  # still mid-trial
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    killed = _load(out).trials[0]
    assert killed.state.name == "RUNNING"  # nobody marked it: the worker died
    time.sleep(2.5)  # let the grace period pass

    import torch

    from fastcam.tuning.cli import run_tune

    # The rerun in this process (no second interpreter start-up), with the same one-layer network.
    args = build_parser().parse_args(["tune", *_flags(tune_data, out, 3, *beat)])
    assert run_tune(args, model_factory=lambda: torch.nn.Conv2d(16, 3, 1)) == 0
    output = capsys.readouterr().out
    study = _load(out)
    assert "trial 0: no heartbeat" in output
    assert study.trials[0].state.name == "FAIL"
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    retries = [t for t in finished if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1 and retries[0].params == killed.params


@pytest.mark.parametrize("name", ["median", "hyperband", "none"])
def test_each_pruner_option_prunes_on_reported_epochs(name):
    from fastcam.tuning.cli import pruner

    args = SimpleNamespace(pruner=name, pruner_startup_trials=1, pruner_warmup_epochs=0)
    # A fixed study name: Hyperband assigns brackets by a hash of the name and the trial number.
    study = optuna.create_study(study_name="pruners", pruner=pruner(args, max_epochs=4),
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def fake_training(trial):  # error falls with epochs; a larger x is a worse trial throughout
        x = trial.suggest_float("x", 0.0, 1.0)
        for epoch in range(1, 5):
            objective.PruningCallback(trial, prune=True).on_epoch_end(None, _record(epoch, 0.5 - 0.4 * x + 0.1 * epoch))
        return x

    study.optimize(fake_training, n_trials=12)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert (len(pruned) > 0) == (name != "none")
    assert all(1 in t.intermediate_values for t in study.trials)


def test_best_trial_is_the_fastest_pareto_optimal_one_and_best_yaml_is_guard_checked(tmp_path):
    from fastcam.tuning import report

    study = optuna.create_study(directions=["minimize", "minimize"])
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    assert report.best_trial(study) is None  # nothing completed yet
    for minutes, epochs, lr in ((5.0, 9.0, 1e-3), (4.0, 12.0, 2e-3), (6.0, 8.0, 3e-3), (7.0, 13.0, 4e-3)):
        study.enqueue_trial({"start_lr": lr})
        trial = study.ask()
        trial.suggest_float("start_lr", 1e-4, 1e-2, log=True)
        study.tell(trial, [minutes, epochs])
    assert report.best_trial(study).params == {"start_lr": 2e-3}
    path = tmp_path / "best.yaml"
    report.write_best(study, optimized(), path)
    assert parse_train_config(["--config", str(path)]).hyperparameters.start_lr == 2e-3
    report.write_csv(study, tmp_path / "trials.csv", "time-epochs")
    assert (tmp_path / "trials.csv").read_text().startswith("number,state,value_minutes,value_epochs,")
