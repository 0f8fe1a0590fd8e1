"""The synthetic data set the loader and epoch parts read, made once per work directory.

``fastcam data synth`` files at the check's size under ``$FASTCAM_CHECK_WORK``
(never under ``$OUT``: only a few small files may come back from the GPU
machine). A finished set is marked complete and reused by the next part and by
a rerun on the same machine; an unfinished one (a part killed mid-way) is
written again.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from report import Settings, say

MARKER = ".complete"


def ensure(settings: Settings) -> tuple[Path, float | None]:
    """(data set directory, seconds it took to write, None when reused)."""
    from fastcam.data.synth import synthesize

    s = settings.size
    root = settings.work / f"data-{s.height}x{s.width}-{s.train_samples}-{s.validation_samples}"
    if (root / MARKER).exists():
        return root, None
    if root.exists():
        shutil.rmtree(root)
    workers = max(1, min(os.cpu_count() or 1, 16)) if not settings.smoke else 1
    say(f"synthesizing {s.train_samples} + {s.validation_samples} samples of {s.height}x{s.width} "
        f"with {workers} workers into {root}")
    start = time.perf_counter()
    synthesize(root, s.train_samples, s.validation_samples, height=s.height, width=s.width, seed=1,
               workers=workers, progress=False)
    (root / MARKER).touch()
    return root, time.perf_counter() - start
