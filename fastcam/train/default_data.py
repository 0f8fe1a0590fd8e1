"""The small synthetic data set ``fastcam train`` uses when given no data.

So that ``fastcam train`` with no arguments runs a real training job on a
laptop CPU in minutes, it generates (once, cached) a small data set with
``fastcam data synth`` at a reduced image size. The cache lives under
``$FASTCAM_CACHE`` (default ``~/.cache/fastcam``); a ``.complete`` marker is
written last, so an interrupted generation is redone, never half-used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Small enough for a CPU, large enough that the decoder sees structure
# (output stride 16 leaves a 4 x 6 bottleneck at 64 x 96).
DEFAULT_SHAPE = (64, 96)
DEFAULT_TRAIN, DEFAULT_VALIDATION = 128, 32
DEFAULT_SEED = 1


def cache_root() -> Path:
    return Path(os.environ.get("FASTCAM_CACHE", Path.home() / ".cache" / "fastcam"))


def default_dataset(progress: bool = True) -> Path:
    height, width = DEFAULT_SHAPE
    name = f"synthetic-{height}x{width}-{DEFAULT_TRAIN}-{DEFAULT_VALIDATION}-seed{DEFAULT_SEED}"
    root = cache_root() / name
    if (root / ".complete").is_file():
        return root
    from fastcam.data.synth import synthesize

    print(f"fastcam: no --data_dir_prefix given; generating a small synthetic data set in {root}", flush=True)
    if root.exists():
        shutil.rmtree(root)
    synthesize(root, DEFAULT_TRAIN, DEFAULT_VALIDATION, height=height, width=width, seed=DEFAULT_SEED,
               progress=progress)
    (root / ".complete").write_text("ok\n")
    return root
