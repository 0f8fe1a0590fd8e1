"""Checkpoints: the reference's content plus what exact resumption needs.

The reference saves ``{"step", "epoch", "model", "optimizer"}`` (model keys
possibly prefixed ``module.`` by DDP) as ``<prefix>_step_<N>.cpt``. fastcam
writes the same keys, with the model in the reference's key names, so either
tool can read the other's checkpoints, and adds ``scheduler``, ``grad_scaler``,
``rng`` (torch CPU and accelerator, NumPy, Python) and ``config`` (the hyperparameters,
checked on resume). Every field is a tensor or a plain Python value, so
``torch.load(path, weights_only=True)`` -- the reference's plain ``torch.load``
since torch 2.6 -- reads a fastcam checkpoint with no extra globals. Files are
written to a temp file, fsynced and renamed, so a crash never leaves a
half-written checkpoint in place of a good one (fastcam.files: the temp file
of a killed write is removed by the next run; a full disk is one WriteError).
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcam.accelerator import ACCELERATOR_TYPES, device_module
from fastcam.errors import CheckpointError
from fastcam.files import atomic_write
from fastcam.model import load_reference_state_dict, to_reference_state_dict

FORMAT = "fastcam-checkpoint-1"


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_as_plain(np.random.get_state()),
        "python": random.getstate(),
    }
    # The accelerator generator under its device type: "cuda" (CUDA and ROCm, so
    # checkpoints written before issue 15 load as before), "xpu". This rank's
    # device only (get_rng_state of the current device): a resumed run may see
    # fewer devices (one per task). An uninitialised module has no state to save.
    for device_type in ACCELERATOR_TYPES:
        module = device_module(device_type)
        if module is not None and module.is_available() and module.is_initialized():
            state[device_type] = module.get_rng_state()
    return state


def _numpy_state_as_plain(state) -> dict[str, Any]:
    """NumPy's legacy RNG state (kind, 624 uint32 keys, pos, has_gauss, gauss) as
    a tensor and Python numbers: a NumPy array would need unsafe globals to load."""
    kind, keys, pos, has_gauss, gauss = state
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}


def _numpy_state_from_plain(state) -> tuple:
    if isinstance(state, dict):
        keys = state["keys"].numpy().astype(np.uint32)
        return state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]
    return state  # a checkpoint of fastcam 0.1.0 (before issue 11) stored NumPy's tuple itself


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    random.setstate(state["python"])
    for device_type in ACCELERATOR_TYPES:
        module = device_module(device_type)
        if device_type in state and module is not None and module.is_available():
            saved = state[device_type]  # a list (as get_rng_state_all gives): its first state
            module.set_rng_state(saved[0] if isinstance(saved, (list, tuple)) else saved)


def hyperparameters_record(hp) -> dict[str, Any]:
    """The hyperparameters as stored in a checkpoint and compared on resume:
    plain lists and dicts (the format of every fastcam checkpoint so far)."""
    import dataclasses

    from fastcam.config import plain

    return plain(dataclasses.asdict(hp))


def save(path: str | os.PathLike, *, model, optimizer, scheduler, grad_scaler, step: int, epoch: int,
         hyperparameters: dict[str, Any], seed: int) -> Path:
    """Write atomically; returns the final path."""
    payload = {
        "format": FORMAT,
        "step": step,
        "epoch": epoch,
        "model": to_reference_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "rng": rng_state(),
        "hyperparameters": hyperparameters,
        "seed": seed,
    }
    return atomic_write(path, lambda f: torch.save(payload, f), binary=True)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a fastcam or reference checkpoint onto the CPU, safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        # weights_only=True refuses arbitrary pickled code. Checkpoints written
        # before issue 11 hold NumPy's RNG state as an array: those few NumPy
        # globals stay allowed so that they still load.
        with torch.serialization.safe_globals(_numpy_rng_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({first})") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{path}: not a DeepCAM checkpoint (no 'model' entry)")
    return payload


def check_hyperparameters(payload: dict[str, Any], path, hyperparameters: dict[str, Any]) -> None:
    """A CheckpointError naming the first hyperparameter the checkpoint was written with differently.
    Called before the run writes anything (fastcam.train.run), and again by :func:`restore`."""
    saved = payload.get("hyperparameters")
    if saved is None:  # a reference checkpoint records none
        return
    for key in sorted(set(saved) | set(hyperparameters)):
        if saved.get(key) != hyperparameters.get(key):
            raise CheckpointError(
                f"{path}: checkpoint was written with {key}={saved.get(key)!r}, "
                f"this run has {key}={hyperparameters.get(key)!r}")


def restore(payload: dict[str, Any], path, *, model, optimizer, scheduler, grad_scaler,
            hyperparameters: dict[str, Any]) -> tuple[int, int]:
    """Load ``payload`` into the run; returns (step, epoch) it was taken at."""
    check_hyperparameters(payload, path, hyperparameters)
    try:
        load_reference_state_dict(model, payload["model"])
    except CheckpointError as err:
        raise CheckpointError(f"{path}: model weights do not match this network ({err})") from None
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: model weights do not match this network ({first})") from None
    try:
        optimizer.load_state_dict(payload["optimizer"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not match this run ({err})") from None
    step, epoch = int(payload.get("step", 0)), int(payload.get("epoch", 0))
    try:
        if scheduler is not None:
            if payload.get("scheduler") is not None:
                scheduler.load_state_dict(payload["scheduler"])
            else:  # a reference checkpoint: replay the schedule to its step
                for _ in range(step):
                    scheduler.step()
        if grad_scaler is not None and payload.get("grad_scaler"):
            grad_scaler.load_state_dict(payload["grad_scaler"])
        if payload.get("rng") is not None:
            set_rng_state(payload["rng"])
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as err:
        raise CheckpointError(f"{path}: scheduler, scaler or RNG state does not match this run ({err})") from None
    return step, epoch


def _numpy_rng_globals() -> list:
    names = [np.dtype, np.ndarray, type(np.dtype(np.uint32))]
    core = getattr(np, "_core", None) or np.core  # NumPy 2 renamed np.core
    names.append(core.multiarray._reconstruct)
    return names
