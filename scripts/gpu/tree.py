"""Import fastcam from the working tree the way its installation lays it out.

The GPU machine cannot install anything (no registry), so the check runs fastcam
from the checkout (``PYTHONPATH=$PWD``). pyproject.toml maps packages that
live elsewhere in the tree (``fastcam.kernels`` = ``kernels/``, see its
``[tool.setuptools] package-dir``); an installation resolves them, a bare
``PYTHONPATH`` does not. :func:`mount` appends a finder that resolves exactly
those names from the tree, last on ``sys.meta_path``, so an installed fastcam
(a developer machine) still wins. Importing this module mounts it: the parts
import it before anything from fastcam (fastcam.train.optim imports
fastcam.kernels at import time).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class _MappedPackages(importlib.abc.MetaPathFinder):
    def __init__(self, mapping: dict[str, Path]):
        self.mapping = mapping

    def find_spec(self, fullname, path=None, target=None):
        directory = self.mapping.get(fullname)
        if directory is None or not (directory / "__init__.py").exists():
            return None
        return importlib.util.spec_from_file_location(fullname, directory / "__init__.py",
                                                      submodule_search_locations=[str(directory)])


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """pyproject's package-dir entries that are not at their dotted path ({} without a pyproject)."""
    import tomllib

    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return {}
    mapping = project.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return {name: root / rel for name, rel in mapping.items() if name and rel and name.replace(".", "/") != rel}


def mount(root: Path = ROOT) -> None:
    if not any(isinstance(finder, _MappedPackages) for finder in sys.meta_path):
        sys.meta_path.append(_MappedPackages(package_dirs(root)))


mount()
