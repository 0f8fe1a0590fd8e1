"""One error type for bad input, reported as one line and a non-zero exit.

Everything the user can get wrong (a missing file, a corrupt HDF5 file, a wrong
shape, a forbidden hyperparameter) raises :class:`FastcamError`. The command
line catches it, prints ``fastcam: error: <message>`` and exits with
``exit_code`` -- never a traceback.
"""

from __future__ import annotations


class FastcamError(Exception):
    """A user-facing error: ``str(err)`` is the one line the user sees."""

    exit_code = 1


class DataError(FastcamError):
    """A data set, a sample file or a stats file is missing or malformed."""


class ConfigError(FastcamError):
    """A configuration value is malformed (unknown key, wrong type, bad range)."""

    exit_code = 2


class GuardError(ConfigError):
    """A fixed benchmark hyperparameter was changed (see fastcam.guard)."""


class CheckpointError(FastcamError):
    """A checkpoint is corrupt or does not match the run."""


class WriteError(FastcamError):
    """A file could not be written (disk full, no permission, read-only file
    system): reported once, and the run stopped (issue 17, defect 6)."""


class CollectiveTimeoutError(FastcamError):
    """A collective operation waited longer than the collective timeout: another
    rank stopped, hung or died (issue 17, defect 9)."""
