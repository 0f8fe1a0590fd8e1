"""The run type of any log, from its hyperparameters and a rules profile.

The ESIF-HPC-4 rules (top-level README) know three run types: *baseline*
(the published parameters, as-is), *ported* (the baseline parameters, only
the code changes a new architecture needs) and *optimized*; MLPerf adds the
*open* division. A log from the MLCommons reference or NVIDIA's code does not
say which it is, so the type follows from what it logged:

1. ``submission_division`` open -> *open*;
2. every baseline hyperparameter of the profile equals the logged value
   (``opt_*``, ``scheduler_*``, ``local_batch_size``, ...; the profile's fixed
   global batch, where it has one; its baseline precision, where the log says
   which it used) -> *ported* when the log says so (``fastcam_mode`` ported),
   else *baseline*;
3. otherwise *optimized*, with the first differences as the reason.

A hyperparameter the log does not record counts as a difference: a baseline
claim needs the evidence. ``--type FILE=TYPE`` overrides all of this.

Precision, as the tables show it (:func:`precision_text`): how the network
computed -- ``precision_mode`` (``fp32``, ``amp_fp16``, ``amp_bf16``, shown as
fp32, AMP fp16, AMP bf16; another tool's value, such as NVIDIA's ``amp``,
verbatim), else, in fastcam logs written before that key, the autocast dtype in
``fastcam_execution`` (fp32, fp16, bf16: the same three texts), else
"unknown" -- and ", fp16 inputs" where the stage cache fed float16 inputs
(``fastcam_stage_dtype`` fp16; in those older logs, ``fastcam_loader`` staged
or dali, which always stored float16). Float16 inputs count as reduced
precision for the baseline comparison as well.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastcam import logkeys, schema
from fastcam.compare.logs import RunLog
from fastcam.config import Hyperparameters, canonical_optimizer
from fastcam.errors import ConfigError
from fastcam.rules import REDUCED_PRECISIONS

RUN_TYPES = ("baseline", "ported", "optimized", "open")
# fastcam config field -> the log key the reference writes for it, from the
# config's declaration (the schedule's keys are compared apart, by type).
_LOG_KEYS = {name: p.log_key for name, p in schema.params(Hyperparameters)
             if p.log_key is not None and name != "lr_schedule"}
# Spellings seen in logs -> the profile's names: fastcam's (and NVIDIA's) precision_mode
# values amp_fp16 / amp_bf16; NVIDIA's DeepCAM logs "amp" for its fp16 autocast +
# GradScaler mode (mlcommons/hpc_results_v3.0 NVIDIA result files).
_PRECISION_NAMES = {**{mode: name for name, mode in logkeys.PRECISION_MODES.items()},
                    "amp": "fp16", "mixed": "fp16", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                    "float32": "fp32"}
# precision_mode value -> the tables' text; other values are shown as logged.
_PRECISION_TEXT = {logkeys.PRECISION_MODES["fp32"]: "fp32", logkeys.PRECISION_MODES["fp16"]: "AMP fp16",
                   logkeys.PRECISION_MODES["bf16"]: "AMP bf16"}
UNKNOWN_PRECISION = "unknown"
# Before fastcam_stage_dtype was logged, these loaders always stored float16 inputs.
_FP16_STAGE_LOADERS = ("staged", "dali")
# Relative tolerance for logged floats: NVIDIA logs float32 values (0.0020000000949949026).
_REL_TOL = 1e-6
_SHOWN_DIFFERENCES = 2


@dataclass(frozen=True)
class RunType:
    kind: str
    reason: str  # one line: why this type


def classify(log: RunLog, profile: Any, override: str | None = None) -> RunType:
    """The run type of ``log`` under ``profile`` (a :mod:`fastcam.rules` profile)."""
    if override is not None:
        if override not in RUN_TYPES:
            raise ConfigError(f"run type must be one of {', '.join(RUN_TYPES)}, got {override!r}")
        return RunType(override, "set with --type")
    if str(log.value(logkeys.SUBMISSION_DIVISION, "")).lower() == "open":
        return RunType("open", "submission_division open")
    differences = baseline_differences(log, profile)
    name = getattr(profile, "name", "the profile")
    if differences:
        shown = "; ".join(differences[:_SHOWN_DIFFERENCES])
        more = f" (+{len(differences) - _SHOWN_DIFFERENCES} more)" if len(differences) > _SHOWN_DIFFERENCES else ""
        return RunType("optimized", f"differs from the {name} baseline: {shown}{more}")
    if log.value(logkeys.FASTCAM_MODE) == "ported":
        return RunType("ported", f"{name} baseline parameters; fastcam_mode ported")
    return RunType("baseline", f"{name} baseline parameters")


def baseline_differences(log: RunLog, profile: Any) -> list[str]:
    """``"key logged != baseline"`` for each baseline parameter the log differs in."""
    baseline = _as_mapping(profile.baseline)
    out: list[str] = []
    warmup_steps = _get(baseline, "lr_warmup_steps")
    for field, key in _LOG_KEYS.items():
        wanted = _get(baseline, field)
        if wanted is None:
            continue
        if field == "lr_warmup_factor" and not warmup_steps:
            continue  # no effect without warmup steps (the published script logs 0 there)
        if field == "local_batch_size" and log.value(key) is None:
            logged = _derived_local_batch(log)
        else:
            logged = log.value(key)
        if field == "optimizer":
            logged, wanted = _optimizer(logged), canonical_optimizer(wanted)
        if not _same(logged, wanted):
            out.append(_difference(key, logged, wanted))
    out += _schedule_differences(log, _as_mapping(_get(baseline, "lr_schedule") or {}))
    fixed_global = getattr(profile, "global_batch_size", None)
    if fixed_global is not None and not _same(log.value(logkeys.GLOBAL_BATCH_SIZE), fixed_global):
        out.append(_difference(logkeys.GLOBAL_BATCH_SIZE, log.value(logkeys.GLOBAL_BATCH_SIZE), fixed_global))
    allowed = baseline_precisions(profile)
    used = logged_precision(log)
    if allowed and used is not None and used not in allowed:
        out.append(f"precision {used} (baseline allows {', '.join(allowed)})")
    inputs = logged_stage_dtype(log)
    if allowed and inputs not in (None, "fp32") and not any(p in allowed for p in REDUCED_PRECISIONS):
        out.append(f"{inputs} inputs from the stage cache (baseline allows {', '.join(allowed)})")
    return out


def logged_precision(log: RunLog) -> str | None:
    """``fp32``, ``fp16`` or ``bf16`` (another tool's unknown value lower-cased) as the
    log records it; None when it does not."""
    value = _compute_precision(log)
    if value is None:
        return None
    name = str(value).lower()
    return _PRECISION_NAMES.get(name, name)


def logged_stage_dtype(log: RunLog) -> str | None:
    """The dtype the stage cache fed the network (``fp16``, ``fp32``), None when no
    cache fed it or the log does not say: ``fastcam_stage_dtype``; in a fastcam log
    from before that key and ``precision_mode`` (a log that has ``precision_mode``
    logs the stage dtype whenever a cache is used), fp16 for the staged and DALI loaders."""
    value = log.value(logkeys.FASTCAM_STAGE_DTYPE)
    if value is not None:
        return str(value)
    if log.value(logkeys.PRECISION_MODE) is None and log.value(logkeys.FASTCAM_LOADER) in _FP16_STAGE_LOADERS:
        return "fp16"
    return None


def precision_text(log: RunLog) -> str:
    """The Precision cell: "fp32", "AMP fp16", "AMP bf16" (another tool's
    ``precision_mode`` verbatim, "unknown" without one), plus ", fp16 inputs" where
    the stage cache stored float16 (another non-fp32 stage dtype likewise)."""
    mode = log.value(logkeys.PRECISION_MODE)
    if mode is not None:
        text = _PRECISION_TEXT.get(str(mode), str(mode))
    else:
        old = _compute_precision(log)  # fastcam_execution's autocast dtype: fp32 | fp16 | bf16
        text = UNKNOWN_PRECISION if old is None else _PRECISION_TEXT.get(
            logkeys.PRECISION_MODES.get(str(old), ""), str(old))
    inputs = logged_stage_dtype(log)
    return text if inputs in (None, "fp32") else f"{text}, {inputs} inputs"


def _compute_precision(log: RunLog):
    """``precision_mode`` as logged, else fastcam_execution's ``precision`` (older fastcam logs)."""
    value = log.value(logkeys.PRECISION_MODE)
    if value is None:
        execution = log.value(logkeys.FASTCAM_EXECUTION)
        value = execution.get("precision") if isinstance(execution, Mapping) else None
    return value


def baseline_precisions(profile: Any) -> tuple[str, ...]:
    """The precisions the profile allows a baseline run (empty: no rule)."""
    policy = getattr(profile, "precision", None)
    if isinstance(policy, Mapping):
        policy = policy.get("baseline")
    elif policy is not None and hasattr(policy, "baseline"):
        policy = policy.baseline
    if policy is None:
        return ()
    values = [policy] if isinstance(policy, str) else list(policy)
    return tuple(str(v).lower() for v in values)


def _schedule_differences(log: RunLog, schedule: Mapping[str, Any]) -> list[str]:
    out = []
    for name, wanted in schedule.items():
        key = logkeys.SCHEDULER_PREFIX + name
        logged = log.value(key)
        if not _same(logged, wanted):
            out.append(_difference(key, logged, wanted))
    return out


def _derived_local_batch(log: RunLog) -> int | None:
    global_batch, ranks = log.value(logkeys.GLOBAL_BATCH_SIZE), log.value(logkeys.NUMBER_OF_RANKS)
    accumulation = log.value(logkeys.GRADIENT_ACCUMULATION_FREQUENCY) or 1
    if isinstance(global_batch, int) and isinstance(ranks, int) and ranks > 0:
        return global_batch // (ranks * accumulation)
    return None


def _optimizer(value: Any) -> Any:
    try:
        return canonical_optimizer(value)
    except ConfigError:
        return value


def _same(logged: Any, wanted: Any) -> bool:
    if logged is None:
        return False
    if isinstance(wanted, (list, tuple)):
        return isinstance(logged, (list, tuple)) and len(logged) == len(wanted) and all(
            _same(a, b) for a, b in zip(logged, wanted))
    if isinstance(wanted, bool) or isinstance(logged, bool):
        return logged == wanted
    if isinstance(wanted, (int, float)) and isinstance(logged, (int, float)):
        return math.isclose(float(logged), float(wanted), rel_tol=_REL_TOL, abs_tol=1e-12)
    return str(logged).lower() == str(wanted).lower()


def _difference(key: str, logged: Any, wanted: Any) -> str:
    return f"{key} not logged (baseline {wanted!r})" if logged is None else f"{key} {logged!r} != {wanted!r}"


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "as_dict") and callable(value.as_dict):  # fastcam.config.LRSchedule: its type's keys only
        return value.as_dict()
    if dataclasses.is_dataclass(value):  # shallow: a nested schedule keeps its own as_dict
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return vars(value)


def _get(mapping: Mapping[str, Any], name: str) -> Any:
    return mapping.get(name)
