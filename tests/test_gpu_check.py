"""scripts/gpu_check.sh (issue 10) in its CPU smoke mode, as it would run on the GPU machine.

Every run here happens under a ``sitecustomize`` that recreates the GPU
machine's Python: fastcam is not installed (the editable-install finder is
removed, so fastcam and its mapped packages come from the working tree) and
optuna, mlperf_logging and pytest cannot be imported. One full smoke run
(module fixture, about two minutes on the 2-core CI machine) serves the
checks of every part's rc and JSON; a short second run forces failures (a
hang killed by its timeout, a SIGKILL, a part skipped at the deadline).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
PARTS = ("env", "eager", "compiled", "loader", "epoch", "micro")
SMOKE = {"batch": 2, "height": 64, "width": 96, "train_samples": 4, "validation_samples": 2}

GPU_MACHINE_SITE = '''\
import sys

# The GPU machine runs fastcam from the tree, uninstalled: drop the editable install's finder.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in str(getattr(f, "__module__", "")).lower()]


class _Missing:
    """Packages the GPU machine does not have."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("optuna", "mlperf_logging", "pytest"):
            raise ImportError(f"{name} is not installed on the GPU machine")
        return None


sys.meta_path.insert(0, _Missing())
'''


def run_check(tmp: Path, timeout: int = 420, **knobs: str) -> subprocess.CompletedProcess:
    site = tmp / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(GPU_MACHINE_SITE)
    env = {**os.environ, "OUT": str(tmp / "out"), "FASTCAM_CHECK_WORK": str(tmp / "work"),
           "FASTCAM_CHECK_DEVICE": "cpu", "PYTHONPATH": str(site), **knobs}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def part_lines(out: Path) -> dict[str, dict]:
    return {line["part"]: line for line in map(json.loads, (out / "parts.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    result = run_check(tmp)
    return tmp / "out", result


def results(out: Path, part: str) -> dict:
    return read_json(out / f"{part}.json")["results"]


def test_every_part_passes_with_one_json_each(smoke):
    out, result = smoke
    assert result.returncode == 0, result.stderr[-3000:]
    lines = part_lines(out)
    assert list(lines) == list(PARTS), result.stdout[-3000:]
    for part, line in lines.items():
        assert line["rc"] == 0, f"{part}: {line}\n{result.stdout[-4000:]}"
        assert 0 < line["seconds"] < line["limit"]
        data = read_json(out / f"{part}.json")
        assert (data["part"], data["status"], data["errors"], data["device"]) == (part, "ok", {}, "cpu")
        assert {k: data["size"][k] for k in SMOKE} == SMOKE
    # At most 8 files come back from the GPU machine: the parts' JSON, parts.jsonl and the summary.
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{p}.json" for p in PARTS] + ["parts.jsonl",
                                                                                            "summary.json"])


def test_env_reports_the_machine_as_the_gpu_machine_has_it(smoke):
    out, _ = smoke
    env = results(out, "env")
    importable = env["host"]["importable"]
    assert not importable["optuna"] and not importable["mlperf_logging"] and not importable["pytest"]
    assert env["host"]["torch"] == torch.__version__
    assert env["gpu"]["cuda_available"] is False and "name" not in env["gpu"]
    if importable["triton"]:
        assert env["triton"]["kernel"] == "ok" and env["triton"]["interpreter"] is True
    else:
        assert env["triton"]["kernel"].startswith("skipped")


def test_step_parts_time_both_modes_and_count_syncs(smoke):
    out, _ = smoke
    eager, compiled = results(out, "eager"), results(out, "compiled")
    assert eager["baseline"]["execution"]["channels_last"] is False
    assert eager["baseline"]["optimizer"] == "AdamW" and eager["optimized"]["optimizer"] == "LAMB"
    assert eager["optimized"]["execution"]["channels_last"] is True
    assert eager["optimized"]["execution"]["compile"] == "off"
    for mode in (eager["baseline"], eager["optimized"], compiled["optimized"]):
        # samples/s and ms/step come from the same timed steps.
        assert mode["samples_per_s"] == pytest.approx(SMOKE["batch"] * 1000 / mode["ms_per_step"])
        assert mode["timed_steps"] == 2 and mode["peak_memory_gb"] is None  # no device memory on a CPU
        assert mode["syncs_per_step"] >= 0 and mode["syncs_per_epoch_call"] >= 0
        assert mode["sync_method"].startswith("CPU proxy")
    # torch's non-fused AdamW reads each parameter's step counter on the host; the counter sees it.
    assert eager["baseline"]["syncs_per_step"] > 0
    assert read_json(out / "compiled.json")["compile_backend"] == "aot_eager"
    assert compiled["optimized"]["execution"]["compile"] == "backend aot_eager"
    assert compiled["optimized"]["warmup_s"] > 0
    assert compiled["dynamo"]["unique_graphs"] >= 1
    profile = compiled["profile"]
    assert profile["status"] == "done" and profile["ranked_by"] == "self CPU time of ops"
    assert 0 < len(profile["top"]) <= 15
    times = [row["ms_per_step"] for row in profile["top"]]
    assert times == sorted(times, reverse=True) and all(row["name"] for row in profile["top"])


def test_loader_and_epoch_parts(smoke):
    out, _ = smoke
    loader, epoch = results(out, "loader"), results(out, "epoch")
    assert loader["throughput"]["samples"] == 3 * SMOKE["train_samples"]  # 3 epochs, drop-last batches
    assert loader["throughput"]["samples_per_s"] > 0
    assert loader["integrity"]["samples_checked"] == 2 * SMOKE["train_samples"]
    assert loader["integrity"]["mismatches"] == 0
    assert epoch["data"]["cache"] == loader["staging"]["cache"]  # one staged cache, reused
    assert (epoch["baseline"]["loader"], epoch["optimized"]["loader"]) == ("hdf5", "staged")
    for mode in (epoch["baseline"], epoch["optimized"]):
        assert mode["train_samples_per_epoch"] == SMOKE["train_samples"]
        assert mode["eval_samples"] == SMOKE["validation_samples"]
        assert mode["train_samples_per_s"] > 0 and mode["eval_samples_per_s"] > 0
        assert len(mode["train_samples_per_s_by_epoch"]) == 1


def test_micro_part(smoke):
    out, _ = smoke
    micro = results(out, "micro")
    optimizer = micro["optimizer"]
    assert all(optimizer[f"{name}_ms"] > 0 for name in ("lamb", "lamb_fused", "adamw_fused", "adamw_default"))
    assert optimizer["lamb_implementation"] == "LAMB (torch foreach)"
    assert optimizer["adamw_fused_implementation"] == "AdamW (torch fused)"
    if results(out, "env")["host"]["importable"]["triton"]:  # run in triton's interpreter
        assert optimizer["lamb_triton_implementation"] == "LAMB (triton fused)" and optimizer["lamb_triton_ms"] > 0
    else:
        assert optimizer["lamb_triton"].startswith("skipped")
    assert micro["loss"]["shape"] == [SMOKE["batch"], 3, SMOKE["height"], SMOKE["width"]]
    assert micro["loss"]["forward_backward_ms"] > 0 and micro["loss"]["iou_ms"] > 0
    for kind in ("depthwise_conv", "bn_relu"):
        assert set(micro[kind]) == {"entry", "middle", "exit"}
        assert micro[kind]["middle"]["shape"] == [SMOKE["batch"], 728, SMOKE["height"] // 16, SMOKE["width"] // 16]
        assert all(m["forward_ms"] > 0 and m["forward_gb_per_s"] > 0 for m in micro[kind].values())


def test_summary_joins_the_parts(smoke):
    out, result = smoke
    summary = read_json(out / "summary.json")
    assert [p["part"] for p in summary["parts"]] == list(PARTS)
    assert all(p["status"] == "ok" and "log_tail" not in p for p in summary["parts"])
    eager = results(out, "eager")
    assert summary["figures"]["eager.baseline.ms_per_step"] == eager["baseline"]["ms_per_step"]
    assert summary["top_kernels"] == results(out, "compiled")["profile"]["top"]
    assert "| eager | 0 |" in result.stdout and "| eager.optimized.samples_per_s |" in result.stdout


def test_limits_fit_the_command_limit_and_nothing_is_installed(smoke):
    out, _ = smoke
    text = SCRIPT.read_text()
    plan = dict(item.split(":") for item in re.search(r"^PLAN=\(([^)]*)\)", text, re.M).group(1).split())
    assert tuple(plan) == PARTS
    assert sum(map(int, plan.values())) < 560
    assert {part: line["limit"] for part, line in part_lines(out).items()} == {p: int(s) for p, s in plan.items()}
    for path in [SCRIPT, *sorted((ROOT / "scripts" / "gpu").glob("*.py"))]:
        assert "pip install" not in path.read_text(), path


def test_a_failing_part_leaves_the_others_intact(tmp_path):
    # env hangs after its first measurement until its 20 s timeout; micro SIGKILLs itself after its
    # first; epoch (limit 130 s) cannot finish before an 80 s deadline and is skipped.
    result = run_check(tmp_path, timeout=200, FASTCAM_CHECK_PARTS="env,micro,epoch",
                       FASTCAM_CHECK_FAIL="env:hang,micro:kill", FASTCAM_CHECK_LIMIT_ENV="20",
                       FASTCAM_CHECK_DEADLINE="80")
    out = tmp_path / "out"
    assert result.returncode == 0, result.stderr[-3000:]
    lines = part_lines(out)
    assert lines["env"]["rc"] == 124 and lines["env"]["limit"] == 20  # timeout's TERM
    assert lines["micro"]["rc"] == 137  # killed by SIGKILL
    assert lines["epoch"]["rc"] is None and lines["epoch"]["skipped"] == "deadline"
    env, micro = read_json(out / "env.json"), read_json(out / "micro.json")
    assert env["status"] == micro["status"] == "running"  # never finished ...
    assert env["results"]["host"]["cpus"] == os.cpu_count()  # ... but what they measured is there
    assert micro["results"]["optimizer"]["tensors"] > 0
    assert not (out / "epoch.json").exists()
    summary = read_json(out / "summary.json")
    statuses = {p["part"]: p["status"] for p in summary["parts"]}
    assert statuses == {"env": "running", "micro": "running", "epoch": "skipped"}
    tails = {p["part"]: "\n".join(p.get("log_tail", [])) for p in summary["parts"]}
    assert "FASTCAM_CHECK_FAIL: env fails now (hang)" in tails["env"]
    assert "FASTCAM_CHECK_FAIL: micro fails now (kill)" in tails["micro"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_requested_without_a_gpu_fails_each_part_with_one_line(tmp_path):
    result = run_check(tmp_path, timeout=120, FASTCAM_CHECK_DEVICE="cuda", FASTCAM_CHECK_PARTS="env,eager")
    out = tmp_path / "out"
    assert result.returncode == 0
    assert {part: line["rc"] for part, line in part_lines(out).items()} == {"env": 1, "eager": 1}
    env, eager = read_json(out / "env.json"), read_json(out / "eager.json")
    assert env["results"]["host"]["torch"] == torch.__version__  # env still describes the machine
    assert env["errors"] == {"gpu": "RuntimeError: CUDA is not available; FASTCAM_CHECK_DEVICE=cpu runs the "
                                    "CPU smoke mode"}
    assert eager["errors"] == {"eager": env["errors"]["gpu"]} and eager["results"] == {}
    assert not list((tmp_path / "work").glob("data-*"))  # failed before synthesizing anything


def test_bad_knobs_are_refused_before_anything_runs(tmp_path):
    result = run_check(tmp_path, timeout=30, FASTCAM_CHECK_PARTS="env,bogus")
    assert result.returncode == 2
    assert result.stderr.strip() == ("gpu_check: FASTCAM_CHECK_PARTS: unknown part 'bogus' "
                                     "(parts: env,eager,compiled,loader,epoch,micro)")
    assert not (tmp_path / "out").exists()


def test_integrity_check_catches_an_altered_batch(tmp_path):
    """The loader part's byte comparison fails when a delivered batch differs from the cache."""
    code = f'''
import sys
sys.path.insert(0, {str(ROOT / "scripts" / "gpu")!r})
from pathlib import Path
import report, dataset, common, loader
from fastcam.data.staged import StagedLoader

settings = report.Settings("loader", "cpu", report.SMOKE, Path({str(tmp_path / "out")!r}),
                           Path({str(tmp_path / "work")!r}), None)
rep = report.Report(settings)
data, _ = dataset.ensure(settings)
root, _ = common.stage(settings, data)
read = StagedLoader._read

def altered(self, host, row, sample):
    read(self, host, row, sample)
    if sample == 1:
        host.inputs[row].view(-1)[7] += 1  # one float16 value off: what a reused buffer would do

StagedLoader._read = altered
try:
    loader.integrity(rep, settings, root)
except RuntimeError as err:
    print("raised:", err)
print("mismatches:", rep.data["results"]["integrity"]["mismatches"])
'''
    env = {**os.environ, "FASTCAM_CHECK_DEVICE": "cpu", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    # Sample 1 is delivered once per checked epoch (2 epochs); its labels stay intact.
    assert "raised: 2 staged inputs/labels arrived altered" in result.stdout
    assert "mismatches: 2" in result.stdout
