"""``fastcam train``: the reference's flags mapped onto the typed config.

The published baseline command line works with ``python train.py`` replaced by
``fastcam train --mode baseline``. Every config flag is derived from the
config's declaration (fastcam.schema); ``tune`` and ``bench`` add the same
flags through :func:`add_config_arguments` and resolve them with
:func:`config_from_args`. Precedence: the recipe of ``--mode`` (or of the
config file's ``mode``), then ``--config FILE``, then explicit flags. The
guard runs on the result before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from fastcam import schema
from fastcam.config import DEFAULT_RULES, MODES, SECTIONS, Config, parse_schedule, recipe
from fastcam.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train DeepCAM (baseline or optimized), writing an MLPerf log",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              argument_default=argparse.SUPPRESS)
    add_train_arguments(p)
    p.set_defaults(func=run_train)


def add_config_arguments(p: argparse.ArgumentParser, with_mode: bool = True) -> None:
    """(``--mode``, ``--config``, ``--open-division``) and one flag per config field."""
    if with_mode:
        p.add_argument("--mode", choices=MODES, default=argparse.SUPPRESS,
                       help="recipe to start from (default baseline)")
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="YAML config file (see --print-config); flags override it")
        p.add_argument("--open-division", "--open_division", dest="open_division", action="store_true",
                       default=argparse.SUPPRESS, help="allow any hyperparameter; logs submission_division=open")
        p.add_argument("--rules", metavar="NAME", default=argparse.SUPPRESS,
                       help=f"rules profile the guard applies (default {DEFAULT_RULES}; see fastcam rules)")
    for section in SECTIONS:
        group = p.add_argument_group(section)
        schema.add_arguments(group, SECTIONS[section], section)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--print-config", action="store_true", default=argparse.SUPPRESS,
                   help="print the resolved config as YAML and exit")
    p.add_argument("--save-config", metavar="FILE", default=argparse.SUPPRESS,
                   help="write the resolved config as YAML before training")
    add_config_arguments(p)


def config_from_args(args: argparse.Namespace, warn=None, default_mode: str | None = None) -> Config:
    """The config the given flags describe (validated, not yet guard-checked)."""
    given = vars(args)
    mode = given.get("mode", default_mode)
    base = recipe(mode, given.get("rules", DEFAULT_RULES)) if mode else None
    if "config" in given:
        base = Config.from_yaml(given["config"], base=base)
    data: dict = schema.collect(args, tuple(SECTIONS))
    if mode:
        data["mode"] = mode
    if "rules" in given:
        data["rules"] = given["rules"]
    if given.get("open_division"):
        data["open_division"] = True
    hp = data["hyperparameters"]
    # The published baseline script computes the warmup factor by integer
    # division, which yields 0; with 0 warmup steps it has no effect and the
    # compliance rules require >= 1 (spec, "Baseline run parameters").
    steps = hp.get("lr_warmup_steps", (base or recipe("baseline")).hyperparameters.lr_warmup_steps)
    factor = hp.get("lr_warmup_factor", 1.0)
    if isinstance(factor, float) and factor < 1.0 and steps == 0:
        (warn or _warn)(f"--lr_warmup_factor {factor:g} has no effect with 0 warmup steps; using and logging 1.0")
        hp["lr_warmup_factor"] = 1.0
    return Config.from_dict(data, base=base, source="command line")


def parse_train_config(argv: list[str]) -> Config:
    """The config ``fastcam train ARGV`` would run (for tests and tooling)."""
    parser = argparse.ArgumentParser(prog="fastcam train", argument_default=argparse.SUPPRESS)
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def run_train(args: argparse.Namespace) -> int:
    from fastcam import guard

    config = config_from_args(args)
    guard.check(config)
    if getattr(args, "print_config", False):
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if "save_config" in vars(args):
        config.to_yaml(args.save_config)
    from fastcam.train import train

    train(config)  # not reaching the target within max_epochs is a result, not an error
    return 0


def _warn(message: str) -> None:
    print(f"fastcam: warning: {message}", file=sys.stderr)


__all__ = ["register", "parse_train_config", "config_from_args", "add_config_arguments", "parse_schedule",
           "ConfigError"]
