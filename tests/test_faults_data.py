"""Faults and bad input in the data, the staged cache, the tuning journal and
the config (issue 17): one test per defect, on real files and real processes,
each asserting the exit code or error, the one line, and that nothing already
written was lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import write_random_dataset
from fastcam.cli import main
from fastcam.data import layout
from fastcam.data.stage import stage_dataset
from fastcam.data.staged import StagedLoader
from fastcam.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def cli_error(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastcam: error: "), err
    return code, err.strip()


def train_args(data, out, *extra):
    return ["train", "--mode", "baseline", "--data_dir_prefix", str(data), "--output_dir", str(out),
            "--max_inter_threads", "0", "--device", "cpu", "--seed", "7", "--max_epochs", "1", *extra]


# ---- defect 1 (cache side): a reused staged cache is checked against its checksums ---------------------

def test_changed_staged_cache_is_detected_and_staged_again(random_dataset, tmp_path, capsys):
    dst = tmp_path / "staged"
    stage_dataset(random_dataset, dst, workers=1, progress=False)
    inputs = dst / "train" / "inputs.f16"
    good = inputs.read_bytes()
    inputs.write_bytes(b"\xff" * len(good))  # every input a float16 NaN, sizes unchanged
    summary = stage_dataset(random_dataset, dst, workers=1, progress=False)
    out = capsys.readouterr().out
    assert "12 staged sample(s) in" in out and "differ from their stored checksums" in out
    assert summary.split("train").staged == 12 and not summary.split("train").reused
    assert summary.split("validation").reused  # untouched split: checked and kept
    assert inputs.read_bytes() == good
    # One changed sample the sampled check does not read is found by the full check.
    with open(inputs, "r+b") as f:
        f.seek(len(good) // 12 * 5 + 10)
        f.write(b"\xff\xff")
    quiet = stage_dataset(random_dataset, dst, workers=1, progress=False)  # 16 sampled of 12: all read
    assert quiet.split("train").staged == 1 and inputs.read_bytes() == good
    with pytest.raises(Exception, match="cache verification 'some'"):
        stage_dataset(random_dataset, dst, workers=1, progress=False, verify="some")
    full = stage_dataset(random_dataset, dst, workers=1, progress=False, verify="full")
    assert full.reused
    with StagedLoader(dst, "train", batch_size=4, shuffle=False, drop_last=True, seed=0) as loader:
        assert all(torch.isfinite(batch[0].float()).all() for batch in loader)


# ---- defect 2: a bad sample file is named, before or when it is read -----------------------------------

def _rewrite(path: Path, data=None, labels=None) -> None:
    with h5py.File(path, "r") as f:
        old_data, old_labels = f[layout.DATA_KEY][...], f[layout.LABEL_KEY][...]
    with h5py.File(path, "w") as f:
        f[layout.DATA_KEY] = old_data if data is None else data(old_data)
        f[layout.LABEL_KEY] = old_labels if labels is None else labels(old_labels)


BAD_FILES = {
    "label 5": (dict(labels=lambda lab: np.where(lab == 1, 5, lab).astype(lab.dtype)), "holds label 5"),
    "label -1": (dict(labels=lambda lab: np.where(lab == 2, -1, lab).astype(lab.dtype)), "holds label -1"),
    "another size": (dict(data=lambda d: np.zeros((16, 48, 16), np.float32), labels=lambda lab: lab[:16]),
                     "sample is 16 x 48, the data set's first file 32 x 48"),
    "8 channels": (dict(data=lambda d: d[..., :8]), "8 channels"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_sample_file_is_one_line_naming_it(tmp_path, capsys, case):
    data = write_random_dataset(tmp_path / "data", n_train=4, n_validation=2)
    changes, expected = BAD_FILES[case]
    bad = data / "train" / "data-000002.h5"
    _rewrite(bad, **changes)
    code, line = cli_error(train_args(data, tmp_path / "out", "--open-division", "--local_batch_size", "2"), capsys)
    assert code == 1 and str(bad) in line and expected in line and "Traceback" not in line
    # Staging (the optimized path) refuses it the same way, naming it.
    with pytest.raises(DataError, match=expected) as caught:
        stage_dataset(data, tmp_path / "staged", workers=1, progress=False)
    assert str(bad) in str(caught.value)


# ---- defect 3: every flag and config value checked before anything is written --------------------------

BAD_CONFIG = {
    "start_lr inf": (["--start_lr", "inf"], "start_lr"),
    "weight_decay nan": (["--weight_decay", "nan"], "weight_decay"),
    "warmup factor nan": (["--lr_warmup_factor", "nan", "--lr_warmup_steps", "2"], "lr_warmup_factor"),
    "channel 99": (["--channels", "0", "1", "99"], "99"),
    "eta_min nan": (["--lr_schedule", "type=cosine_annealing,t_max=100,eta_min=nan"], "eta_min"),
    "t_max inf": (["--lr_schedule", "type=cosine_annealing,t_max=inf,eta_min=0"], "t_max"),
    "guard repr": (["--start_lr", "0.0010000000001"], "0.0010000000001"),
}


@pytest.mark.parametrize("case", BAD_CONFIG)
def test_bad_value_is_refused_before_anything_is_written(tiny_synthetic, tmp_path, capsys, case):
    flags, named = BAD_CONFIG[case]
    code, line = cli_error(train_args(tiny_synthetic, tmp_path / "out", *flags), capsys)
    assert code == 2 and named in line and "Traceback" not in line, line
    assert not (tmp_path / "out").exists()


def test_binary_config_file_is_one_line(tiny_synthetic, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    code, line = cli_error(train_args(tiny_synthetic, tmp_path / "out", "--config", str(config)), capsys)
    assert code == 2 and str(config) in line and "UTF-8" in line.upper().replace("UTF8", "UTF-8")
    assert not (tmp_path / "out").exists()


# ---- defect 5b: staging workers die with their parent --------------------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # an orphaned zombie has exited; PID 1 of a container may never reap it


def test_staging_workers_die_with_a_killed_parent(random_dataset, tmp_path):
    dst = tmp_path / "staged"
    stager = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from fastcam.data.stage import stage_dataset
        def hold(split, index):
            print("staged one", flush=True)
            time.sleep(120)
        stage_dataset({str(random_dataset)!r}, {str(dst)!r}, workers=2, progress=False, on_sample=hold)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert stager.stdout.readline().strip() == "staged one"
        workers = [pid for pid in _children(stager.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2
        stager.send_signal(signal.SIGKILL)
        stager.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "staging workers outlived their parent"
    finally:
        stager.kill()
    # What was staged before the kill is kept: the next call resumes.
    summary = stage_dataset(random_dataset, dst, workers=1, progress=False)
    assert sum(s.reverified for s in summary.splits) >= 1
    assert summary.staged + sum(s.reverified for s in summary.splits) == 19


# ---- defect 8: a tuning journal whose last record was cut ----------------------------------------------

def test_cut_journal_tail_is_repaired_keeping_the_finished_trials(tmp_path, capsys):
    import optuna

    from fastcam.errors import ConfigError
    from fastcam.tuning.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = tmp_path / "tuning.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(None, tmp_path))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    intact = journal.read_bytes()
    records = intact.splitlines(keepends=True)
    journal.write_bytes(intact + records[-1][: len(records[-1]) // 2])  # a write killed half-way
    lines = []
    storage = open_storage(None, tmp_path, echo=lines.append)
    assert len(lines) == 1 and "last record was cut" in lines[0]
    assert journal.read_bytes() == intact
    kept = list(tmp_path.glob("tuning.journal.cut-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == records[-1][: len(records[-1]) // 2]
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # appends cleanly after the repair
    again = optuna.load_study(study_name="s", storage=open_storage(None, tmp_path))
    assert [t.state for t in again.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    # A damaged line inside the journal is refused with one line saying how to recover.
    data = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(data[:2] + [b"{garbage\n"] + data[2:]))
    with pytest.raises(ConfigError, match=r"line 3 is not a journal record.*head -n 2") as caught:
        open_storage(None, tmp_path)
    assert "\n" not in str(caught.value)
