"""A baseline run is the MLCommons reference's run (issue 11): what it logs, where,
and checkpoints the reference's plain ``torch.load`` reads. Data order and LR
schedules are pinned in test_reader.py and test_schedule.py."""

import json

import torch

from conftest import small_network
from fastcam.train import train
from fastcam.train.cli import parse_train_config


def events_of(log):
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in log.read_text().splitlines()]


def run(data, out, *extra):
    # What is logged and stored is the loop's business: a small network suffices.
    return train(parse_train_config(args(data, out, *extra)), model_factory=small_network)


def args(data, out, *extra):
    return ["--mode", "baseline", "--data_dir_prefix", str(data), "--output_dir", str(out),
            "--max_inter_threads", "0", "--device", "cpu", "--seed", "7", "--max_epochs", "1", *extra]


def test_epoch_end_train_loss_is_the_last_batchs_and_the_lr_the_last_step_used(tiny_synthetic, tmp_path):
    quiet = run(tiny_synthetic, tmp_path / "q")
    # Per-step logging is fixed in closed runs; it does not change the trajectory.
    chatty = run(tiny_synthetic, tmp_path / "c", "--open-division", "--logging_frequency", "1")
    logged = [e for e in events_of(quiet.log_path) if e["key"] == "train_loss"]
    per_step = [e for e in events_of(chatty.log_path) if e["key"] == "train_loss"]
    steps = quiet.history[0].step
    assert len(logged) == 1 and logged[0]["metadata"]["step_num"] == steps
    assert [e["metadata"]["step_num"] for e in per_step] == [*range(1, steps + 1), steps]
    last_batch = per_step[-2]["value"]
    assert logged[0]["value"] == last_batch
    mean = sum(e["value"] for e in per_step[:-1]) / steps
    assert abs(mean - last_batch) > 1e-6  # the epoch mean is what used to be logged
    lrs = [e["value"] for e in events_of(quiet.log_path) if e["key"] == "learning_rate"]
    assert lrs == [1e-3]


def test_key_order_eval_inside_the_epoch_and_target_reached(tiny_synthetic, tmp_path):
    result = run(tiny_synthetic, tmp_path / "o", "--target_iou", "0.01")
    events = events_of(result.log_path)
    keys = [e["key"] for e in events]
    assert keys[:5] == ["submission_benchmark", "submission_org", "submission_division",
                        "submission_status", "submission_platform"]
    assert keys.index("init_start") + 1 == keys.index("cache_clear")
    assert keys.index("cache_clear") < keys.index("seed") < keys.index("init_stop") < keys.index("run_start")
    epoch = keys[keys.index("epoch_start"):keys.index("epoch_stop") + 1]
    assert epoch.index("train_loss") < epoch.index("eval_start") < epoch.index("eval_accuracy") \
        < epoch.index("target_accuracy_reached") < epoch.index("eval_stop") < len(epoch) - 1
    reached = events[keys.index("target_accuracy_reached")]
    assert reached["value"] == 0.01 and reached["metadata"]["epoch_num"] == 1
    start = events[keys.index("epoch_start")]["metadata"]
    assert (start["epoch_num"], start["step_num"]) == (1, 0)
    assert events[-1]["key"] == "run_stop" and events[-1]["metadata"]["status"] == "success"
    assert result.reached


def test_a_fresh_checkpoint_loads_with_plain_weights_only_torch_load(tiny_synthetic, tmp_path):
    result = run(tiny_synthetic, tmp_path / "w")
    payload = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)  # no extra globals
    assert {"model", "optimizer", "step", "epoch", "rng"} <= set(payload)
    assert isinstance(payload["rng"]["numpy"]["keys"], torch.Tensor)
