"""Build everything a training step needs, in execution.py's documented order,
and warm up compilation on synthetic tensors before the timed region."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from fastcam import distributed
from fastcam.config import Config
from fastcam.data.layout import NUM_CLASSES
from fastcam.loss import WeightedCrossEntropy
from fastcam.model import build_model
from fastcam.train import checkpoint
from fastcam.train.execution import Execution, compile_model, place_model, resolve_execution
from fastcam.train.loop import StepState, evaluate, train_epoch
from fastcam.train.optim import build_optimizer
from fastcam.train.schedule import build_scheduler


@dataclass
class Components:
    execution: Execution
    model: torch.nn.Module  # the plain network (for checkpoints and BN statistics)
    net: torch.nn.Module  # what runs: maybe DDP-wrapped and compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    criterion: torch.nn.Module


def build_components(config: Config, ctx, device: torch.device) -> Components:
    """Steps 1-6 of fastcam.train.execution; call after seeding the RNG."""
    hp = config.hyperparameters
    execution = resolve_execution(config, device)
    model = place_model(build_model(len(hp.channels), NUM_CLASSES), execution)
    model = distributed.convert_batchnorm(model, ctx, hp.batchnorm_group_size, device)
    optimizer = build_optimizer(model.parameters(), hp.optimizer, hp.start_lr, betas=tuple(hp.optimizer_betas),
                                eps=hp.optimizer_eps, weight_decay=hp.weight_decay, fused=execution.fused_optimizer)
    scheduler = build_scheduler(optimizer, hp.lr_schedule.as_dict(), hp.lr_warmup_steps, hp.lr_warmup_factor)
    scaler = torch.amp.GradScaler(device.type) if execution.grad_scaler else None
    net = compile_model(distributed.wrap_model(model, ctx, device, hp.batchnorm_group_size), execution)
    return Components(execution, model, net, optimizer, scheduler, scaler, WeightedCrossEntropy().to(device))


def synthetic_batch(batch_size: int, channels: int, height: int, width: int, device: torch.device,
                    dtype: torch.dtype = torch.float32):
    inputs = torch.rand(batch_size, channels, height, width, device=device).to(dtype)
    labels = torch.randint(0, NUM_CLASSES, (batch_size, height, width), device=device)
    return inputs, labels, ["synthetic"] * batch_size


def warm_up(c: Components, ctx, *, batch_size: int, channels: int, height: int, width: int, steps: int = 2,
            input_dtype: torch.dtype = torch.float32) -> float:
    """Run ``steps`` training steps and one batch-1 evaluation on random tensors,
    so compilation and autotuning happen now, then restore every piece of state
    (weights, BN statistics, optimizer, scaler, RNG): the run's trajectory is
    exactly as if no warm-up had happened. ``input_dtype`` must be the loader's
    (float16 for the staged loader) or compiled graphs would recompile on the
    first real batch. Returns the seconds it took."""
    start = time.perf_counter()
    saved_model = copy.deepcopy(c.model.state_dict())
    saved_optimizer = copy.deepcopy(c.optimizer.state_dict())
    saved_scaler = copy.deepcopy(c.scaler.state_dict()) if c.scaler is not None else None
    saved_rng = checkpoint.rng_state()
    device = c.execution.device
    batches = [synthetic_batch(batch_size, channels, height, width, device, input_dtype) for _ in range(steps)]
    train_epoch(c.net, batches, criterion=c.criterion, optimizer=c.optimizer, scheduler=None, grad_scaler=c.scaler,
                execution=c.execution, ctx=ctx, state=StepState(), accumulation=1, logging_frequency=0)
    evaluate(c.net, [synthetic_batch(1, channels, height, width, device, input_dtype)], criterion=c.criterion,
             execution=c.execution, ctx=ctx)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    c.model.load_state_dict(saved_model)
    c.optimizer.load_state_dict(saved_optimizer)
    if c.scaler is not None:
        c.scaler.load_state_dict(saved_scaler)
    checkpoint.set_rng_state(saved_rng)
    c.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start
