"""Faults and bad input (issue 17): one test per defect, on real files and real
processes. Each asserts the exit code (or the error's), the one line the user
sees, and that nothing already written was lost. Training runs use the small
network on the real generator's 32 x 48 data."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import small_network
from fastcam.cli import main, one_line
from fastcam.errors import FastcamError
from fastcam.files import TEMP_SUFFIX
from fastcam.train import Callback, train
from fastcam.train.cli import parse_train_config

REPO = Path(__file__).resolve().parents[1]


def args(data, out, *extra):
    return ["--mode", "baseline", "--data_dir_prefix", str(data), "--output_dir", str(out),
            "--max_inter_threads", "0", "--device", "cpu", "--seed", "7", "--run_tag", "t", *extra]


def run_small(data, out, *extra, callbacks=()):
    return train(parse_train_config(args(data, out, *extra)), callbacks=callbacks, model_factory=small_network,
                 echo=lambda _line: None)


def fails(data, out, *extra, callbacks=()) -> FastcamError:
    """The FastcamError a small run ends with; its message must be one line."""
    with pytest.raises(FastcamError) as caught:
        run_small(data, out, *extra, callbacks=callbacks)
    message = one_line(caught.value)
    assert message == str(caught.value) and "\n" not in message
    return caught.value


def cli_error(argv, capsys) -> tuple[int, str]:
    """(exit code, stderr) of ``fastcam ARGV``; stderr must be exactly one line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastcam: error: "), err
    return code, err.strip()


@contextlib.contextmanager
def tmpfs(directory: Path, size: str):
    """A small real file system (root only; the sandbox allows it), else skip."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> None:
    """Fill the file system of ``directory`` to the last byte (unbuffered writes)."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for chunk in (b"\0" * 65536, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    f.write(chunk)


class FillDiskAt(Callback):
    """Fills the output file system at a chosen point of the run."""

    def __init__(self, directory: Path, when: str):
        self.directory, self.when = directory, when

    def on_epoch_start(self, trainer, epoch):
        if self.when == "epoch 2" and epoch == 1:
            fill(self.directory)

    def on_fit_end(self, trainer, reached):
        if self.when == "fit end":
            fill(self.directory)


def log_keys(path: Path) -> list[str]:
    import json

    return [json.loads(line.split(":::MLLOG ", 1)[1])["key"] for line in path.read_text().splitlines()
            if line.startswith(":::MLLOG ") and line.endswith("}")]


# ---- defect 4: a start that fails after the log is opened -------------------------------------------

def other_network():
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(16, 3, 1))


def test_failed_start_leaves_the_previous_log_in_place(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "out"
    run_small(tiny_synthetic, out, "--max_epochs", "1")
    log = out / "logs" / "t.log"
    before = log.read_text()
    # A missing or corrupt checkpoint is refused before anything is written or moved ...
    err = fails(tiny_synthetic, out, "--max_epochs", "1", "--checkpoint", str(out / "missing.cpt"))
    assert str(err).endswith("missing.cpt: checkpoint not found") and err.exit_code == 1
    (out / "bad.cpt").write_bytes(b"not a checkpoint")
    err = fails(tiny_synthetic, out, "--max_epochs", "1", "--checkpoint", str(out / "bad.cpt"))
    assert "bad.cpt: corrupt or unreadable checkpoint" in str(err)
    # ... and one that loads but does not fit the network fails after the log was opened: no stub stays.
    with pytest.raises(FastcamError, match="model weights do not match this network") as caught:
        train(parse_train_config(args(tiny_synthetic, out, "--max_epochs", "1", "--checkpoint",
                                      str(out / "model_t_last.cpt"))), model_factory=other_network,
              echo=lambda _line: None)
    assert "\n" not in str(caught.value)
    assert log.read_text() == before
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["t.log"]
    assert main(["compare", "--no-check", str(out / "logs")]) == 0
    assert "skipped" not in capsys.readouterr().out.lower()


# ---- defect 5a: SIGKILL during a checkpoint write ------------------------------------------------------

def test_temp_file_of_a_killed_checkpoint_write_is_removed_at_the_next_start(tiny_synthetic, tmp_path):
    out = tmp_path / "out"
    run_small(tiny_synthetic, out, "--max_epochs", "1")
    good = (out / "model_t_last.cpt").read_bytes()
    # A real writer, killed with SIGKILL while it writes the checkpoint's temp file.
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from fastcam.files import atomic_write
        def write(f):
            f.write(b"x" * 100000); f.flush(); print("writing", flush=True); time.sleep(60)
        atomic_write({str(out / "model_t_last.cpt")!r}, write, binary=True)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    partial = [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert len(partial) == 1 and partial[0].stat().st_size == 100000
    # Someone else's live write on this host is left alone.
    alive = out / f".x.cpt.{partial[0].name.split('.')[-4]}.{os.getpid()}.ab12{TEMP_SUFFIX}"
    alive.write_bytes(b"busy")
    lines = []
    train(parse_train_config(args(tiny_synthetic, out, "--max_epochs", "1", "--run_tag", "u")),
          model_factory=small_network, echo=lines.append)
    assert f"removed {partial[0]}, left by a write that was killed" in lines
    assert not partial[0].exists() and alive.exists()
    assert (out / "model_t_last.cpt").read_bytes() == good  # the killed write never replaced it


# ---- defect 6: disk full -------------------------------------------------------------------------------

def test_disk_full_while_saving_a_checkpoint_is_one_line_and_keeps_the_old_one(tiny_synthetic, tmp_path):
    out = tmp_path / "out"
    with tmpfs(out, "1m"):
        run_small(tiny_synthetic, out, "--max_epochs", "1")
        previous = (out / "model_t_last.cpt").read_bytes()
        err = fails(tiny_synthetic, out, "--max_epochs", "1", callbacks=[FillDiskAt(out, "fit end")])
        assert str(err).startswith(f"cannot write {out / 'model_t_last.cpt'}: disk full (")
        assert err.exit_code == 1
        assert (out / "model_t_last.cpt").read_bytes() == previous  # put back in place
        assert not [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]
        assert log_keys(out / "logs" / "t.log")[-1] == "run_stop"  # the log was complete


def test_disk_full_while_writing_the_log_stops_the_run_once(tiny_synthetic, tmp_path, capfd):
    out = tmp_path / "out"
    with tmpfs(out, "1m"):
        run_small(tiny_synthetic, out, "--max_epochs", "1")
        kept_before = (out / "logs" / "t.log").read_text()
        err = fails(tiny_synthetic, out, "--max_epochs", "3", callbacks=[FillDiskAt(out, "epoch 2")])
        assert str(err).startswith(f"cannot write {out / 'logs' / 't.log'}: disk full (") and err.exit_code == 1
        assert "Logging error" not in capfd.readouterr().err
        kept = [p for p in (out / "logs").iterdir() if p.name != "t.log"]
        assert len(kept) == 1 and kept[0].read_text() == kept_before
        keys = log_keys(out / "logs" / "t.log")
        # Epoch 1 as written; the file's last page still took a few lines, then the run stopped.
        assert 1 <= keys.count("epoch_stop") < 3 and "run_stop" not in keys


# ---- defect 7: a dangling symlink where the log goes ---------------------------------------------------

def test_log_is_never_written_through_a_symlink(tiny_synthetic, tmp_path, capsys):
    out, outside = tmp_path / "out", tmp_path / "elsewhere.log"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "t.log").symlink_to(outside)
    code, line = cli_error(["train", *args(tiny_synthetic, out, "--max_epochs", "1")], capsys)
    assert code == 2 and "t.log is a symbolic link" in line and "remove it" in line
    assert not outside.exists() and (out / "logs" / "t.log").is_symlink()
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["t.log"]


# ---- defect 9: a rank that is stopped (not killed) -----------------------------------------------------

STOPPING_DRIVER = textwrap.dedent(f"""
    import os, signal, sys, torch
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from conftest import small_network
    from fastcam.cli import one_line
    from fastcam.errors import FastcamError
    from fastcam.train import Callback, train
    from fastcam.train.cli import parse_train_config

    class StopRankOne(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 1 and trainer.ctx.rank == 1:
                os.kill(os.getpid(), signal.SIGSTOP)  # as a debugger, a frozen node or ^Z would

    torch.set_num_threads(1)
    try:
        train(parse_train_config(sys.argv[1:]), callbacks=[StopRankOne()], model_factory=small_network)
    except FastcamError as err:
        print("fastcam: error: " + one_line(err), file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
""")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stopped_rank_ends_the_others_after_the_collective_timeout(tiny_synthetic, tmp_path):
    driver, port, out = tmp_path / "driver.py", _free_port(), tmp_path / "out"
    driver.write_text(STOPPING_DRIVER)
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "FASTCAM_COLLECTIVE_TIMEOUT_S": "4"}
        procs.append(subprocess.Popen(
            [sys.executable, str(driver), *args(tiny_synthetic, out, "--max_epochs", "3", "--wireup_method", "env")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _, err = procs[0].communicate(timeout=120)
        stopped_at = time.monotonic()
        assert procs[1].poll() is None  # rank 1 is still stopped, not dead
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fastcam: error: rank 0: a collective waited 4 s for another rank"), err
    assert "FASTCAM_COLLECTIVE_TIMEOUT_S" in last and stopped_at
    keys = log_keys(out / "logs" / "t.log")  # epoch 1 as written, the run marked aborted
    assert keys.count("epoch_stop") == 1 and keys[-1] == "run_stop"


def test_collective_timeout_setting_is_checked():
    from datetime import timedelta

    from fastcam.errors import ConfigError
    from fastcam.train.run import collective_timeout

    assert collective_timeout({}) == timedelta(minutes=10)
    assert collective_timeout({"FASTCAM_COLLECTIVE_TIMEOUT_S": "90"}) == timedelta(seconds=90)
    for bad in ("0", "-1", "inf", "soon"):
        with pytest.raises(ConfigError, match="FASTCAM_COLLECTIVE_TIMEOUT_S"):
            collective_timeout({"FASTCAM_COLLECTIVE_TIMEOUT_S": bad})


# ---- issue 13: DDP's speed options change no number ----------------------------------------------------

DDP_DRIVER = textwrap.dedent("""
    import sys, torch
    from fastcam import distributed
    torch.set_num_threads(1)
    ctx = distributed.init_distributed("env", "cpu")
    weights = []
    for fast in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
        model = distributed.wrap_model(net, ctx, torch.device("cpu"), fast_ddp=fast)
        assert model.static_graph == fast and model.gradient_as_bucket_view == fast
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        generator = torch.Generator().manual_seed(ctx.rank)
        for _ in range(4):
            opt.zero_grad()
            model(torch.randn(2, 4, 8, 8, generator=generator)).square().mean().backward()
            opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.save(weights, sys.argv[1])
    distributed.shutdown(ctx)
""")


def test_fast_ddp_gives_the_reference_ddp_weights_bitwise(tmp_path):
    driver, port = tmp_path / "ddp.py", _free_port()
    driver.write_text(DDP_DRIVER)
    procs = [subprocess.Popen([sys.executable, str(driver), str(tmp_path / f"w{rank}.pt")], cwd=REPO,
                              env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    import torch

    for rank in range(2):
        reference, fast = torch.load(tmp_path / f"w{rank}.pt")
        assert torch.equal(reference, fast)


# ---- issue 13: the staged loader's CPU buffers are reused, never while a batch is held -----------------

def test_staged_cpu_buffers_are_reused_but_never_under_a_held_batch(random_dataset, tmp_path):
    import torch

    from fastcam.data.stage import stage_dataset
    from fastcam.data.staged import StagedLoader

    stage_dataset(random_dataset, tmp_path / "s", workers=1, progress=False)
    loader = StagedLoader(tmp_path / "s", "train", batch_size=1, shuffle=True, drop_last=True, seed=3, prefetch=1)
    kept = [(x.clone(), y.clone(), n) for x, y, n in loader]  # the reference contents, batch by batch
    buffers = set()
    for (inputs, labels, names), (ref_inputs, ref_labels, ref_names) in zip(loader, kept):  # the Trainer's pattern
        buffers.add(inputs.data_ptr())
        assert torch.equal(inputs, ref_inputs) and torch.equal(labels, ref_labels) and names == ref_names
    assert len(buffers) <= 1 + 3 < len(kept)  # a ring of prefetch + 3, not a buffer per batch
    held = list(loader)  # a consumer keeping every batch, and views of them, gets them all intact
    view = held[0][0][:, :2]
    del held[0]
    more = list(loader)
    assert torch.equal(view, kept[0][0][:, :2])
    pairs = zip(held + more[1:], kept[1:] + kept[1:])
    assert all(torch.equal(b[0], k[0]) and torch.equal(b[1], k[1]) for b, k in pairs)
    loader.close()
