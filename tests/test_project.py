"""``fastcam project``: the projection's arithmetic on hand-made bench JSON, the
published NVIDIA run reproduced from its own rates, epochs from the RCPs and
from logs, clear errors for bad input, and the command end to end.

Expected figures are worked out here from the model stated in
fastcam/projection/model.py, with literal numbers, not with the module's helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastcam import cli

DATA = Path(__file__).parent / "data"
HAND_MADE = DATA / "bench_hand_made.json"  # optimized: epoch 8.0, step 10.0, eval 20.0 samples/s; batch 8
OLD_FORMAT = DATA / "bench_old_format.json"  # what `fastcam bench` wrote before bench_schema 2
GRADIENT_BYTES = 56_454_720 * 4


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    # fastcam/cli.py lists the command modules; add this one until it is registered there.
    if "fastcam.projection.cli" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ("fastcam.projection.cli",))


def project(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["project", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def projected(capsys, tmp_path, *argv) -> dict:
    out = tmp_path / "projection.json"
    rc, _out, err = project(capsys, *argv, "--json", out)
    assert rc == 0, err
    return json.loads(out.read_text())


def bench_copy(tmp_path: Path, edit) -> Path:
    bench = json.loads(HAND_MADE.read_text())
    edit(bench)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    return path


def one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastcam: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# ---- the arithmetic -------------------------------------------------------------

def test_weak_scaling_arithmetic_on_a_hand_made_bench(capsys, tmp_path):
    result = projected(capsys, tmp_path, HAND_MADE, "--nodes", "1", "2", "4", "--accelerators-per-node", "4",
                       "--epochs", "10")
    scales = result["scales"]
    assert [s["accelerators"] for s in scales] == [4, 8, 16]
    assert [s["global_batch_size"] for s in scales] == [32, 64, 128]
    steps = {4: 3789, 8: 1894, 16: 947}  # 121,266 // global batch (the sampler drops the last partial batch)
    totals = {}
    for s in scales:
        p = s["accelerators"]
        compute = steps[p] * (8 / 8.0) / 60  # the epoch part's 8.0 samples/s wins over the step part's 10.0
        evaluation = 15158 / (20.0 * p) / 60
        assert s["steps_per_epoch"] == steps[p]
        assert s["compute_min_per_epoch"] == pytest.approx(compute)
        assert s["communication_min_per_epoch"] == 0  # 0.75 ms of all-reduce hidden behind a 1 s step
        assert s["evaluation_min_per_epoch"] == pytest.approx(evaluation)
        assert s["total_minutes"] == pytest.approx(10 * (compute + evaluation))
        totals[p] = 10 * (compute + evaluation)
    for s in scales:
        assert s["scaling_efficiency"] == pytest.approx(totals[4] * 4 / (totals[s["accelerators"]] * s["accelerators"]))


def test_all_reduce_is_a_hierarchical_ring_hidden_behind_backward_only_when_overlapped(capsys, tmp_path):
    common = [HAND_MADE, "--nodes", "1", "2", "--accelerators-per-node", "2", "--local_batch_size", "8",
              "--train-samples-per-s", "80", "--eval-samples-per-s", "40", "--link-gbps", "8",
              "--intra-node-gbps", "80", "--epochs", "1"]
    intra = 2 * (1 / 2) * GRADIENT_BYTES / 10e9  # 80 Gbit/s = 10 GB/s per accelerator
    inter = 2 * (1 / 2) * GRADIENT_BYTES / 1e9  # 8 Gbit/s = 1 GB/s per node, 2 nodes
    step = 8 / 80  # seconds of compute per step
    one_node, two_nodes = projected(capsys, tmp_path, *common, "--no-overlap")["scales"]
    assert one_node["allreduce_ms"] == pytest.approx(1000 * intra)
    assert two_nodes["allreduce_ms"] == pytest.approx(1000 * (intra + inter))
    assert two_nodes["steps_per_epoch"] == 121266 // 32
    assert two_nodes["communication_min_per_epoch"] == pytest.approx(3789 * (intra + inter) / 60)
    assert one_node["communication_min_per_epoch"] == pytest.approx((121266 // 16) * intra / 60)

    one_node, two_nodes = projected(capsys, tmp_path, *common)["scales"]  # overlap on, 2/3 of the step
    assert one_node["communication_min_per_epoch"] == 0  # 22.6 ms hidden behind 66.7 ms of backward
    assert two_nodes["exposed_allreduce_ms"] == pytest.approx(1000 * (intra + inter - 2 / 3 * step))
    assert two_nodes["communication_min_per_epoch"] == pytest.approx(3789 * (intra + inter - 2 / 3 * step) / 60)

    _, two_nodes = projected(capsys, tmp_path, *common, "--overlap-fraction", "0.25")["scales"]
    assert two_nodes["exposed_allreduce_ms"] == pytest.approx(1000 * (intra + inter - 0.25 * step))


def test_one_accelerator_has_no_all_reduce(capsys, tmp_path):
    (scale,) = projected(capsys, tmp_path, HAND_MADE, "--nodes", "1", "--accelerators-per-node", "1",
                         "--no-overlap", "--epochs", "1")["scales"]
    assert scale["allreduce_ms"] == 0 and scale["communication_min_per_epoch"] == 0


def test_published_nvidia_run_is_reproduced_from_its_own_rates(capsys, tmp_path):
    # NVIDIA's logs: 81.9 samples/s per GPU in training (all-reduce included), 73.0 over
    # whole epochs with evaluation; 16 H100, global batch 128, 8 epochs, median 14.1 min.
    epoch_s = 121266 / (73.0 * 16)
    train_s = 121266 / (81.9 * 16)
    eval_rate = 15158 / (16 * (epoch_s - train_s))  # what evaluation must run at, per GPU

    def nvidia(bench):
        bench["epoch"]["optimized"]["samples_per_s"] = 81.9
        bench["eval"]["optimized"]["samples_per_s"] = eval_rate

    path = bench_copy(tmp_path, nvidia)
    for nodes, per_node in ((2, 8), (4, 4)):
        (scale,) = projected(capsys, tmp_path, path, "--nodes", nodes, "--accelerators-per-node", per_node,
                             "--local_batch_size", "8", "--epochs", "8")["scales"]
        assert scale["global_batch_size"] == 128
        assert scale["communication_min_per_epoch"] == 0  # 81.9 already includes the all-reduce
        assert abs(scale["total_minutes"] - 14.1) / 14.1 < 0.05, scale["total_minutes"]


def test_a_small_bench_is_scaled_to_full_size_by_pixel_area(capsys, tmp_path):
    def quarter_area(bench):
        bench["height"], bench["width"] = 384, 576
        bench["epoch"]["optimized"]["samples_per_s"] = 32.0  # 4 x the full-size 8.0
        bench["eval"]["optimized"]["samples_per_s"] = 80.0

    small = projected(capsys, tmp_path, bench_copy(tmp_path, quarter_area), "--epochs", "5")
    full = projected(capsys, tmp_path, HAND_MADE, "--epochs", "5")
    assert [s["total_minutes"] for s in small["scales"]] == pytest.approx([s["total_minutes"] for s in full["scales"]])
    names = {a["name"]: a for a in small["assumptions"]}
    assert "384x576" in names["image size"]["value"] and "assumption" in names["image size"]["source"]
    assert "image size" not in {a["name"] for a in full["assumptions"]}


# ---- epochs ---------------------------------------------------------------------

def test_epochs_interpolated_between_rcp_points_for_strong_scaling(capsys, tmp_path):
    result = projected(capsys, tmp_path, HAND_MADE, "--global_batch_size", "768", "--nodes", "1", "2", "4")
    expected = 6.94 + (13.0 - 6.94) * (768 - 128) / (1024 - 128)  # the RCP means at 128 and 1024
    for s, local in zip(result["scales"], (192, 96, 48)):
        assert s["global_batch_size"] == 768 and s["local_batch_size"] == local
        assert s["epochs"] == pytest.approx(expected, abs=0.01)
        assert "interp. 128-1024" in s["epochs_source"]
        assert s["compute_min_per_epoch"] == pytest.approx(157 * (local / 8.0) / 60)  # 121,266 // 768 steps
    sources = [a["source"] for a in result["assumptions"] if a["name"] == "epochs to 0.82"]
    assert len(sources) == 1 and "interpolated between global batch 128 and 1024" in sources[0]
    local_note = next(a for a in result["assumptions"] if a["name"] == "local batch")
    assert "measured at local batch 8" in local_note["source"]


def test_baseline_uses_the_published_26_epochs_scaled_by_the_rcps(capsys, tmp_path):
    result = projected(capsys, tmp_path, HAND_MADE, "--mode", "baseline", "--nodes", "1", "4", "8")
    at_32, at_128, at_256 = result["scales"]
    assert at_32["epochs"] == 26 and at_32["epochs_source"] == "published baseline, as at 128"
    assert at_128["global_batch_size"] == 128 and at_128["epochs"] == 26
    assert at_128["epochs_source"] == "published baseline"
    assert at_256["epochs"] == pytest.approx(26 * 7.81 / 6.94, abs=0.05)  # RCP means at 256 and 128
    assert at_128["compute_min_per_epoch"] == pytest.approx(947 * (8 / 2.0) / 60)  # the baseline's 2.0 samples/s


def write_log(path: Path, global_batch: int, accuracies: list[float]) -> Path:
    def record(key, value, time_ms, **metadata):
        return ":::MLLOG " + json.dumps({"namespace": "", "time_ms": time_ms, "event_type": "POINT_IN_TIME",
                                         "key": key, "value": value, "metadata": metadata})

    t0 = 1_700_000_000_000
    lines = [record("submission_benchmark", "deepcam", t0), record("global_batch_size", global_batch, t0),
             record("run_start", None, t0)]
    lines += [record("eval_accuracy", a, t0 + 60_000 * e, epoch_num=e) for e, a in enumerate(accuracies, 1)]
    lines.append(record("run_stop", None, t0 + 60_000 * (len(accuracies) + 1), status="success"))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_epochs_from_the_users_logs_at_the_same_global_batch(capsys, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "a.log", 32, [0.5, 0.83])  # reached at epoch 2
    write_log(logs / "b.log", 32, [0.5, 0.7, 0.81, 0.85])  # reached at epoch 4
    write_log(logs / "c.log", 32, [0.5, 0.6])  # missed: counted, not averaged
    write_log(logs / "d.log", 256, [0.9])
    rc, out, err = project(capsys, HAND_MADE, logs, "--nodes", "1", "2")
    assert rc == 0, err
    row_32 = next(line for line in out.splitlines() if line.startswith("| 1 | 4 | 32 |"))
    assert "| 3 | logs (2/3 reached) |" in row_32
    assert "logs at global batch 256 match no projected scale" in out
    result = projected(capsys, tmp_path, HAND_MADE, logs, "--nodes", "1", "2")
    at_32, at_64 = result["scales"]
    assert at_32["epochs"] == 3 and at_64["epochs"] == pytest.approx(6.94, abs=0.01)  # RCP, nearest point 128
    assert "nearest 128" in at_64["epochs_source"]
    assert projected(capsys, tmp_path, HAND_MADE, logs, "--nodes", "1", "--epochs", "9")["scales"][0]["epochs"] == 9


def test_logs_that_all_missed_fall_back_to_the_rcps_and_say_so(capsys, tmp_path):
    log = write_log(tmp_path / "missed.log", 128, [0.4, 0.6])
    result = projected(capsys, tmp_path, HAND_MADE, log, "--nodes", "4")
    assert result["scales"][0]["epochs"] == pytest.approx(6.94, abs=0.01)
    source = next(a["source"] for a in result["assumptions"] if a["name"] == "epochs to 0.82")
    assert "none of the 1 log(s) at global batch 128 reached 0.82" in source


# ---- rules profiles ------------------------------------------------------------------

def assumption(result: dict, name: str) -> dict:
    return next(a for a in result["assumptions"] if a["name"] == name)


def test_rules_decide_the_default_scales_global_batch_and_untimed_staging(capsys, tmp_path):
    result = projected(capsys, tmp_path, HAND_MADE, "--rules", "esif-2026-05")  # draft: M/4M/8M at 1024
    assert [s["nodes"] for s in result["scales"]] == [1, 4, 8]
    assert [s["global_batch_size"] for s in result["scales"]] == [1024] * 3
    assert [s["local_batch_size"] for s in result["scales"]] == [256, 64, 32]
    assert all(s["epochs"] == pytest.approx(13.0) for s in result["scales"])  # the RCP point at 1024
    assert all(s["staging_min"] == 0 for s in result["scales"])
    assert "allow staging before run_start" in assumption(result, "staging")["source"]
    assert assumption(result, "global batch")["source"] == "rules esif-2026-05: fixed"
    weak = projected(capsys, tmp_path, HAND_MADE, "--rules", "esif-2026-05", "--local_batch_size", "8")
    assert "rules esif-2026-05 fix the global batch at 1024; this projection uses 32, 128, 256" in weak["notes"]


def test_staging_counts_once_per_run_where_the_rules_time_it(capsys, tmp_path):
    untimed = projected(capsys, tmp_path, HAND_MADE, "--nodes", "4", "--epochs", "10")  # esif-2025-12
    assert "NOT counted" in assumption(untimed, "staging")["value"]
    timed = projected(capsys, tmp_path, HAND_MADE, "--nodes", "4", "--epochs", "10", "--staging-minutes", "5")
    assert timed["scales"][0]["total_minutes"] == pytest.approx(untimed["scales"][0]["total_minutes"] + 5)
    allowed = projected(capsys, tmp_path, HAND_MADE, "--nodes", "4", "--epochs", "10", "--staging-minutes", "5",
                        "--rules", "mlperf-hpc-3.0")
    assert allowed["scales"][0]["total_minutes"] == pytest.approx(untimed["scales"][0]["total_minutes"])
    assert "--staging-minutes ignored" in assumption(allowed, "staging")["source"]
    baseline = projected(capsys, tmp_path, HAND_MADE, "--nodes", "4", "--mode", "baseline", "--staging-minutes", "5")
    assert baseline["scales"][0]["staging_min"] == 0  # the baseline's epoch part read HDF5: nothing staged
    assert assumption(baseline, "staging")["value"] == "none"


def test_a_baseline_of_other_rules_takes_the_rcp_epochs(capsys, tmp_path):
    # The January 2026 draft's baseline is NVIDIA's LAMB recipe, not the 26-epoch AdamW one.
    result = projected(capsys, tmp_path, HAND_MADE, "--nodes", "4", "--mode", "baseline", "--rules", "esif-2026-01")
    assert result["scales"][0]["epochs"] == pytest.approx(6.94, abs=0.01)


# ---- bad input: one clear line ----------------------------------------------------

def test_a_bench_json_from_another_fastcam_version(capsys, tmp_path):
    rc, out, err = project(capsys, OLD_FORMAT)
    one_line_error(rc, err, str(OLD_FORMAT), "from another fastcam version", "no \"bench_schema\" field",
                   "re-run `fastcam bench`")
    assert out == ""

    def older(bench):
        bench["bench_schema"], bench["fastcam_version"] = 1, "0.0.9"

    rc, _out, err = project(capsys, bench_copy(tmp_path, older))
    one_line_error(rc, err, "fastcam 0.0.9", "\"bench_schema\": 1", "reads \"bench_schema\": 2")


def test_a_missing_eval_figure_is_named_unless_given_by_flag(capsys, tmp_path):
    path = bench_copy(tmp_path, lambda bench: bench.pop("eval"))
    rc, _out, err = project(capsys, path)
    one_line_error(rc, err, "eval.optimized.samples_per_s", "--eval-samples-per-s")
    rc, out, err = project(capsys, path, "--eval-samples-per-s", "20", "--epochs", "10", "--nodes", "4")
    assert rc == 0, err
    assert "--eval-samples-per-s (given, full size)" in out
    assert projected(capsys, tmp_path, HAND_MADE, "--epochs", "10", "--nodes", "4")["scales"] == \
        projected(capsys, tmp_path, path, "--eval-samples-per-s", "20", "--epochs", "10", "--nodes", "4")["scales"]


def test_a_missing_training_figure_or_a_bad_value_is_named(capsys, tmp_path):
    def no_training(bench):
        del bench["epoch"]["optimized"], bench["step"]["optimized"]

    rc, _out, err = project(capsys, bench_copy(tmp_path, no_training))
    one_line_error(rc, err, "epoch.optimized.samples_per_s", "step.optimized.samples_per_s", "--train-samples-per-s")
    rc, _out, err = project(capsys, bench_copy(tmp_path, lambda b: b["eval"]["optimized"].update(samples_per_s="x")))
    one_line_error(rc, err, "eval.optimized.samples_per_s must be a positive number")
    rc, _out, err = project(capsys, bench_copy(tmp_path, lambda b: b.pop("height")))
    one_line_error(rc, err, "lacks the field 'height'")


def test_unreadable_files_and_bad_flags(capsys, tmp_path):
    (tmp_path / "not.json").write_text("{ nope")
    one_line_error(*project(capsys, tmp_path / "not.json")[::2], "is not JSON")
    one_line_error(*project(capsys, tmp_path / "absent.json")[::2], "cannot read the bench JSON")
    one_line_error(*project(capsys, HAND_MADE, "--nodes", "0")[::2], "--nodes must be >= 1")
    one_line_error(*project(capsys, HAND_MADE, "--global_batch_size", "100", "--accelerators-per-node", "8")[::2],
                   "does not divide over 8 accelerators")
    one_line_error(*project(capsys, HAND_MADE, "--link-gbps", "0")[::2], "--link-gbps")
    one_line_error(*project(capsys, HAND_MADE, "--overlap-fraction", "1.5")[::2], "--overlap-fraction")
    one_line_error(*project(capsys, HAND_MADE, "--rules", "no-such-rules")[::2], "no-such-rules")
    one_line_error(*project(capsys, HAND_MADE, tmp_path / "missing.log")[::2], "does not exist")


# ---- end to end -------------------------------------------------------------------

def test_table_json_and_plot_end_to_end(capsys, tmp_path):
    out_json, out_png = tmp_path / "p.json", tmp_path / "plots" / "p.png"
    rc, out, err = project(capsys, HAND_MADE, "--nodes", "1", "2", "4", "--json", out_json, "--plot", out_png)
    assert rc == 0, err
    assert out.startswith("Projection (not a measurement) of minutes to 0.82, optimized mode")
    assert "| Nodes | Accelerators | Global batch | Local batch | Epochs | Epochs from |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3
    for heading in ("Assumptions", "training rate", "inter-node bandwidth", "staging", "initialisation",
                    "Published, for comparison", "276 min", "14.1 min"):
        assert heading in out
    result = json.loads(out_json.read_text())
    assert result["kind"] == "projection, not a measurement" and result["rules"] == "esif-2025-12"
    assert [r.split(" | ")[10] for r in rows] == [f"{s['total_minutes']:,.0f}" for s in result["scales"]]
    assert result["scales"][0]["scaling_efficiency"] == 1.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(out_png).shape[:2] == (450, 800)
    assert f"wrote {out_json}" in err and f"wrote {out_png}" in err
