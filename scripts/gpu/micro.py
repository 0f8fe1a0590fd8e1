"""GPU check part ``micro``: microbenchmarks that decide where kernel work pays.

- ``optimizer``: one step over the full network's parameters with random
  gradients, each optimizer built by the runs' factory and named by what runs
  (``fastcam.train.optim.optimizer_implementation``): LAMB (torch foreach),
  LAMB fused (the Triton LAMB of ``fastcam.kernels`` on CUDA), fused AdamW,
  AdamW with torch's default; without CUDA the Triton LAMB runs directly, in
  triton's interpreter, when triton is importable.
- ``loss``: ``fastcam.loss.weighted_cross_entropy`` forward and forward +
  backward on full-size logits, and the evaluation's per-sample IoU.
- ``depthwise_conv`` and ``bn_relu``: forward and forward + backward at the
  network's shapes (entry flow at stride 4, middle flow at stride 16, exit
  flow at stride 16 with dilation 2), channels-last, under the optimized
  run's autocast; GB/s counts input + output bytes of the forward.

Times are per call, from ``iters`` calls after ``warmup`` untimed ones, the
device synchronised around them. In the CPU smoke mode the optimizers step
only the first ``SMOKE_TENSORS`` parameter tensors (a Triton LAMB runs in
triton's interpreter there).
"""

from __future__ import annotations

import time
from typing import Callable

import common
import torch
from report import Report, Settings, main, say

SMOKE_TENSORS = 4
# (name, optimizer, fused) through the runs' optimizer factory; LAMB fused is what the optimized
# recipe runs (the Triton LAMB on CUDA when triton is installed).
VARIANTS = (("lamb", "LAMB", False), ("lamb_fused", "LAMB", True), ("adamw_fused", "AdamW", True),
            ("adamw_default", "AdamW", False))
# (name, channels, stride relative to the input, dilation)
SHAPES = (("entry", 128, 4, 1), ("middle", 728, 16, 1), ("exit", 1536, 16, 2))


def run(report: Report, settings: Settings) -> None:
    dev = common.device(settings)
    warmup, iters = (1, 2) if settings.smoke else (3, 20)
    report.attempt("optimizer", lambda: optimizers(report, settings, dev, warmup, iters))
    report.attempt("loss", lambda: loss(report, settings, dev, warmup, iters))
    report.attempt("depthwise_conv", lambda: layers(report, settings, dev, warmup, iters, "depthwise_conv"))
    report.attempt("bn_relu", lambda: layers(report, settings, dev, warmup, iters, "bn_relu"))


def timed(fn: Callable[[], object], dev: torch.device, warmup: int, iters: int) -> float:
    """Milliseconds per call."""
    for _ in range(warmup):
        fn()
    common.sync(dev)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    common.sync(dev)
    return 1000 * (time.perf_counter() - start) / iters


def optimizers(report: Report, settings: Settings, dev: torch.device, warmup: int, iters: int) -> None:
    params = list(common.model(dev, channels_last=True).parameters())
    if settings.smoke:
        params = params[:SMOKE_TENSORS]
    torch.manual_seed(0)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3  # same strides as the parameter, as autograd makes them
    report.record("optimizer", tensors=len(params), parameters=sum(p.numel() for p in params))
    variants = [(name, lambda n=optimizer, f=fused: common.optimizer(n, params, fused=f))
                for name, optimizer, fused in VARIANTS]
    for name, make in variants:
        report.attempt(f"optimizer.{name}", lambda name=name, make=make: _step(report, dev, warmup, iters, name, make))
    implementations = [v for k, v in report.data["results"]["optimizer"].items() if k.endswith("_implementation")]
    if not any("triton" in v for v in implementations):
        # Without CUDA the factory never picks the Triton LAMB; run it directly (in triton's interpreter).
        make = common.triton_lamb(params)
        if make is None:
            report.record("optimizer", lamb_triton="skipped: triton is not importable")
        else:
            report.attempt("optimizer.lamb_triton", lambda: _step(report, dev, warmup, iters, "lamb_triton", make))


def _step(report: Report, dev: torch.device, warmup: int, iters: int, name: str, make) -> None:
    opt = make()
    ms = timed(opt.step, dev, warmup, iters)
    report.record("optimizer", **{f"{name}_ms": ms, f"{name}_implementation": common.optimizer_implementation(opt)})
    say(f"optimizer {name} ({common.optimizer_implementation(opt)}): {ms:.2f} ms/step")


def loss(report: Report, settings: Settings, dev: torch.device, warmup: int, iters: int) -> None:
    from fastcam.loss import class_weights, weighted_cross_entropy
    from fastcam.metric import per_sample_iou

    s = settings.size
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    logits = torch.randn(s.batch, 3, s.height, s.width, device=dev, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 3, (s.batch, s.height, s.width), device=dev)
    weights = class_weights(device=dev)

    def forward_backward():
        weighted_cross_entropy(logits, labels, weights).backward()

    with torch.no_grad():
        fwd = timed(lambda: weighted_cross_entropy(logits, labels, weights), dev, warmup, iters)
        iou = timed(lambda: per_sample_iou(logits.argmax(dim=1), labels, 3), dev, warmup, iters)
    report.record("loss", shape=list(logits.shape), dtype=str(dtype), forward_ms=fwd,
                  forward_backward_ms=timed(forward_backward, dev, warmup, iters), iou_ms=iou)
    say(f"loss: forward {fwd:.2f} ms, IoU {iou:.2f} ms")


def layers(report: Report, settings: Settings, dev: torch.device, warmup: int, iters: int, kind: str) -> None:
    s = settings.size
    for name, channels, stride, dilation in SHAPES:
        if kind == "depthwise_conv":
            layer = torch.nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels,
                                    bias=False)
        else:
            layer = torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU())
        layer = layer.to(dev, memory_format=torch.channels_last).train()
        x = torch.randn(s.batch, channels, s.height // stride, s.width // stride, device=dev)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        autocast = torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda" else torch.autocast(
            "cpu", enabled=False)

        def forward(layer=layer, x=x, autocast=autocast):
            with autocast:
                return layer(x)

        def forward_backward(forward=forward):
            forward().sum().backward()

        out = forward()
        fwd = timed(forward, dev, warmup, iters)
        nbytes = x.numel() * x.element_size() + out.numel() * out.element_size()
        shape = {"shape": list(x.shape)} | ({"dilation": dilation} if kind == "depthwise_conv" else {})
        report.record(kind, **{name: {**shape, "forward_ms": fwd,
                                      "forward_backward_ms": timed(forward_backward, dev, warmup, iters),
                                      "forward_gb_per_s": nbytes / fwd / 1e6}})
        say(f"{kind} {name} {list(x.shape)}: forward {fwd:.3f} ms ({nbytes / fwd / 1e6:.1f} GB/s)")


if __name__ == "__main__":
    main("micro", run)
