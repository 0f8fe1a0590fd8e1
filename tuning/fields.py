"""The config fields a search space may name, derived from fastcam.schema.

A field is searchable when its schema declaration says ``tunable=True``
(``Hyperparameters`` and ``RunSettings``, in declaration order). A tunable
field that is itself a section (the LR schedule) is searched through its
parts: every ``mutable`` field of that section, named ``FIELD.PART``. Which
parts exist for which schedule type is what ``Schedule.as_dict`` says. So
adding a tunable field to fastcam/config.py makes it searchable without
touching tuning/ (a field that counts optimizer steps says ``unit="steps"``,
and a space may then give it in epochs).

:func:`configure` is the one way a trial's values become a Config: one
``Config.replace``, validated by construction (the guard runs once, in
``fastcam.train.train``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastcam import schema
from fastcam.config import SECTIONS, Config

SEARCHED_SECTIONS = ("hyperparameters", "run")
# The part of a nested section that decides which of its other parts exist
# (Schedule.type; the parts of each type are the keys of Schedule.as_dict).
DISCRIMINATOR = "type"

@dataclass(frozen=True)
class Field:
    name: str  # as a space and optuna name it: FIELD, or FIELD.PART of a nested section
    section: str  # "hyperparameters" or "run"
    key: str  # the field of that section
    part: str | None  # the field of the nested section, for a part
    param: schema.Param
    kind: type  # the type of one value (of one item, for a list field)
    is_list: bool  # a tuple field: sampled as NAME.count then NAME.1 ... NAME.N
    belongs_to: frozenset | None  # the discriminator values this part exists for (None: every value)

    @property
    def dest(self) -> str:
        """The argparse dest of the flag that pins this field (the whole section, for a part)."""
        return f"{self.section}.{self.key}"

    @property
    def discriminator(self) -> str | None:
        """The name of the part that decides whether this part exists."""
        return f"{self.key}.{DISCRIMINATOR}" if self.belongs_to is not None else None

    @property
    def is_step_count(self) -> bool:
        return self.param.unit == "steps"

    def read(self, config: Config) -> Any:
        value = getattr(getattr(config, self.section), self.key)
        return getattr(value, self.part) if self.part is not None else value


@cache
def searchable() -> dict[str, Field]:
    """Every field a space may name, in sampling order (a discriminator before its parts)."""
    out: dict[str, Field] = {}
    for section in SEARCHED_SECTIONS:
        cls = SECTIONS[section]
        defaults = cls()
        for key, p in schema.params(cls):
            if not p.tunable:
                continue
            if p.kind is not None and dataclasses.is_dataclass(p.kind):
                out.update(_parts(section, key, p.kind))
                continue
            out[key] = _field(key, section, key, None, p, getattr(defaults, key), None)
    return out


def _parts(section: str, key: str, cls) -> dict[str, Field]:
    defaults = cls()
    owners: dict[str, set] = {}
    for value in schema.param_of(cls, DISCRIMINATOR).choices:
        for part in cls(**{DISCRIMINATOR: value}).as_dict():
            owners.setdefault(part, set()).add(value)
    every = set(schema.param_of(cls, DISCRIMINATOR).choices)
    out = {}
    for part, p in schema.params(cls):
        if p.rule != "mutable" or part not in owners:
            continue
        belongs = None if owners[part] == every else frozenset(owners[part])
        name = f"{key}.{part}"
        out[name] = _field(name, section, key, part, p, getattr(defaults, part), belongs)
    return out


def _field(name, section, key, part, p: schema.Param, default, belongs_to) -> Field:
    kind = p.kind or type(default)
    is_list = kind is tuple
    return Field(name, section, key, part, p, (p.item or float) if is_list else kind, is_list, belongs_to)


def applies(field: Field, values: dict[str, Any], base: Config) -> bool:
    """Whether ``field`` exists in a trial with ``values`` on ``base`` (a part of
    the other schedule type does not)."""
    if field.belongs_to is None:
        return True
    chosen = values.get(field.discriminator, searchable()[field.discriminator].read(base))
    return chosen in field.belongs_to


def configure(base: Config, values: dict[str, Any]) -> Config:
    """``base`` with the fields' config values (a tuple for a list field); one
    validated ``Config.replace``. A trial that changes the schedule type starts
    from that type's defaults for the parts it does not set."""
    changes: dict[str, dict[str, Any]] = {}
    nested: dict[tuple[str, str], dict[str, Any]] = {}
    for name, value in values.items():
        f = searchable()[name]
        if f.part is None:
            changes.setdefault(f.section, {})[f.key] = value
        else:
            nested.setdefault((f.section, f.key), {})[f.part] = value
    for (section, key), parts in nested.items():
        current = getattr(getattr(base, section), key)
        kind = parts.get(DISCRIMINATOR, getattr(current, DISCRIMINATOR))
        start = current if kind == getattr(current, DISCRIMINATOR) else type(current)(**{DISCRIMINATOR: kind})
        changes.setdefault(section, {})[key] = dataclasses.replace(start, **parts)
    return base.replace(**changes)
