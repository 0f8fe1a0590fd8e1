"""A progress bar within each training epoch, on a terminal only.

On a terminal, rank 0 shows ``epoch 2/6  56%|#####  | 9/16 steps [00:11<00:09,
12.5 samples/s]`` while an epoch trains, then ``evaluating`` while it is
evaluated; the bar is erased before the epoch's line (fastcam.train.callbacks.
ConsoleLine) is printed, so what stays on screen is one line per epoch. When
the output is not a terminal (a log file, a pipe, a batch job), nothing is
written per step: logs keep exactly one line per epoch.

The bar only counts batches and reads the clock: no tensor is read back, so it
adds no host-device synchronisation to a step. Its rate therefore measures
when batches were *queued* on an asynchronous device; over an epoch the two
agree, and the epoch line's samples/s is the measured figure.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from fastcam.train.trainer import Callback, EvalResult, Trainer

# tqdm's default redraw interval; refreshing more often than this costs a
# write per step for nothing a reader can see.
REDRAW_SECONDS = 0.1
BAR_FORMAT = "{desc}  {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}{postfix}]"


def is_terminal(*streams: IO) -> bool:
    """True when every stream is an interactive terminal (a closed or odd stream is not)."""
    for stream in streams:
        try:
            if not stream.isatty():
                return False
        except (AttributeError, ValueError):  # no isatty, or a closed file
            return False
    return True


class ProgressBar(Callback):
    """Steps done / steps per epoch, samples/s and ETA for each epoch on rank 0.

    ``stream`` is where the bar is drawn (default stderr, tqdm's); ``console``
    is where the epoch lines go (default stdout). The bar shows only when both
    are terminals: with either redirected, per-step redraws would end up as
    carriage-return noise in a file or interleaved with a piped log.
    """

    def __init__(self, stream: IO | None = None, console: IO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.console = console if console is not None else sys.stdout
        self.bar = None
        self._start = 0.0
        self._samples = 0

    def active(self, trainer: Trainer) -> bool:
        return trainer.ctx.is_main and is_terminal(self.stream, self.console)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.close()
        if not self.active(trainer):
            return
        from tqdm import tqdm

        # One call per training batch: with gradient accumulation a step is
        # several batches, so the total counts batches (= steps at accumulation 1).
        batches = trainer.plan.steps_per_epoch * trainer.plan.hyperparameters.gradient_accumulation_frequency
        self.bar = tqdm(total=batches, desc=f"epoch {epoch + 1}/{trainer.plan.run.max_epochs}",
                        file=self.stream, leave=False, bar_format=BAR_FORMAT, mininterval=REDRAW_SECONDS,
                        dynamic_ncols=True)
        self._start, self._samples = time.perf_counter(), 0

    def on_batch_end(self, trainer: Trainer, epoch: int, batch_index: int, samples: int) -> None:
        if self.bar is None:
            return
        # ``samples`` is this rank's batch; every rank trains the same number.
        self._samples += samples * trainer.ctx.world_size
        seconds = time.perf_counter() - self._start
        if seconds > 0:
            self.bar.set_postfix_str(f"{self._samples / seconds:.1f} samples/s", refresh=False)
        self.bar.update(batch_index + 1 - self.bar.n)

    def on_eval_start(self, trainer: Trainer, epoch: int) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"epoch {epoch + 1}/{trainer.plan.run.max_epochs} evaluating",
                                         refresh=True)

    def on_eval_end(self, trainer: Trainer, epoch: int, result: EvalResult, reached: bool) -> None:
        # Closed here, before on_epoch_end, where ConsoleLine prints the epoch's line.
        self.close()

    def on_fit_end(self, trainer: Trainer, reached: bool) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # leave=False: erases the bar's line
            self.bar = None
