"""Training: the run plan, the Trainer and the ``train`` entry point.

Stable API: ``fastcam.train.Trainer`` (train_step, train_epoch, evaluate,
warm_up, fit) and ``fastcam.train.train`` (a whole run from a Config).
"""

from fastcam.train.trainer import Callback, EpochRecord, Trainer

__all__ = ["Callback", "EpochRecord", "TrainResult", "Trainer", "train"]


def __getattr__(name: str):
    # fastcam.train.run imports mlperf_logging (through fastcam.train.mlperf); loading it on
    # first use (PEP 562) keeps the Trainer importable without mlperf-logging, as on the GPU
    # test machine (scripts/gpu_check.sh).
    if name in ("TrainResult", "train"):
        from fastcam.train import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
