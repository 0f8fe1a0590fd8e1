"""The Trainer: one network's training step, epoch, evaluation, warm-up and fit.

Built from a run plan (fastcam.train.plan), it applies the execution in
fastcam.train.execution's documented order and owns the pieces a step needs.
Semantics follow the MLCommons reference trainer (``driver/trainer.py``,
``driver/validation.py``):

- the loss is divided by the gradient accumulation frequency; the optimizer
  and the LR schedule step once every ``accumulation`` micro-batches;
- ``logging_frequency`` N > 0: every N optimizer steps, callbacks get the LR
  that step used and the rank-averaged loss and IoU of its batch; at the end of
  every epoch the same three values for the epoch's *last* batch (the
  reference's end-of-epoch ``train_loss`` is the last batch's, not a mean);
- evaluation runs the whole validation shard; per-sample IoU and loss sums and
  the sample count are all-reduced, so the accuracy is the mean over the
  *whole* validation set.

Losses are accumulated on the device so no step waits for the host. The
network is injectable (``model=``) so that tests of the loop mechanics can use
a small one; ``fastcam.model`` stays the reference network.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from fastcam import accelerator, distributed
from fastcam.data.layout import NUM_CLASSES
from fastcam.errors import DataError
from fastcam.loss import WeightedCrossEntropy
from fastcam.metric import per_sample_iou
from fastcam.model import build_model
from fastcam.train import checkpoint
from fastcam.train.execution import compile_model, place_batch, place_model
from fastcam.train.optim import build_optimizer
from fastcam.train.plan import RunPlan
from fastcam.train.schedule import build_scheduler


@dataclass
class EpochResult:
    loss: float  # mean over the epoch's batches, all ranks (console and tuning)
    iou: float  # the last batch's, all ranks
    samples: int  # global samples trained this epoch
    steps: int
    last_loss: float = float("nan")  # the last batch's loss, all ranks (what the MLPerf log records)
    last_lr: float = float("nan")  # the LR the last optimizer step used


@dataclass
class EvalResult:
    iou: float
    loss: float
    samples: int  # evaluated, all ranks together


@dataclass
class EpochRecord:
    epoch: int  # 1-based, as the MLPerf log counts
    step: int
    train_loss: float
    train_iou: float
    eval_iou: float
    eval_loss: float
    samples_per_s: float  # training throughput of this epoch, all ranks
    elapsed_s: float  # since the start of fit
    eval_samples: int


class Callback:
    """Hooks of :meth:`Trainer.fit`, called on every rank; any may raise to stop
    the run (tuning raises optuna.TrialPruned from ``on_epoch_end``)."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_batch_end(self, trainer: "Trainer", epoch: int, batch_index: int, samples: int) -> None: ...
    def on_step_logged(self, trainer: "Trainer", epoch: int, step: int, lr: float, loss: float, iou: float) -> None: ...
    def on_train_end(self, trainer: "Trainer", epoch: int, result: EpochResult) -> None: ...
    def on_eval_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_eval_end(self, trainer: "Trainer", epoch: int, result: EvalResult, reached: bool) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", record: EpochRecord) -> None: ...
    def on_fit_end(self, trainer: "Trainer", reached: bool) -> None: ...


class Trainer:
    def __init__(self, plan: RunPlan, ctx, model: torch.nn.Module | None = None):
        """Steps 1-6 of fastcam.train.execution; call after seeding the RNG."""
        hp, ex = plan.hyperparameters, plan.execution
        self.plan, self.ctx, self.execution = plan, ctx, ex
        model = model if model is not None else build_model(len(hp.channels), NUM_CLASSES)
        model = place_model(model, ex)
        self.model = distributed.convert_batchnorm(model, ctx, hp.batchnorm_group_size, ex.device)
        self.optimizer = build_optimizer(self.model.parameters(), hp.optimizer, hp.start_lr,
                                         betas=tuple(hp.optimizer_betas), eps=hp.optimizer_eps,
                                         weight_decay=hp.weight_decay, fused=ex.fused_optimizer)
        self.scheduler = build_scheduler(self.optimizer, hp.lr_schedule.as_dict(), hp.lr_warmup_steps,
                                         hp.lr_warmup_factor)
        self.scaler = torch.amp.GradScaler(ex.device.type) if ex.grad_scaler else None
        wrapped = distributed.wrap_model(self.model, ctx, ex.device, hp.batchnorm_group_size, fast_ddp=ex.fast_ddp)
        self.net = compile_model(wrapped, ex)
        self.criterion = WeightedCrossEntropy().to(ex.device)
        self.step = 0  # optimizer steps taken
        self._micro = 0  # micro-batches since the last optimizer step

    # -- one step --------------------------------------------------------------
    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor):
        """Forward and backward of one micro-batch; the optimizer and LR schedule
        step when the accumulation is complete. Returns (loss, logits, labels)
        on the device, the loss not divided by the accumulation."""
        accumulation = self.plan.hyperparameters.gradient_accumulation_frequency
        inputs, labels = place_batch(inputs, labels, self.execution)
        with self.execution.autocast():
            logits = self.net(inputs)
            loss = self.criterion(logits, labels) / accumulation
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self._micro += 1
        if self._micro == accumulation:
            self._micro = 0
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.last_lr = self.optimizer.param_groups[0]["lr"]  # what this step used (reference: get_last_lr())
            self.scheduler.step()
        return loss.detach() * accumulation, logits, labels

    def train_epoch(self, batches: Iterable, epoch: int = 0, callbacks: Sequence[Callback] = ()) -> EpochResult:
        self.net.train()
        frequency = self.plan.hyperparameters.logging_frequency
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.execution.device)
        micro, last = 0, None
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        self._micro = 0
        guard = _NonFiniteGuard(self.execution.device)
        for index, (inputs, labels, names) in enumerate(batches):
            step_before = self.step
            loss, logits, labels = self.train_step(inputs, labels)
            loss_sum += loss.double()
            micro += 1
            last = (loss, logits, labels)
            guard.record(loss, self.step, names)
            for cb in callbacks:
                cb.on_batch_end(self, epoch, index, labels.shape[0])
            if frequency > 0 and self.step != step_before and self.step % frequency == 0 and callbacks:
                loss_avg, iou_avg = _rank_mean(self.ctx, loss, _batch_iou(logits, labels))
                for cb in callbacks:
                    cb.on_step_logged(self, epoch, self.step, self.last_lr, loss_avg, iou_avg)
        guard.check()
        if micro == 0:
            return EpochResult(float("nan"), float("nan"), 0, 0)
        loss, logits, labels = last
        loss_mean, iou_last, loss_last = _rank_mean(self.ctx, loss_sum / micro, _batch_iou(logits, labels), loss)
        accumulation = self.plan.hyperparameters.gradient_accumulation_frequency
        return EpochResult(loss_mean, iou_last, micro * labels.shape[0] * self.ctx.world_size, micro // accumulation,
                           loss_last, self.last_lr)

    @torch.no_grad()
    def evaluate(self, batches: Iterable) -> EvalResult:
        """Mean IoU and loss over the whole validation set, all ranks. At the
        reference's batch 1 the loss is the criterion's; batched, it is the sum
        of per-sample losses, and a short last batch is padded to the plan's
        batch (one shape for compiled graphs) with the padding not counted."""
        self.net.eval()
        size = self.plan.eval_batch_size
        totals = torch.zeros(3, dtype=torch.float64, device=self.execution.device)  # iou sum, loss sum, count
        for inputs, labels, _ in batches:
            inputs, labels = place_batch(inputs, labels, self.execution)
            real = labels.shape[0]
            if size > 1 and real < size:
                pad = size - real
                inputs = torch.cat([inputs, inputs[-1:].expand(pad, *inputs.shape[1:])])
                inputs = inputs.contiguous(memory_format=self.execution.memory_format)
                labels = torch.cat([labels, labels[-1:].expand(pad, *labels.shape[1:])])
            with self.execution.autocast():
                logits = self.net(inputs)
            logits, labels = logits[:real], labels[:real]
            if size == 1:
                totals[1] += self.criterion(logits, labels).double()
            else:
                totals[1] += self.criterion.per_sample(logits, labels).double().sum()
            totals[0] += per_sample_iou(logits.argmax(dim=1), labels, logits.shape[1]).sum()
            totals[2] += real
        distributed.all_reduce_sum(totals, self.ctx)
        iou_sum, loss_sum, count = totals.tolist()
        if count == 0:
            return EvalResult(float("nan"), float("nan"), 0)
        return EvalResult(iou_sum / count, loss_sum / count, int(count))

    # -- around the timed region ------------------------------------------------
    def warm_up(self, steps: int = 2) -> float:
        """Run ``steps`` training steps and one evaluation batch on random
        tensors of the plan's shape and input dtype (so compiled graphs do not
        recompile on the first real batch), then restore every piece of state
        (weights, BN statistics, optimizer, scaler, RNG, counters): the run's
        trajectory is exactly as if no warm-up had happened. Returns seconds."""
        start = time.perf_counter()
        saved = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                 copy.deepcopy(self.scaler.state_dict()) if self.scaler is not None else None,
                 copy.deepcopy(self.scheduler.state_dict()), checkpoint.rng_state(), self.step)
        hp = self.plan.hyperparameters
        batches = [self.synthetic_batch(hp.local_batch_size) for _ in range(steps)]
        self.train_epoch(batches)
        self.evaluate([self.synthetic_batch(self.plan.eval_batch_size)])
        accelerator.synchronize(self.execution.device)  # the warm-up's kernels finish before the restore
        model_state, optimizer_state, scaler_state, scheduler_state, rng, step = saved
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)
        if self.scaler is not None:
            self.scaler.load_state_dict(scaler_state)
        self.scheduler.load_state_dict(scheduler_state)
        checkpoint.set_rng_state(rng)
        self.step = step
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def synthetic_batch(self, batch_size: int):
        """Random inputs and labels of the plan's shape and input dtype."""
        height, width = self.plan.sample_shape
        device, channels = self.execution.device, len(self.plan.hyperparameters.channels)
        inputs = torch.rand(batch_size, channels, height, width, device=device).to(self.plan.input_dtype)
        labels = torch.randint(0, NUM_CLASSES, (batch_size, height, width), device=device)
        return inputs, labels, ["synthetic"] * batch_size

    # -- the epochs ----------------------------------------------------------------
    def fit(self, loaders, callbacks: Sequence[Callback] = (), start_epoch: int = 0) -> list[EpochRecord]:
        """Train epochs until the target IoU or ``max_epochs``; evaluation inside
        each epoch, as the reference does. Returns one record per epoch run."""
        run = self.plan.run
        for cb in callbacks:
            cb.on_fit_start(self)
        start, history, reached = time.perf_counter(), [], False
        for epoch in range(start_epoch, run.max_epochs):
            for cb in callbacks:
                cb.on_epoch_start(self, epoch)
            loaders.set_epoch(epoch)
            t0 = time.perf_counter()
            result = self.train_epoch(loaders.train, epoch, callbacks)
            train_s = time.perf_counter() - t0
            for cb in callbacks:
                cb.on_train_end(self, epoch, result)
            distributed.average_batchnorm_stats(self.model, self.ctx)
            for cb in callbacks:
                cb.on_eval_start(self, epoch)
            evaluation = self.evaluate(loaders.validation)
            reached = evaluation.iou >= run.target_iou
            for cb in callbacks:
                cb.on_eval_end(self, epoch, evaluation, reached)
            record = EpochRecord(epoch + 1, self.step, result.loss, result.iou, evaluation.iou, evaluation.loss,
                                 result.samples / train_s if train_s > 0 else 0.0, time.perf_counter() - start,
                                 evaluation.samples)
            history.append(record)
            for cb in callbacks:
                cb.on_epoch_end(self, record)
            if reached:
                break
        for cb in callbacks:
            cb.on_fit_end(self, reached)
        return history


class NonFiniteLoss(DataError):
    """The training loss became NaN or infinite (bad data, or a diverging LR)."""


class _NonFiniteGuard:
    """Stops training on a non-finite loss with one line naming the step and the
    batch's files. The test runs on the device (``isfinite`` into a flag and the
    first bad step, no host read per step); the host looks every ``CHECK_EVERY``
    batches and at the epoch's end, keeping the names of the batches since its
    last look. It only reads values, so a run that stays finite is unchanged
    (the reference does not check; its numbers are kept)."""

    CHECK_EVERY = 64

    def __init__(self, device: torch.device):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.names: dict[int, Sequence[str]] = {}
        self.seen = 0

    def record(self, loss: torch.Tensor, step: int, names) -> None:
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.names[step] = names
        self.seen += 1
        if self.seen % self.CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        step = int(self.first_bad.item()) if self.names else -1
        if step >= 0:
            files = ", ".join(str(n) for n in self.names.get(step, ()))
            raise NonFiniteLoss(f"non-finite training loss at step {step} (batch of {files}); stopping: "
                                "check these files (fastcam data check) or lower the learning rate")
        self.names.clear()


def _batch_iou(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return per_sample_iou(logits.detach().argmax(dim=1), labels, logits.shape[1]).mean()


def _rank_mean(ctx, *values: torch.Tensor) -> list[float]:
    stacked = torch.stack([v.double() for v in values])
    distributed.all_reduce_sum(stacked, ctx)
    return (stacked / ctx.world_size).tolist()
