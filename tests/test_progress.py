"""The per-epoch progress bar: drawn on a terminal only, closed before each epoch's line."""

from __future__ import annotations

import io
from types import SimpleNamespace

from conftest import small_network
from fastcam.train import train
from fastcam.train.cli import parse_train_config
from fastcam.train.progress import ProgressBar, is_terminal


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        if self.closed:  # as io.StringIO.isatty does
            raise ValueError("I/O operation on closed file")
        return True


def run_with(bar: ProgressBar, data, out, epochs: int = 2):
    """A real two-epoch run (small network); returns each echoed line with the
    bar's state and the stream's text at the moment it was printed."""
    lines = []

    def echo(line: str) -> None:
        lines.append((line, bar.bar is None, bar.stream.getvalue()))

    config = parse_train_config(["--mode", "baseline", "--data_dir_prefix", str(data), "--output_dir", str(out),
                                 "--max_inter_threads", "0", "--device", "cpu", "--seed", "3",
                                 "--max_epochs", str(epochs)])
    train(config, callbacks=(bar,), echo=echo, model_factory=small_network)
    return lines


def test_bar_on_a_terminal_shows_steps_and_rate_and_is_closed_before_each_epoch_line(tiny_synthetic, tmp_path):
    stream = FakeTerminal()
    lines = run_with(ProgressBar(stream=stream, console=FakeTerminal()), tiny_synthetic, tmp_path / "out")
    epoch_lines = [(line, closed, text) for line, closed, text in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    drawn = stream.getvalue()
    # 16 training samples at the baseline's local batch 8: 2 steps per epoch.
    for epoch in (1, 2):
        assert f"epoch {epoch}/2" in drawn
    assert "2/2 steps" in drawn and "samples/s" in drawn and "evaluating" in drawn
    for line, closed, text in epoch_lines:
        assert closed, line
        # leave=False: the bar's line was erased (ends on a carriage return) before the epoch line.
        assert text.endswith("\r"), repr(text[-80:])
    # The second epoch's bar started after the first epoch's line.
    first_text = epoch_lines[0][2]
    assert "epoch 2/2" not in first_text and "epoch 2/2" in epoch_lines[1][2]


def test_nothing_is_drawn_when_the_output_is_not_a_terminal(tiny_synthetic, tmp_path):
    plain = io.StringIO()
    run_with(ProgressBar(stream=plain, console=FakeTerminal()), tiny_synthetic, tmp_path / "a", epochs=1)
    assert plain.getvalue() == ""
    # A terminal for the bar but the epoch lines piped to a file: still nothing per step.
    terminal = FakeTerminal()
    run_with(ProgressBar(stream=terminal, console=io.StringIO()), tiny_synthetic, tmp_path / "b", epochs=1)
    assert terminal.getvalue() == ""


def test_only_rank_zero_draws():
    stream = FakeTerminal()
    bar = ProgressBar(stream=stream, console=FakeTerminal())
    plan = SimpleNamespace(steps_per_epoch=3, run=SimpleNamespace(max_epochs=1),
                           hyperparameters=SimpleNamespace(gradient_accumulation_frequency=1))
    worker = SimpleNamespace(ctx=SimpleNamespace(is_main=False, world_size=2), plan=plan)
    bar.on_epoch_start(worker, 0)
    for index in range(3):
        bar.on_batch_end(worker, 0, index, 8)
    bar.on_fit_end(worker, False)
    assert bar.bar is None and stream.getvalue() == ""
    # Rank 0 of the same two ranks counts both ranks' samples.
    main = SimpleNamespace(ctx=SimpleNamespace(is_main=True, world_size=2), plan=plan)
    bar.on_epoch_start(main, 0)
    for index in range(3):
        bar.on_batch_end(main, 0, index, 8)
    assert bar._samples == 48 and bar.bar.n == 3
    bar.on_fit_end(main, False)
    assert bar.bar is None and "epoch 1/1" in stream.getvalue()


def test_is_terminal_refuses_closed_and_plain_streams():
    closed = FakeTerminal()
    closed.close()
    assert is_terminal(FakeTerminal(), FakeTerminal())
    assert not is_terminal(FakeTerminal(), io.StringIO())
    assert not is_terminal(closed)
    assert not is_terminal(object())
