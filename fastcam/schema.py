"""Field metadata for the typed config: every setting declared once.

A config field is declared with :func:`param`, which records its help text,
its *rules class* and its valid values beside the default:

- ``run``: a setting that does not change the training trajectory (paths,
  seed, devices, workers, epochs budget): free in every mode;
- ``mutable``: a hyperparameter an optimized run may change (the benchmark's
  "mutable" list, spec/benchmark.md), within ``rules_range`` where given;
- ``fixed``: a hyperparameter every compliant run keeps at the baseline value;
- ``execution``: how the network is executed (precision, memory format, ...).

From this one declaration: the command line of ``train``/``tune``/``bench``
(:func:`add_arguments` / :func:`collect`), validation on construction
(:func:`validate` from each section's ``__post_init__``), the guard
(fastcam.guard reads the rules class), tuning's vetting (``tunable``) and the
MLPerf hyperparameter keys (``log_key``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastcam.errors import ConfigError

RULES = ("run", "mutable", "fixed", "execution")
_KEY = "fastcam"


@dataclass(frozen=True)
class Param:
    help: str
    rule: str
    kind: type | None = None  # value type; default: the type of the default
    item: type | None = None  # element type of a tuple field
    length: int | None = None  # exact length of a tuple field
    choices: tuple | None = None
    low: float | None = None  # valid range (inclusive unless low_exclusive)
    low_exclusive: bool = False
    high: float | None = None
    high_exclusive: bool = False
    rules_range: tuple[float | None, float | None] = (None, None)  # what compliant optimized runs allow
    nullable: bool = False
    log_key: str | None = None  # the MLPerf hyperparameter key
    tunable: bool = False  # tuning may search it
    unit: str | None = None  # "steps": an optimizer-step count (a tuning space may give it in epochs)
    cli: bool = True  # exposed as --name / --dashed-name
    switch: bool = False  # a boolean with --flag / --no-flag
    aliases: tuple[str, ...] = ()  # extra accepted values mapped in normalise (e.g. "cosine")
    parse: Callable[[str], Any] | None = None  # argparse type for a structured value

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown rules class {self.rule!r}")


def param(default: Any, help: str, rule: str, **meta: Any):
    """A dataclass field carrying its :class:`Param`. Tuples keep frozen configs immutable."""
    metadata = {_KEY: Param(help=help, rule=rule, **meta)}
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def params(cls_or_obj) -> Iterator[tuple[str, Param]]:
    """(name, Param) of every declared field of a section, in declaration order."""
    for f in dataclasses.fields(cls_or_obj):
        if _KEY in f.metadata:
            yield f.name, f.metadata[_KEY]


def param_of(cls_or_obj, name: str) -> Param:
    for f in dataclasses.fields(cls_or_obj):
        if f.name == name:
            return f.metadata[_KEY]
    raise KeyError(name)


def validate(section, where: str) -> None:
    """Check every declared field of ``section``; normalise tuples. Raises one
    ConfigError naming ``where.field`` and the exact value (repr)."""
    for f in dataclasses.fields(section):
        if _KEY not in f.metadata:
            continue
        p: Param = f.metadata[_KEY]
        value = getattr(section, f.name)
        checked = _check(value, p, f.default, f"{where}.{f.name}")
        if checked is not value:
            object.__setattr__(section, f.name, checked)


def _check(value, p: Param, default, where: str):
    if value is None:
        if p.nullable:
            return None
        raise ConfigError(f"{where} must not be null")
    if dataclasses.is_dataclass(value):
        return value  # a nested section validates itself
    kind = p.kind or type(default)
    if kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        items = tuple(_scalar(v, p.item or float, p, f"{where}[{i}]") for i, v in enumerate(value))
        if p.length is not None and len(items) != p.length:
            raise ConfigError(f"{where} must have {p.length} values, got {list(value)!r}")
        if not items:
            raise ConfigError(f"{where} must not be empty")
        return items
    return _scalar(value, kind, p, where)


def _scalar(value, kind: type, p: Param, where: str):
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
    if p.choices is not None and value not in p.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, p.choices))}, got {value!r}")
    if p.low is not None and (value <= p.low if p.low_exclusive else value < p.low):
        raise ConfigError(f"{where} must be {'>' if p.low_exclusive else '>='} {p.low:g}, got {value!r}")
    if p.high is not None and (value >= p.high if p.high_exclusive else value > p.high):
        raise ConfigError(f"{where} must be {'<' if p.high_exclusive else '<='} {p.high:g}, got {value!r}")
    return value


# -- command line ----------------------------------------------------------------
def spellings(name: str) -> list[str]:
    dashed = name.replace("_", "-")
    return [f"--{name}"] if dashed == name else [f"--{name}", f"--{dashed}"]


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, section_cls, section: str) -> None:
    """One option per declared field (``dest`` = ``section.name``; SUPPRESS
    defaults, so only what the user gave reaches :func:`collect`)."""
    for name, p in params(section_cls):
        if not p.cli:
            continue
        dest = f"{section}.{name}"
        flag_help = p.help if p.choices is None else f"{p.help} ({', '.join(map(str, p.choices))})"
        if p.switch:
            dashed = name.replace("_", "-")
            parser.add_argument(f"--{dashed}", dest=dest, action="store_true", default=argparse.SUPPRESS,
                                help=flag_help)
            parser.add_argument(f"--no-{dashed}", dest=dest, action="store_false", default=argparse.SUPPRESS)
            continue
        default = dataclasses.fields(section_cls)[[f.name for f in dataclasses.fields(section_cls)].index(name)].default
        kind = p.kind or type(default)
        extra: dict[str, Any] = {}
        if p.parse is not None:
            extra["type"] = p.parse
        elif kind is tuple:
            extra.update(type=p.item or float, nargs="+")
        else:
            extra["type"] = kind
        parser.add_argument(*spellings(name), dest=dest, metavar=name.upper(), default=argparse.SUPPRESS,
                            help=flag_help, **extra)


def collect(args: argparse.Namespace, sections: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The given options of ``sections`` as ``{section: {name: value}}``."""
    out: dict[str, dict[str, Any]] = {s: {} for s in sections}
    for dest, value in vars(args).items():
        section, _, name = dest.partition(".")
        if name and section in out:
            out[section][name] = value
    return out
