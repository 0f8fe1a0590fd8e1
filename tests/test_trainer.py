"""Real short training runs on the real generator's data: the MLPerf log,
exact resumption, a 2-rank gloo run, and bad input at the command line."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import small_network
from fastcam.cli import main
from fastcam.compliance import failed_keys, run_checker
from fastcam.train import checkpoint, train
from fastcam.train.cli import parse_train_config

REPO = Path(__file__).resolve().parents[1]


def baseline_args(data, out, *extra):
    base = ["--mode", "baseline", "--data_dir_prefix", str(data), "--output_dir", str(out),
            "--max_inter_threads", "0", "--device", "cpu", "--seed", "7"]
    return base + list(extra)  # argparse: a later flag overrides an earlier one


def test_two_epoch_baseline_log_passes_the_official_checker(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", *baseline_args(tiny_synthetic, out, "--max_epochs", "2", "--run_tag", "ckr")]) == 0
    lines = capsys.readouterr().out
    assert "epoch   1/2" in lines and "epoch   2/2" in lines and "not reached" in lines
    log = out / "logs" / "ckr.log"
    result = run_checker(log)
    # Synthetic data cannot have the real set's sizes nor reach 0.82: nothing else may fail.
    assert failed_keys(result) == {"train_samples", "eval_samples", "eval_accuracy"}, result.output
    events = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in log.read_text().splitlines()]
    keys = [e["key"] for e in events]
    assert keys.count("eval_accuracy") == 2 and keys[-1] == "run_stop"
    assert events[-1]["metadata"]["status"] == "aborted"
    assert {e["metadata"]["epoch_num"] for e in events if e["key"] == "eval_accuracy"} == {1, 2}
    assert (out / "model_ckr_last.cpt").is_file()
    # A second run with the same tag keeps the first run's log and checkpoint.
    train(parse_train_config(baseline_args(tiny_synthetic, out, "--max_epochs", "1", "--run_tag", "ckr")),
          model_factory=small_network)
    assert len(list((out / "logs").glob("ckr.*.log"))) == 1 and (out / "logs" / "ckr.log").is_file()
    assert len(list(out.glob("model_ckr_last.*.cpt"))) == 1 and (out / "model_ckr_last.cpt").is_file()


def test_resume_is_bitwise_exact(tiny_synthetic, tmp_path):
    # The loop mechanics on a small network (the checkpoint format's reference
    # key names are the next test's).
    def run(out, *extra):
        return train(parse_train_config(baseline_args(tiny_synthetic, tmp_path / out, *extra)),
                     model_factory=small_network)

    straight = run("a", "--max_epochs", "2")
    first = run("b", "--max_epochs", "1")
    resumed = run("c", "--max_epochs", "2", "--checkpoint", str(first.checkpoint_path))
    a, c = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == c.keys()
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [r.epoch for r in resumed.history] == [2]
    assert resumed.history[0].eval_iou == straight.history[1].eval_iou
    # And the run really trained: epoch 1's weights differ from epoch 2's.
    b = first.model.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_is_reference_compatible_and_corruption_is_reported(tiny_synthetic, tmp_path, capsys):
    result = train(parse_train_config(baseline_args(tiny_synthetic, tmp_path / "a", "--max_epochs", "1")))
    payload = checkpoint.load(result.checkpoint_path)
    assert {"model", "optimizer", "step", "epoch"} <= set(payload)
    assert "xception_features.conv1.weight" in payload["model"]
    # A checkpoint with different hyperparameters is refused, naming the key.
    rc = main(["train", *baseline_args(tiny_synthetic, tmp_path / "b", "--max_epochs", "2", "--open-division",
                                       "--start_lr", "0.5", "--checkpoint", str(result.checkpoint_path))])
    assert rc != 0 and "start_lr" in capsys.readouterr().err
    # Resuming under another seed would change the data order: refused.
    rc = main(["train", *baseline_args(tiny_synthetic, tmp_path / "s", "--max_epochs", "2", "--seed", "8",
                                       "--checkpoint", str(result.checkpoint_path))])
    assert rc != 0 and "seed 7" in capsys.readouterr().err
    broken = tmp_path / "broken.cpt"
    broken.write_bytes(result.checkpoint_path.read_bytes()[:1000])
    rc = main(["train", *baseline_args(tiny_synthetic, tmp_path / "c", "--checkpoint", str(broken))])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "corrupt" in err[0] and "broken.cpt" in err[0]


@pytest.mark.parametrize("workers", ["0", "2"])  # 2: the error comes from a DataLoader worker process
def test_bad_data_is_one_clear_line(tmp_path, capsys, workers):

    from conftest import write_random_dataset

    data = write_random_dataset(tmp_path / "d", n_train=8, n_validation=2)
    bad = data / "train" / "data-000003.h5"
    bad.write_bytes(b"\0" * 100)
    rc = main(["train", *baseline_args(data, tmp_path / "o", "--max_epochs", "1", "--max_inter_threads", workers)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "data-000003.h5" in err[0], err
    assert "Traceback" not in err[0]
    (data / "stats.h5").unlink()
    rc = main(["train", *baseline_args(data, tmp_path / "o2", "--max_epochs", "1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "stats" in err[0]


DRIVER = textwrap.dedent(f"""
    import json, sys, torch
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from conftest import small_network
    from fastcam.train.cli import parse_train_config
    from fastcam.train import train
    torch.set_num_threads(1)
    result = train(parse_train_config(sys.argv[2:]), model_factory=small_network)
    torch.save(result.model.state_dict(), sys.argv[1] + ".pt")
    json.dump([[r.eval_iou, r.eval_samples, r.step] for r in result.history], open(sys.argv[1] + ".json", "w"))
""")


@pytest.mark.slow
def test_two_rank_gloo_run_keeps_ranks_identical(tiny_synthetic, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        # The global batch fixed, the local batch derived after wire-up: 16 / 2 ranks = the baseline's 8.
        args = baseline_args(tiny_synthetic, tmp_path / "out", "--max_epochs", "2", "--wireup_method", "env",
                             "--run_tag", "two", "--global_batch_size", "16")
        procs.append(subprocess.Popen([sys.executable, str(driver), str(tmp_path / f"rank{rank}"), *args],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks diverged"
    h0, h1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert h0 == h1  # same eval IoU on both ranks
    assert all(count == 5 for _, count, _ in h0)  # 5 validation files, each seen exactly once overall
    assert [step for *_, step in h0] == [1, 2]  # 16 files / 2 ranks / batch 8 = 1 step per epoch
    log = (tmp_path / "out" / "logs" / "two.log").read_text()
    assert '"global_batch_size", "value": 16' in log and '"local_batch_size", "value": 8' in log
    assert failed_keys(run_checker(tmp_path / "out" / "logs" / "two.log")) == {
        "train_samples", "eval_samples", "eval_accuracy"}
