"""Custom kernels (installed as fastcam.kernels).

Triton is an optional dependency: the modules that need it (``lamb``,
``lamb_kernels``) are imported only where :func:`triton_available` says so,
so that ``import fastcam.kernels`` works everywhere.
"""

from __future__ import annotations

import importlib.util


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (it still needs CUDA, or
    ``TRITON_INTERPRET=1``, to run a kernel)."""
    return importlib.util.find_spec("triton") is not None
