"""Writes the hand-made compare_* fixture logs (run once; the output is committed).

    python3 tests/data/compare_make_fixtures.py

Every figure the tests expect is chosen here, in the open: a 4 x 4 AdamW
multistep baseline in the MLCommons reference's format reaching 0.82 at epoch
26 after 276 minutes (the ESIF README's Kestrel run), a LAMB cosine run in
NVIDIA's stdout format reaching it at epoch 9 after 14.1 minutes, five repeats
of one NVIDIA-format configuration, a fastcam run killed in epoch 4 and
resumed from its epoch-3 checkpoint, and the 3-record stub a run that failed
at start leaves. Records follow the key order and metadata of the reference
(mlcommons/hpc deepcam/src/deepCam/train.py, driver/validation.py) and of
NVIDIA's v3.0 result files; evaluation lies inside each epoch interval.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
T0 = 1_700_000_000_000  # run_start, ms
TRAIN_SAMPLES, EVAL_SAMPLES = 121266, 15158


def record(time_ms: float, key: str, value=None, kind: str = "POINT_IN_TIME", src: str = "train.py", **meta) -> str:
    body = {"namespace": "", "time_ms": int(round(time_ms)), "event_type": kind, "key": key, "value": value,
            "metadata": {"file": f"/opt/deepCam/{src}", "lineno": 1, **meta}}
    return ":::MLLOG " + json.dumps(body)


def run_log(*, org, platform, nodes, gpus, local_batch, seed, optimizer, schedule, start_lr, minutes, epochs,
            reached=True, precision=None, extra=(), killed_in_epoch=None, first_epoch=1, run_start=T0,
            step_offset=0) -> list[str]:
    """One run: submission and hyperparameter keys, then ``epochs`` epochs whose last
    evaluation (if ``reached``) is the first at >= 0.82, at ``minutes`` after run_start."""
    ranks = nodes * max(gpus, 1)  # a CPU run logs 0 accelerators and runs one process per node
    batch = local_batch * ranks
    steps_per_epoch = TRAIN_SAMPLES // batch
    t = run_start - 100_000
    lines = [record(t, "init_start", kind="INTERVAL_START"), record(t, "cache_clear", True)]
    for key, value in (("submission_benchmark", "deepcam"), ("submission_org", org),
                       ("submission_division", "closed"), ("submission_status", "onprem"),
                       ("submission_platform", platform), ("seed", seed), ("number_of_ranks", ranks),
                       ("number_of_nodes", nodes), ("accelerators_per_node", gpus), ("global_batch_size", batch),
                       ("local_batch_size", local_batch), ("batchnorm_group_size", 1),
                       ("gradient_accumulation_frequency", 1), *extra):
        lines.append(record(t, key, value))
    if precision:
        lines.append(record(t, "precision_mode", precision))
    lines += [record(t, "opt_name", optimizer), record(t, "opt_lr", start_lr), record(t, "opt_betas", [0.9, 0.999]),
              record(t, "opt_eps", 1e-6), record(t, "opt_weight_decay", 0.01)]
    if optimizer == "LAMB":
        lines += [record(t, "opt_bias_correction", True), record(t, "opt_grad_averaging", True),
                  record(t, "opt_max_grad_norm", 1.0)]
    lines += [record(t, f"scheduler_{k}", v) for k, v in schedule.items()]
    lines += [record(t, "scheduler_lr_warmup_steps", 0), record(t, "scheduler_lr_warmup_factor", 1.0),
              record(t, "train_samples", TRAIN_SAMPLES), record(t, "eval_samples", EVAL_SAMPLES),
              record(run_start - 1, "init_stop", kind="INTERVAL_END"),
              record(run_start, "run_start", kind="INTERVAL_START")]
    epoch_ms = minutes * 60_000 / epochs  # evaluation included, the last epoch's eval ends at `minutes`
    last = epochs if killed_in_epoch is None else killed_in_epoch
    for epoch in range(first_epoch, last + 1):
        begin = run_start + (epoch - first_epoch) * epoch_ms
        step0, step1 = step_offset + (epoch - first_epoch) * steps_per_epoch, step_offset + (epoch - first_epoch + 1) * steps_per_epoch
        lines.append(record(begin + 1, "epoch_start", kind="INTERVAL_START", epoch_num=epoch, step_num=step0))
        if epoch == killed_in_epoch:
            lines.append(record(begin + 0.4 * epoch_ms, "train_loss", 0.2, src="driver/trainer.py",
                                epoch_num=epoch, step_num=step0 + steps_per_epoch // 2))
            break  # the job was killed here: no epoch_stop, no run_stop
        end = begin + epoch_ms
        accuracy = 0.8231 if (reached and epoch == epochs) else round(0.40 + 0.40 * epoch / (epochs + 1), 4)
        lines += [record(end - 0.1 * epoch_ms, "train_loss", 0.1, src="driver/trainer.py", epoch_num=epoch,
                         step_num=step1),
                  record(end - 0.1 * epoch_ms + 5, "eval_start", kind="INTERVAL_START", src="driver/validation.py",
                         epoch_num=epoch),
                  record(end - 3, "eval_accuracy", accuracy, src="driver/validation.py", epoch_num=epoch,
                         step_num=step1)]
        if accuracy >= 0.82:
            lines.append(record(end - 2, "target_accuracy_reached", 0.82, src="driver/validation.py",
                                epoch_num=epoch, step_num=step1))
        lines += [record(end - 1, "eval_stop", kind="INTERVAL_END", src="driver/validation.py", epoch_num=epoch),
                  record(end, "epoch_stop", kind="INTERVAL_END", epoch_num=epoch, step_num=step1)]
    if killed_in_epoch is None:
        status = "success" if reached else "aborted"
        lines.append(record(run_start + minutes * 60_000 + 10, "run_stop", kind="INTERVAL_END", status=status))
    return lines


def nvidia(lines: list[str]) -> str:
    """NVIDIA's result files: the job's stdout, srun --label prefixes and other text between records."""
    return "\n".join(["+ srun --label --ntasks=16 ./run_and_time.sh", "0: STARTING TIMING RUN",
                      *(f"0: {line}" for line in lines), "0: ENDING TIMING RUN"]) + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


ADAMW = {"type": "multistep", "milestones": [1200], "decay_rate": 0.5}
COSINE = {"type": "cosine_annealing", "t_max": 9000, "eta_min": 0.0}
H100 = dict(nodes=4, gpus=4, local_batch=8)

if __name__ == "__main__":
    reference = run_log(org="Kestrel", platform="4xH100 node", seed=4242, optimizer="AdamW", schedule=ADAMW,
                        start_lr=1e-3, minutes=276.0, epochs=26, **H100)
    # The reference does not log local_batch_size (compare derives it from global batch / ranks).
    write(HERE / "compare_reference_baseline_276min.log",
          "\n".join(line for line in reference if '"local_batch_size"' not in line) + "\n")
    write(HERE / "compare_nvidia_lamb_14min.txt", nvidia(run_log(
        org="NVIDIA", platform="4xNVIDIA DGX H100", seed=1710000123, optimizer="LAMB", schedule=COSINE,
        start_lr=0.0020000000949949026, minutes=14.1, epochs=9, precision="amp", **H100)))
    # Five repeats: epochs 8, 9, 9, 10, 11; minutes 14.1, 15.0, 15.3, 16.2, 18.0.
    for n, (epochs, minutes) in enumerate(((9, 15.3), (8, 14.1), (11, 18.0), (9, 15.0), (10, 16.2))):
        write(HERE / "compare_repeats" / f"result_{n}.txt", nvidia(run_log(
            org="NVIDIA", platform="4xNVIDIA DGX H100", seed=1710000200 + n, optimizer="LAMB", schedule=COSINE,
            start_lr=0.002, minutes=minutes, epochs=epochs, precision="amp", run_start=T0 + n * 86_400_000,
            **H100)))
    # fastcam's own format: killed 40 % into epoch 4 (epoch 3 checkpointed), resumed an hour later.
    fastcam_keys = (("fastcam_mode", "baseline"), ("fastcam_target_iou", 0.82))
    common = dict(org="fastcam", platform="1xcpu", nodes=1, gpus=0, local_batch=8, seed=77, optimizer="AdamW",
                  schedule=ADAMW, start_lr=1e-3, extra=fastcam_keys)
    write(HERE / "compare_resumed" / "deepcam.20240101-120000.log", "\n".join(run_log(
        **common, minutes=60.0, epochs=6, killed_in_epoch=4)) + "\n")
    per_epoch_steps = TRAIN_SAMPLES // 8
    write(HERE / "compare_resumed" / "deepcam.log", "\n".join(run_log(
        **common, minutes=30.0, epochs=6, first_epoch=4, run_start=T0 + 3_600_000 * 2,
        step_offset=3 * per_epoch_steps)) + "\n")
    write(HERE / "compare_stub.log", "\n".join([
        record(T0 - 5000, "cache_clear", True), record(T0 - 4000, "init_start", kind="INTERVAL_START"),
        record(T0 - 3000, "submission_benchmark", "deepcam")]) + "\n")
