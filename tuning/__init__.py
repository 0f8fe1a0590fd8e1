"""Hyperparameter tuning (installed as fastcam.tuning)."""
