"""The ``fastcam`` command line: one entry point, one sub-command per module.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` on it. Errors a user can cause are :class:`FastcamError` and end
as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, attribute) of each command group's register function; imported
# lazily so that `fastcam --help` does not pay for torch.
COMMAND_MODULES = (
    "fastcam.data.cli",
    "fastcam.train.cli",
    "fastcam.tuning.cli",
    "fastcam.compare.cli",
    "fastcam.compare.package",
    "fastcam.bench",
    "fastcam.projection.cli",
    "fastcam.rules.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastcam",
        description="Train the MLCommons HPC DeepCAM benchmark, baseline or optimized.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _version() -> str:
    from fastcam import __version__

    return f"fastcam {__version__}"


def main(argv: list[str] | None = None) -> int:
    from fastcam.errors import FastcamError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FastcamError as err:
        print(f"fastcam: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("fastcam: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not _out_of_memory(err):
            raise
        print(f"fastcam: error: out of device memory ({one_line(err).split('.')[0]}); "
              "lower --local_batch_size or use mixed precision (--mode optimized)", file=sys.stderr)
        return 1


def _out_of_memory(err: Exception) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(err, torch.OutOfMemoryError)


def one_line(err: Exception) -> str:
    """The user-facing line of an error.

    An error raised inside a DataLoader worker is re-raised by PyTorch with the
    worker's whole traceback in its message; its last line is
    ``fastcam.errors.DataError: <our message>``, which is what the user needs.
    """
    text = str(err).strip()
    if "\n" not in text:
        return text
    last = text.splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


if __name__ == "__main__":
    sys.exit(main())
