"""Training: the run plan, the Trainer and the ``train`` entry point.

Stable API: ``fastcam.train.Trainer`` (train_step, train_epoch, evaluate,
warm_up, fit) and ``fastcam.train.train`` (a whole run from a Config).
"""

from fastcam.train.run import TrainResult, train
from fastcam.train.trainer import Callback, EpochRecord, Trainer

__all__ = ["Callback", "EpochRecord", "TrainResult", "Trainer", "train"]
