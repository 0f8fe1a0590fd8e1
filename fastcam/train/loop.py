"""One training epoch and one evaluation pass (the inner loops).

Semantics follow the MLCommons reference trainer:
- the loss is divided by the gradient accumulation frequency; the optimizer
  and the LR schedule step once every ``accumulation`` micro-batches;
- ``logging_frequency`` N > 0: every N optimizer steps, log the learning
  rate that step used, the rank-averaged loss and IoU of that step's batch;
  and, in every case, at the end of the epoch the same three values for the
  epoch's *last* batch (the reference's ``driver/trainer.py``: its end-of-epoch
  ``train_loss`` is the last batch's, not the epoch mean);
- evaluation runs the whole validation shard at batch size 1; per-sample IoU
  and loss sums and the sample count are all-reduced, so the accuracy is the
  mean over the *whole* validation set.
Losses are accumulated on the device so no step waits for the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fastcam import distributed
from fastcam.metric import per_sample_iou
from fastcam.train.execution import Execution, place_batch


@dataclass
class StepState:
    step: int = 0  # optimizer steps taken so far


@dataclass
class EpochResult:
    loss: float  # mean over the epoch's batches, all ranks (for the console and tuning)
    iou: float  # the last batch's, all ranks
    samples: int  # global samples trained this epoch
    steps: int
    last_loss: float = float("nan")  # the last batch's loss, all ranks (what the MLPerf log records)
    last_lr: float = float("nan")  # the LR the last optimizer step used


def train_epoch(model, loader, *, criterion, optimizer, scheduler, grad_scaler, execution: Execution,
                ctx, state: StepState, accumulation: int, logging_frequency: int,
                log_step: Callable[[int, float, float, float], None] | None = None) -> EpochResult:
    model.train()
    device = execution.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    micro = 0
    last = None
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    for inputs, labels, _ in loader:
        inputs, labels = place_batch(inputs, labels, execution)
        with execution.autocast():
            logits = model(inputs)
            loss = criterion(logits, labels) / accumulation
        if grad_scaler is not None:
            grad_scaler.scale(loss).backward()
        else:
            loss.backward()
        loss_sum += loss.detach().double() * accumulation
        micro += 1
        last = (logits, labels, loss)
        if micro % accumulation:
            continue
        if grad_scaler is not None:
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        lr = optimizer.param_groups[0]["lr"]  # the LR this step used (the reference's get_last_lr() before stepping)
        if scheduler is not None:
            scheduler.step()
        if logging_frequency > 0 and state.step % logging_frequency == 0 and log_step is not None:
            loss_avg, iou_avg = _rank_mean(ctx, loss.detach() * accumulation, _batch_iou(logits, labels))
            log_step(state.step, lr, loss_avg, iou_avg)
    if micro == 0:
        return EpochResult(float("nan"), float("nan"), 0, 0)
    logits, labels, loss = last
    loss_mean, iou_last, loss_last = _rank_mean(ctx, loss_sum / micro, _batch_iou(logits, labels),
                                                loss.detach() * accumulation)
    return EpochResult(loss_mean, iou_last, micro * labels.shape[0] * ctx.world_size, micro // accumulation,
                       loss_last, lr)


@torch.no_grad()
def evaluate(model, loader, *, criterion, execution: Execution, ctx) -> tuple[float, float, int]:
    """(mean IoU, mean loss, samples) over the whole validation set, all ranks."""
    model.eval()
    device = execution.device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # iou sum, loss sum, count
    for inputs, labels, _ in loader:
        inputs, labels = place_batch(inputs, labels, execution)
        with execution.autocast():
            logits = model(inputs)
            loss = criterion(logits, labels)
        totals[0] += per_sample_iou(logits.argmax(dim=1), labels, logits.shape[1]).sum()
        totals[1] += loss.detach().double() * labels.shape[0]
        totals[2] += labels.shape[0]
    distributed.all_reduce_sum(totals, ctx)
    count = int(totals[2].item())
    if count == 0:
        return float("nan"), float("nan"), 0
    return (totals[0] / count).item(), (totals[1] / count).item(), count


def _batch_iou(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return per_sample_iou(logits.detach().argmax(dim=1), labels, logits.shape[1]).mean()


def _rank_mean(ctx, *values: torch.Tensor) -> list[float]:
    stacked = torch.stack([v.double() for v in values])
    distributed.all_reduce_sum(stacked, ctx)
    return (stacked / ctx.world_size).tolist()
