"""Training: the run plan, the Trainer and the ``train`` entry point.

Stable API: ``fastcam.train.Trainer`` (train_step, train_epoch, evaluate,
warm_up, fit) and ``fastcam.train.train`` (a whole run from a Config).
"""

__all__ = ["Callback", "EpochRecord", "TrainResult", "Trainer", "train"]

_HOMES = {"Callback": "trainer", "EpochRecord": "trainer", "Trainer": "trainer",
          "TrainResult": "run", "train": "run"}


def __getattr__(name: str):
    # Loaded on first use (PEP 562): the command line imports fastcam.train.cli
    # for every command, and ``fastcam rules`` or ``--help`` must not wait ~1 s
    # for torch; fastcam.train.run imports mlperf_logging (through
    # fastcam.train.mlperf), which the GPU test machine lacks while the Trainer
    # must still load there (scripts/gpu_check.sh).
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"fastcam.train.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
