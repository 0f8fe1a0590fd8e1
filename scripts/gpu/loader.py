"""GPU check part ``loader``: the staged loader at full size feeding the device.

1. Synthesize the data set (``dataset.ensure``) and stage it as an optimized
   run does (``common.stage``); seconds for both.
2. Throughput: ``StagedLoader`` batches delivered to the device for
   ``EPOCHS`` epochs, the device synchronised at the end (samples/s, GB/s).
   The cache was just written, so it is read from the page cache, as on a
   node whose memory holds its shard.
3. Integrity under device load: every batch is followed by matrix products on
   the consumer's stream (so the loader's side-stream copies and pinned-buffer
   reuse run while the device is busy), kept for ``LAG`` more batches (so a
   buffer reused too early would overwrite it), then copied back and compared
   bit for bit with the cache files' bytes for the samples it names.
"""

from __future__ import annotations

import time
from collections import deque

import common
import dataset
import numpy as np
from report import Report, Settings, main, say

EPOCHS = 3
CHECK_EPOCHS = 2
LAG = 2  # batches a checked batch is held before its comparison


def run(report: Report, settings: Settings) -> None:
    data, synth_s = dataset.ensure(settings)
    report.record("data", path=str(data), synth_s=synth_s, train_samples=settings.size.train_samples)
    root, stage_s = common.stage(settings, data)
    report.record("staging", seconds=stage_s, cache=str(root))
    say(f"staged into {root} in {stage_s:.1f} s")
    report.attempt("throughput", lambda: throughput(report, settings, root))
    report.attempt("integrity", lambda: integrity(report, settings, root))


def _loader(settings: Settings, root):
    from fastcam.data.staged import StagedLoader

    return StagedLoader(root, "train", batch_size=settings.size.batch, shuffle=True, drop_last=True, seed=1,
                        device=common.device(settings), threads=max(2, settings.size.workers))


def throughput(report: Report, settings: Settings, root) -> None:
    dev = common.device(settings)
    with _loader(settings, root) as loader:
        bytes_per_sample = loader.height * loader.width * (2 * loader.channels + 1)  # float16 inputs, uint8 labels
        samples = 0
        common.sync(dev)
        start = time.perf_counter()
        for epoch in range(EPOCHS):
            loader.set_epoch(epoch)
            for inputs, _labels, _names in loader:
                samples += inputs.shape[0]
        common.sync(dev)
        seconds = time.perf_counter() - start
    report.record("throughput", epochs=EPOCHS, samples=samples, seconds=seconds, samples_per_s=samples / seconds,
                  gb_per_s=samples * bytes_per_sample / seconds / 1e9, threads=loader.threads)
    say(f"staged loader: {samples / seconds:.1f} samples/s ({samples * bytes_per_sample / seconds / 1e9:.2f} GB/s)")


def integrity(report: Report, settings: Settings, root) -> None:
    import torch

    from fastcam.data import stage

    dev = common.device(settings)
    size = 8192 if dev.type == "cuda" else 128
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    load = torch.randn(size, size, device=dev, dtype=dtype)
    products = 16 if dev.type == "cuda" else 2
    mismatches: list[dict] = []  # the first few
    checked = bad = 0
    with _loader(settings, root) as loader:
        shape = (loader.count, loader.height, loader.width, loader.channels)
        expected_inputs = np.memmap(loader.directory / stage.INPUTS_FILE, dtype=np.uint16, mode="r", shape=shape)
        expected_labels = np.memmap(loader.directory / stage.LABELS_FILE, dtype=np.uint8, mode="r", shape=shape[:3])
        row_of = {name: i for i, name in enumerate(loader.names)}

        def verify(batch) -> None:
            nonlocal checked, bad
            inputs, labels, names = batch
            got_inputs = inputs.permute(0, 2, 3, 1).cpu().view(torch.int16).numpy().view(np.uint16)
            got_labels = labels.cpu().numpy()
            for row, name in enumerate(names):
                i = row_of[name]
                for what, ok in (("inputs", np.array_equal(got_inputs[row], expected_inputs[i])),
                                 ("labels", np.array_equal(got_labels[row], expected_labels[i]))):
                    if not ok:
                        bad += 1
                        if len(mismatches) < 10:
                            mismatches.append({"sample": name, "what": what})
                checked += 1

        pending: deque = deque()
        start = time.perf_counter()
        for epoch in range(CHECK_EPOCHS):
            loader.set_epoch(100 + epoch)  # other orders than the throughput epochs
            for batch in loader:
                out = load
                for _ in range(products):
                    out = torch.mm(out, load).clamp_(-1, 1)
                batch[0].float().sum().add_(out[0, 0])  # the batch is read on the busy stream
                pending.append(batch)
                if len(pending) > LAG:
                    verify(pending.popleft())
        while pending:
            verify(pending.popleft())
        seconds = time.perf_counter() - start
    report.record("integrity", samples_checked=checked, mismatches=bad, first_mismatches=mismatches,
                  load=f"{products} x {size}x{size} {str(dtype).removeprefix('torch.')} matmul per batch",
                  samples_per_s_under_load=checked / seconds)
    say(f"integrity: {checked} samples compared byte for byte under load, {bad} mismatches")
    if bad:
        raise RuntimeError(f"{bad} staged inputs/labels arrived altered, e.g. {mismatches[0]}")


if __name__ == "__main__":
    main("loader", run)
