"""One typed, frozen configuration for every fastcam run, with its two recipes.

A run is described by :class:`Config`: ``mode`` (baseline or optimized),
``run`` (settings that do not change the training trajectory),
``hyperparameters`` (what the benchmark rules govern) and ``optimizations``
(how the same network is executed). Every field is declared once with its
metadata (fastcam.schema): the command line, the guard, tuning's vetting and
the MLPerf log keys derive from it. Sections are frozen and validated when
built, so an invalid config cannot exist; :meth:`Config.replace` returns a
changed copy. ``baseline()`` holds the published baseline parameters with the
reference's execution; ``optimized()`` NVIDIA's published global-batch-128
configuration. A config round-trips through YAML (``to_yaml`` / ``from_yaml``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any

from fastcam.errors import ConfigError
from fastcam.files import atomic_write_text
from fastcam.schema import param, validate

MODES = ("baseline", "ported", "optimized")  # the ESIF-HPC-4 run types
DEFAULT_RULES = "esif-2025-12"  # fastcam.rules: the published DeepCAM README
OPTIMIZERS = ("Adam", "AdamW", "LAMB")
SCHEDULES = ("multistep", "cosine_annealing")
WIREUP_METHODS = ("auto", "single", "local", "env", "nccl-slurm", "nccl-slurm-pmi", "nccl-openmpi", "mpi")
DEVICES = ("auto", "cpu", "cuda", "xpu")  # cuda and xpu also as cuda:N, xpu:N (fastcam.accelerator)
STAGE_DTYPES = ("fp16", "fp32")
# mlperf_logging hpc_3.0.0/common.yaml: submission_status in [cloud, onprem, preview, research]
SUBMISSION_STATUSES = ("cloud", "onprem", "preview", "research")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: resolved per device (fastcam.train.execution)
LOADERS = ("hdf5", "staged", "dali")  # hdf5: the reference reader; staged / dali: the node-local cache
CACHED_LOADERS = ("staged", "dali")  # read the float16 stage cache (fastcam.data.stage)
SWITCH = ("auto", "on", "off")  # auto: on where it pays on the device (see fastcam.train.execution)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
NUM_CHANNELS = 16  # the CAM5 input fields (fastcam.data.layout.CHANNELS)


def parse_schedule(text: str) -> dict:
    """``type=multistep,milestones=1200 2400,decay_rate=0.5`` -> a schedule mapping
    (the ``--lr_schedule`` flag's syntax)."""
    import argparse

    out: dict = {}
    for item in text.split(","):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected key=value pairs, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            if key == "milestones":
                out[key] = [int(v) for v in value.replace(":", " ").split()]
            elif key in ("decay_rate", "eta_min"):
                out[key] = float(value)
            elif key == "t_max":
                out[key] = int(value) if value.lstrip("-").isdigit() else float(value)
            elif key == "type":
                out[key] = value
            else:
                raise argparse.ArgumentTypeError(f"unknown lr_schedule key {key!r}")
        except ValueError:
            raise argparse.ArgumentTypeError(f"lr_schedule {key}={value!r} is not a number") from None
    if "type" not in out:
        raise argparse.ArgumentTypeError("lr_schedule needs type=multistep or type=cosine_annealing")
    return out


@dataclass(frozen=True)
class Schedule:
    """LR schedule, stepped once per optimizer step (reference key names)."""

    type: str = param("multistep", "multistep or cosine_annealing ('cosine' accepted)", "mutable",
                      choices=SCHEDULES, log_key="scheduler_type", aliases=("cosine",))
    milestones: tuple = param((1200,), "multistep: optimizer steps after warmup at which the LR decays",
                              "mutable", item=int, log_key="scheduler_milestones", tunable=True, unit="steps")
    decay_rate: float = param(0.5, "multistep: factor applied at each milestone", "mutable",
                              low=0.0, low_exclusive=True, rules_range=(None, 1.0),
                              log_key="scheduler_decay_rate", tunable=True)
    t_max: int = param(9000, "cosine: steps of a half period", "mutable", low=1, log_key="scheduler_t_max",
                       tunable=True, unit="steps")
    eta_min: float = param(0.0, "cosine: the lowest LR", "mutable", low=0.0, log_key="scheduler_eta_min",
                           tunable=True)

    def __post_init__(self) -> None:
        if self.type == "cosine":
            object.__setattr__(self, "type", "cosine_annealing")
        validate(self, "lr_schedule")
        if self.type == "multistep":
            m = self.milestones
            if any(x <= 0 for x in m) or list(m) != sorted(set(m)):
                raise ConfigError(f"lr_schedule.milestones must be increasing positive steps, got {list(m)}")

    def as_dict(self) -> dict[str, Any]:
        """Only the keys of this schedule type (what the trainer and the log use)."""
        if self.type == "multistep":
            return {"type": self.type, "milestones": list(self.milestones), "decay_rate": self.decay_rate}
        return {"type": self.type, "t_max": self.t_max, "eta_min": self.eta_min}


@dataclass(frozen=True)
class RunSettings:
    """Settings that do not change the training trajectory (free in every mode)."""

    run_tag: str = param("deepcam", "name of the log and checkpoints", "run")
    data_dir_prefix: str | None = param(None, "data set root (default: a cached small synthetic set)", "run",
                                        kind=str, nullable=True)
    output_dir: str = param("runs", "logs and checkpoints go here", "run")
    checkpoint: str | None = param(None, "resume from this checkpoint", "run", kind=str, nullable=True)
    model_prefix: str = param("model", "checkpoint file name prefix", "run")
    wireup_method: str = param("auto", "how ranks find each other", "run", choices=WIREUP_METHODS)
    device: str = param("auto", "auto (the accelerator torch finds, else cpu), cpu, cuda[:N] (NVIDIA, or AMD "
                        "through ROCm) or xpu[:N] (Intel)", "run")
    seed: int | None = param(None, "RNG seed (default: from the clock, then logged)", "run", kind=int,
                             nullable=True, low=1)
    max_inter_threads: int = param(4, "loader workers (the reference uses min(this, local batch))", "run",
                                   low=0, tunable=True)
    # A fixed global batch (ESIF-HPC-4 scenario draft, Scenario 2: 1024) gives the
    # same training at every scale; the plan derives the local batch once the
    # world size is known (fastcam.guard.resolve_global_batch).
    global_batch_size: int | None = param(None, "fix the global batch: local batch = G / (ranks x gradient "
                                          "accumulation), resolved after wire-up", "run", kind=int,
                                          nullable=True, low=1)
    max_epochs: int = param(200, "epoch budget", "run", low=1)
    target_iou: float = param(0.82, "stop when validation IoU reaches this", "run", low=0.0,
                              low_exclusive=True, high=1.0)
    stage_dir: str | None = param(None, "node-local cache of the staged loader (default OUTPUT_DIR/staged)",
                                  "run", kind=str, nullable=True)
    # The MLPerf submission keys (hpc_3.0.0/common.yaml); the platform defaults to
    # what the run finds (nodes x accelerators or CPU model, fastcam.distributed).
    submission_org: str = param("fastcam", "MLPerf submission_org: the submitting organisation", "run")
    submission_platform: str | None = param(None, "MLPerf submission_platform (default: nodes x devices "
                                            "found)", "run", kind=str, nullable=True)
    submission_status: str = param("onprem", "MLPerf submission_status", "run", choices=SUBMISSION_STATUSES)
    verify_cache: str = param("sample", "how much of a reused stage cache to check against its checksums",
                              "run", choices=("sample", "full"))

    def __post_init__(self) -> None:
        validate(self, "run")
        kind, _, index = self.device.partition(":")
        if not (self.device in DEVICES or (kind in ("cuda", "xpu") and index.isdigit())):
            raise ConfigError(f"run.device must be auto, cpu, cuda, cuda:N, xpu or xpu:N, got {self.device!r}")
        for name in ("submission_org", "submission_platform"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"run.{name} must not be empty")
        if not self.run_tag or "/" in self.run_tag:
            raise ConfigError(f"run.run_tag must be a non-empty file name, got {self.run_tag!r}")


@dataclass(frozen=True)
class Hyperparameters:
    """What the benchmark rules govern: ``mutable`` in optimized runs, else ``fixed``."""

    local_batch_size: int = param(8, "samples per rank per step", "mutable", low=1, log_key="local_batch_size",
                                  tunable=True)
    optimizer: str = param("AdamW", "Adam, AdamW or LAMB", "mutable", choices=OPTIMIZERS, log_key="opt_name",
                           tunable=True)
    start_lr: float = param(1e-3, "peak learning rate", "mutable", low=0.0, low_exclusive=True,
                            log_key="opt_lr", tunable=True)
    optimizer_betas: tuple = param((0.9, 0.999), "Adam betas", "fixed", item=float, length=2, low=0.0,
                                   high=1.0, high_exclusive=True, log_key="opt_betas")
    optimizer_eps: float = param(1e-6, "Adam epsilon", "fixed", low=0.0, low_exclusive=True, log_key="opt_eps")
    weight_decay: float = param(1e-2, "weight decay", "mutable", low=0.0, log_key="opt_weight_decay",
                                tunable=True)
    lr_warmup_steps: int = param(0, "linear warmup steps", "mutable", low=0,
                                 log_key="scheduler_lr_warmup_steps", tunable=True, unit="steps")
    lr_warmup_factor: float = param(1.0, "warmup factor (>= 1)", "mutable", low=1.0,
                                    log_key="scheduler_lr_warmup_factor", tunable=True)
    lr_schedule: Schedule = param(Schedule(), "type=multistep,milestones=A B,decay_rate=R or "
                                  "type=cosine_annealing,t_max=N,eta_min=E", "mutable", kind=Schedule,
                                  parse=parse_schedule, tunable=True)
    save_frequency: int = param(400, "checkpoint every N epochs", "fixed", low=1)
    gradient_accumulation_frequency: int = param(1, "micro-batches per optimizer step", "fixed", low=1,
                                                 log_key="gradient_accumulation_frequency")
    logging_frequency: int = param(0, "log train values every N steps (0: once per epoch)", "fixed", low=0)
    batchnorm_group_size: int = param(1, "ranks per batchnorm group", "fixed", low=1,
                                      log_key="batchnorm_group_size")
    channels: tuple = param(tuple(range(NUM_CHANNELS)), "input channels", "fixed", item=int, low=0,
                            high=NUM_CHANNELS - 1)

    def __post_init__(self) -> None:
        if isinstance(self.optimizer, str):
            object.__setattr__(self, "optimizer", canonical_optimizer(self.optimizer))
        if isinstance(self.lr_schedule, dict):
            object.__setattr__(self, "lr_schedule", Schedule(**self.lr_schedule))
        validate(self, "hyperparameters")
        if len(set(self.channels)) != len(self.channels):
            raise ConfigError(f"hyperparameters.channels must be distinct, got {list(self.channels)}")


@dataclass(frozen=True)
class Optimizations:
    """How the network is executed; the defaults are the reference's execution."""

    channels_last: bool = param(False, "channels-last memory format", "execution", switch=True)
    precision: str = param("fp32", "autocast precision (auto: per device)", "execution", choices=PRECISIONS)
    fused_optimizer: bool = param(False, "fused/multi-tensor optimizer kernels", "execution", switch=True)
    compile: str = param("off", "torch.compile (auto: CUDA only)", "execution", choices=SWITCH)
    compile_mode: str = param("default", "torch.compile mode", "execution", choices=COMPILE_MODES)
    # On in the reference's own execution: its train.py sets cudnn.benchmark on CUDA
    # (speed only, the same maths).
    cudnn_benchmark: bool = param(True, "cuDNN autotuning on CUDA", "execution", switch=True)
    loader: str = param("hdf5", "input pipeline", "execution", choices=LOADERS)
    # float16 halves the stage cache and its reads; it is a precision change,
    # which ESIF-HPC-4 forbids in baseline and ported runs unless the benchmark
    # README allows it (fastcam.rules profiles say per run type).
    stage_dtype: str = param("fp16", "input dtype of the staged/DALI stage cache", "execution",
                             choices=STAGE_DTYPES)
    # The reference evaluates one sample at a time; a larger batch gives the same
    # IoU and loss (per-sample sums, a padded last batch masked) in fewer steps.
    local_batch_size_validation: int = param(1, "validation samples per rank per step (0: the training batch)",
                                             "execution", low=0)

    def __post_init__(self) -> None:
        validate(self, "optimizations")

    def all_off(self) -> bool:
        return self == Optimizations()


SECTIONS = {"run": RunSettings, "hyperparameters": Hyperparameters, "optimizations": Optimizations}


@dataclass(frozen=True)
class Config:
    mode: str = "baseline"
    open_division: bool = False  # allows anything; logged as submission_division=open
    rules: str = DEFAULT_RULES  # the rules profile the guard applies (fastcam.rules)
    run: RunSettings = dataclasses.field(default_factory=RunSettings)
    hyperparameters: Hyperparameters = dataclasses.field(default_factory=Hyperparameters)
    optimizations: Optimizations = dataclasses.field(default_factory=Optimizations)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.open_division, bool):
            raise ConfigError(f"open_division must be true or false, got {self.open_division!r}")
        if not isinstance(self.rules, str) or not self.rules:
            raise ConfigError(f"rules must name a rules profile (fastcam rules), got {self.rules!r}")

    def replace(self, **changes: Any) -> "Config":
        """A validated copy: top-level values, or ``section={field: value}`` mappings."""
        return _overlay(self, changes, "config")

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: "Config | None" = None, source: str = "config") -> "Config":
        """Overlay ``data`` (nested sections) on ``base`` (default: the recipe of its mode)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        mode = data.get("mode", base.mode if base else "baseline")
        rules = data.get("rules", base.rules if base else DEFAULT_RULES)
        try:
            return _overlay(base if base is not None else recipe(mode, rules), data, source)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def to_yaml(self, path: str | os.PathLike) -> None:
        import yaml

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, base: "Config | None" = None) -> "Config":
        from fastcam.files import read_yaml

        return cls.from_dict(read_yaml(path, "config file") or {}, base, source=str(path))


def baseline(rules: str = DEFAULT_RULES) -> Config:
    """The published baseline of ``rules`` (default: the ESIF-HPC-4 DeepCAM README)
    with the reference's execution."""
    return _reference_run("baseline", rules)


def ported(rules: str = DEFAULT_RULES) -> Config:
    """A ported run: the baseline's hyperparameters; the execution a new
    architecture needs may change (fastcam.guard says what)."""
    return _reference_run("ported", rules)


def optimized(rules: str = DEFAULT_RULES) -> Config:
    """NVIDIA's published global-batch-128 configuration; optimizations on where they apply.
    The device-specific choices are resolved at run time (fastcam.train.execution)."""
    return Config(
        mode="optimized", rules=rules,
        hyperparameters=Hyperparameters(
            optimizer="LAMB", start_lr=0.00155, weight_decay=0.01, lr_warmup_steps=0, lr_warmup_factor=1.0,
            lr_schedule=Schedule(type="cosine_annealing", t_max=9000, eta_min=0.0)),
        optimizations=Optimizations(channels_last=True, precision="auto", fused_optimizer=True, compile="auto",
                                    cudnn_benchmark=True, loader="staged", local_batch_size_validation=0),
    )


def recipe(mode: str, rules: str = DEFAULT_RULES) -> Config:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return {"baseline": baseline, "ported": ported, "optimized": optimized}[mode](rules)


def _reference_run(mode: str, rules: str) -> Config:
    """The profile's baseline hyperparameters; the reference's execution, in
    mixed precision where the profile's baseline is (e.g. NVIDIA's AMP code)."""
    from fastcam import rules as rule_sets

    profile = rule_sets.load(rules)
    precision = "fp32" if profile.allows_precision(mode, "fp32") else "auto"
    return Config(mode=mode, rules=rules, hyperparameters=profile.hyperparameters(),
                  optimizations=Optimizations(precision=precision))


def canonical_optimizer(name: object) -> str:
    """The canonical spelling of an optimizer name (case-insensitive), or a ConfigError.
    The one place that knows the names: the trainer, the log and tuning use it."""
    if isinstance(name, str):
        for known in OPTIMIZERS:
            if name.strip().lower() == known.lower():
                return known
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


# -- helpers -------------------------------------------------------------------
def _overlay(obj, data: dict[str, Any], where: str):
    """A validated copy of dataclass ``obj`` with the keys of ``data`` applied."""
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(known)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if dataclasses.is_dataclass(value):
                changes[key] = value
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{key}' must be a mapping")
            changes[key] = _overlay(current, value, f"{where}.{key}")
        else:
            changes[key] = _yaml_number(value, current)
    return dataclasses.replace(obj, **changes)


def _yaml_number(value, current):
    """YAML 1.1 reads ``1e-3`` as a string: accept numeric strings for float fields."""
    if isinstance(current, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def plain(value):
    """Dicts, lists and scalars only (tuples as lists): what YAML and checkpoints hold."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
