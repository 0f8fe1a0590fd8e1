"""``fastcam train``: the reference's flags mapped onto the typed config.

The published baseline command line works with ``python train.py`` replaced by
``fastcam train --mode baseline``. Precedence: the recipe of ``--mode`` (or of
the config file's ``mode``), then ``--config FILE``, then explicit flags. The
guard runs on the result before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from fastcam.config import Config, recipe
from fastcam.errors import ConfigError

# flag -> (section, field). Each flag also accepts its dashed spelling.
RUN_FLAGS = {
    "run_tag": str, "data_dir_prefix": str, "output_dir": str, "checkpoint": str, "model_prefix": str,
    "wireup_method": str, "device": str, "seed": int, "max_inter_threads": int, "max_epochs": int,
    "target_iou": float, "stage_dir": str,
}
HYPER_FLAGS = {
    "local_batch_size": int, "optimizer": str, "start_lr": float, "weight_decay": float,
    "lr_warmup_steps": int, "lr_warmup_factor": float, "save_frequency": int,
    "gradient_accumulation_frequency": int, "logging_frequency": int, "batchnorm_group_size": int,
}
LIST_FLAGS = {"optimizer_betas": float, "channels": int}
OPT_FLAGS = {"precision": str, "compile": str, "compile_mode": str, "loader": str}
OPT_SWITCHES = ("channels_last", "fused_optimizer", "cudnn_benchmark")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train DeepCAM (baseline or optimized), writing an MLPerf log",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              argument_default=argparse.SUPPRESS)
    add_train_arguments(p)
    p.set_defaults(func=run_train)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("baseline", "optimized"), help="recipe to start from (default baseline)")
    p.add_argument("--config", metavar="FILE", help="YAML config file (see --print-config); flags override it")
    p.add_argument("--open-division", "--open_division", dest="open_division", action="store_true",
                   help="allow any hyperparameter; logs submission_division=open")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--save-config", metavar="FILE", help="write the resolved config as YAML before training")
    for name, kind in {**RUN_FLAGS, **HYPER_FLAGS, **OPT_FLAGS}.items():
        p.add_argument(*_spellings(name), dest=name, type=kind, metavar=name.upper())
    for name, kind in LIST_FLAGS.items():
        p.add_argument(*_spellings(name), dest=name, type=kind, nargs="+", metavar=name.upper())
    p.add_argument("--lr_schedule", "--lr-schedule", dest="lr_schedule", type=parse_schedule,
                   metavar="type=multistep,milestones=1200,decay_rate=0.5",
                   help="type=multistep,milestones=A B,decay_rate=R or type=cosine_annealing,t_max=N,eta_min=E")
    for name in OPT_SWITCHES:
        flag = name.replace("_", "-")
        p.add_argument(f"--{flag}", dest=name, action="store_true")
        p.add_argument(f"--no-{flag}", dest=name, action="store_false")


def _spellings(name: str) -> list[str]:
    dashed = name.replace("_", "-")
    return [f"--{name}"] if dashed == name else [f"--{name}", f"--{dashed}"]


def parse_schedule(text: str) -> dict:
    """``type=multistep,milestones=1200 2400,decay_rate=0.5`` -> a schedule dict."""
    out: dict = {}
    for item in text.split(","):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected key=value pairs, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key == "milestones":
            out[key] = [int(v) for v in value.replace(":", " ").split()]
        elif key in ("decay_rate", "eta_min"):
            out[key] = float(value)
        elif key == "t_max":
            out[key] = int(float(value))
        elif key == "type":
            out[key] = value
        else:
            raise argparse.ArgumentTypeError(f"unknown lr_schedule key {key!r}")
    if "type" not in out:
        raise argparse.ArgumentTypeError("lr_schedule needs type=multistep or type=cosine_annealing")
    return out


def config_from_args(args: argparse.Namespace, warn=None) -> Config:
    given = vars(args)
    base = None
    if "config" in given:
        base = Config.from_yaml(given["config"], base=recipe(given["mode"]) if "mode" in given else None)
    elif "mode" in given:
        base = recipe(given["mode"])
    data: dict = {"run": {}, "hyperparameters": {}, "optimizations": {}}
    if "mode" in given:
        data["mode"] = given["mode"]
    if given.get("open_division"):
        data["open_division"] = True
    for name in RUN_FLAGS:
        if name in given:
            data["run"][name] = given[name]
    for name in (*HYPER_FLAGS, *LIST_FLAGS):
        if name in given:
            data["hyperparameters"][name] = given[name]
    for name in (*OPT_FLAGS, *OPT_SWITCHES):
        if name in given:
            data["optimizations"][name] = given[name]
    hp = data["hyperparameters"]
    if "lr_schedule" in given:
        schedule = dict(given["lr_schedule"])
        if schedule.get("type") == "cosine":
            schedule["type"] = "cosine_annealing"
        hp["lr_schedule"] = schedule
    # The published baseline script computes the warmup factor by integer
    # division, which yields 0; with 0 warmup steps it has no effect and the
    # compliance rules require >= 1 (spec, "Baseline run parameters").
    steps = hp.get("lr_warmup_steps", (base or recipe("baseline")).hyperparameters.lr_warmup_steps)
    if hp.get("lr_warmup_factor", 1.0) < 1.0 and steps == 0:
        (warn or _warn)(f"--lr_warmup_factor {hp['lr_warmup_factor']:g} has no effect with 0 warmup steps; "
                        "using and logging 1.0")
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
    from fastcam.train.trainer import train

    train(config)  # not reaching the target within max_epochs is a result, not an error
    return 0


def _warn(message: str) -> None:
    print(f"fastcam: warning: {message}", file=sys.stderr)


__all__ = ["register", "parse_train_config", "config_from_args", "parse_schedule", "ConfigError"]
