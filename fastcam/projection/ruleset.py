"""What a rules profile (fastcam.rules) decides about a projection.

- the node scales (``scales``: N/2N/4N, or M/4M/8M in the 2026-05 draft) when
  ``--nodes`` is not given;
- a fixed global batch (``global_batch_size``, the 2026-05 draft's 1024) when
  no batch flag is given;
- whether staging is timed (``staging_allowed: false`` keeps it inside the
  timed region: the December 2025 README times from run_start and is silent on
  staging);
- the MLPerf ruleset whose reference convergence points give the epochs;
- whether the baseline is the published AdamW recipe of 26 epochs at global
  batch 128 (the December 2025 README's), or another one (the January 2026
  draft's baseline is NVIDIA's LAMB recipe), whose epochs then come from the RCPs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RulesView:
    name: str
    title: str
    scales: tuple[int, ...]
    global_batch_size: int | None
    staging_timed: bool
    mlperf_ruleset: str
    published_baseline: bool  # the baseline recipe is the one published with 26 epochs


def rules_view(name: str) -> RulesView:
    """The profile's figures; an unknown name is fastcam.rules' one ConfigError listing the known ones."""
    from fastcam.rules import load

    profile = load(name)
    baseline = profile.baseline
    schedule = baseline.get("lr_schedule", {})
    published = (baseline.get("optimizer") == "AdamW" and baseline.get("start_lr") == 1e-3
                 and schedule.get("type") == "multistep" and baseline.get("local_batch_size") == 8)
    return RulesView(name=profile.name, title=profile.title, scales=tuple(profile.scales),
                     global_batch_size=profile.global_batch_size, staging_timed=not profile.staging_allowed,
                     mlperf_ruleset=profile.mlperf_ruleset, published_baseline=published)
