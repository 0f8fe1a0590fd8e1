"""Reading and writing the reference implementation's state-dict format.

fastcam's module names *are* the reference's, so no key is renamed; these
helpers only see through wrappers (DDP's ``module.``, torch.compile's
``_orig_mod.``) and turn any mismatch into a one-line
:class:`~fastcam.errors.CheckpointError` instead of PyTorch's multi-line one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from fastcam.errors import CheckpointError

#: Prefixes that wrappers put in front of the wrapped model's keys.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def strip_wrapper_prefixes(key: str) -> str:
    """``module._orig_mod.conv2.weight`` -> ``conv2.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                stripped = True
    return key


def to_reference_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The model's state dict under the reference's key names (no wrapper prefixes)."""
    state = unwrap_model(model).state_dict()
    return OrderedDict((strip_wrapper_prefixes(key), value) for key, value in state.items())


def load_reference_state_dict(model: nn.Module, state_dict: Mapping[str, object]) -> None:
    """Load a reference-format state dict (keys with or without ``module.``), strictly.

    Raises CheckpointError naming the first missing, unexpected or
    wrongly shaped entry; the model is left untouched in that case.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"model state dict must be a mapping, got {type(state_dict).__name__}")
    target = unwrap_model(model)
    expected = target.state_dict()

    incoming: OrderedDict[str, torch.Tensor] = OrderedDict()
    for raw_key, value in state_dict.items():
        key = strip_wrapper_prefixes(str(raw_key))
        if key in incoming:
            raise CheckpointError(f"model state dict holds key {key!r} twice (with and without a prefix)")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"model state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        incoming[key] = value

    missing = [key for key in expected if key not in incoming]
    unexpected = [key for key in incoming if key not in expected]
    if missing:
        raise CheckpointError(
            f"model state dict is missing {len(missing)} key(s), first {missing[0]!r}"
            + (f"; it also has {len(unexpected)} unexpected key(s), first {unexpected[0]!r}" if unexpected else "")
        )
    if unexpected:
        raise CheckpointError(f"model state dict has {len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
    for key, reference in expected.items():
        if incoming[key].shape != reference.shape:
            raise CheckpointError(
                f"model state dict entry {key!r} has shape {list(incoming[key].shape)}, "
                f"the model expects {list(reference.shape)}"
            )
    target.load_state_dict(incoming, strict=True)
