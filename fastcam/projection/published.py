"""Published DeepCAM figures the projection is checked against and plotted with.

Sources: shared/spec/benchmark.md (the ESIF-HPC-4 DeepCAM README of December
2025 for the baseline; NVIDIA's MLPerf HPC v3.0 weak-scaling logs for the
16-GPU run).
"""

from __future__ import annotations

from dataclasses import dataclass

BASELINE_EPOCHS = 26  # the baseline (AdamW, start LR 1e-3, local batch 8) on 4 x 4 H100
BASELINE_GLOBAL_BATCH = 128
BASELINE_SOURCE = "published baseline: 26 epochs at global batch 128, AdamW (ESIF-HPC-4 DeepCAM README, 2025-12)"


@dataclass(frozen=True)
class Anchor:
    label: str
    accelerators: int
    minutes: float
    epochs: float
    source: str


ANCHORS = (
    Anchor("baseline, 4 nodes x 4 H100", 16, 276.0, 26,
           "ESIF-HPC-4 DeepCAM README (2025-12): baseline, AdamW, global batch 128"),
    Anchor("NVIDIA MLPerf HPC v3.0, 16 H100", 16, 14.1, 8,
           "NVIDIA's MLPerf HPC v3.0 weak-scaling logs: median 14.1 min, LAMB, global batch 128"),
)
