"""Time one optimizer step over the DeepCAM network's parameters (random gradients).

    python3 scripts/optimizer_step_cost.py [--device cpu|cuda] [--steps 5]

Prints ms per step for LAMB (torch foreach, and fused: Triton on CUDA, torch's
fused Adam kernel + trust ratio on a CPU), AdamW (torch's default) and AdamW
fused: the optimizer's share of a training step.
"""

from __future__ import annotations

import argparse
import time

import torch

from fastcam.model import build_model
from fastcam.train.optim import build_optimizer, optimizer_implementation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    params = list(build_model(16, 3).to(args.device).parameters())
    for param in params:
        param.grad = torch.randn_like(param) * 1e-3
    for name, fused in (("LAMB", False), ("LAMB", True), ("AdamW", False), ("AdamW", True)):
        opt = build_optimizer(params, name, 1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, fused=fused)
        for _ in range(2):
            opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / args.steps * 1000
        print(f"{optimizer_implementation(opt):36s} {ms:8.1f} ms/step")


if __name__ == "__main__":
    main()
