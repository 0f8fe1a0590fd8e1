"""``fastcam compare`` on logs of real short fastcam runs, on hand-written logs in
the MLCommons reference's and NVIDIA's formats, and on broken input."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import small_network
from fastcam.cli import main
from fastcam.compare.logs import collect_logs, read_log
from fastcam.compare.runs import run_facts
from fastcam.compare.table import group_runs, render_markdown, summary_table
from fastcam.compliance import failed_keys, run_checker
from fastcam.errors import DataError
from fastcam.train import train
from fastcam.train.cli import parse_train_config

DATA = Path(__file__).parent / "data"
REFERENCE_LOG = DATA / "reference_deepcam.log"
NVIDIA_LOG = DATA / "nvidia_deepcam_stdout.txt"
# The columns of the table every submission reports (../shared/spec/benchmark.md).
SPEC_COLUMNS = ["Run Type", "Nodes used", "Accelerators per node", "Local Batch Size", "LR Scheduler", "Start LR",
                "Optimizer", "Time Required (minutes)", "Epochs Required"]


# ---- real runs, shared by the module -----------------------------------------

# The four real runs (a small network) take a few seconds (paid once, by the first test using them).
uses_real_runs = pytest.mark.slow

def _train_log(data: Path, out: Path, tag: str, *extra: str) -> Path:
    args = ["--data_dir_prefix", str(data), "--output_dir", str(out), "--max_inter_threads", "0",
            "--device", "cpu", "--seed", "7", "--run_tag", tag, *extra]
    # compare reads logs: the loop's logging, not the network, is what matters here.
    return train(parse_train_config(args), echo=lambda _msg: None, model_factory=small_network).log_path


@pytest.fixture(scope="session")
def real_logs(tiny_synthetic, tmp_path_factory):
    """Four real runs: a baseline reaching a low target, a baseline missing the
    default 0.82, an optimized run (LAMB, cosine, local batch 4), and a per-step
    timing run (train_loss every step, 8 steps in each of 2 epochs; per-step
    logging is fixed in closed runs, so it is an open-division one)."""
    out = tmp_path_factory.mktemp("compare") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the autouse thread fixture is per test, this runs before it
    try:
        reached = _train_log(tiny_synthetic, out, "reached", "--mode", "baseline", "--max_epochs", "2",
                             "--target_iou", "0.05")
        missed = _train_log(tiny_synthetic, out, "missed", "--mode", "baseline", "--max_epochs", "2")
        optimized = _train_log(tiny_synthetic, out, "optimized", "--mode", "optimized", "--loader", "hdf5",
                               "--no-channels-last", "--local_batch_size", "4", "--max_epochs", "1",
                               "--target_iou", "0.05")
        per_step = _train_log(tiny_synthetic, out, "per_step", "--mode", "baseline", "--open-division",
                              "--logging_frequency", "1", "--local_batch_size", "2", "--max_epochs", "2")
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(out=out, reached=reached, missed=missed, optimized=optimized, per_step=per_step)


# ---- helpers working on the raw JSON lines -------------------------------------

def raw_events(path: Path) -> list[dict]:
    return [json.loads(line.split(":::MLLOG", 1)[1]) for line in path.read_text().splitlines()
            if ":::MLLOG" in line]


def first(events: list[dict], key: str) -> dict:
    return next(e for e in events if e["key"] == key)


def expected_minutes_and_epoch(path: Path, target: float) -> tuple[float, int] | None:
    events = raw_events(path)
    t0 = first(events, "run_start")["time_ms"]
    hit = next((e for e in events if e["key"] == "eval_accuracy" and e["value"] >= target), None)
    return None if hit is None else ((hit["time_ms"] - t0) / 60000.0, hit["metadata"]["epoch_num"])


def expected_throughput(path: Path) -> float:
    """Samples over training seconds: epoch_start to eval_start inside the epoch, else to epoch_stop."""
    events = raw_events(path)
    batch = first(events, "global_batch_size")["value"]
    samples = seconds = 0.0
    previous_step = 0
    for start in (e for e in events if e["key"] == "epoch_start"):
        epoch = start["metadata"]["epoch_num"]
        stop = next(e for e in events if e["key"] == "epoch_stop" and e["metadata"]["epoch_num"] == epoch)
        ev = next((e for e in events if e["key"] == "eval_start" and e["metadata"]["epoch_num"] == epoch), None)
        end = ev if ev and start["time_ms"] <= ev["time_ms"] <= stop["time_ms"] else stop
        begin_step = start["metadata"].get("step_num", previous_step)
        samples += (stop["metadata"]["step_num"] - begin_step) * batch
        seconds += (end["time_ms"] - start["time_ms"]) / 1000.0
        previous_step = stop["metadata"]["step_num"]
    return samples / seconds


def rewritten_copy(src: Path, dst: Path, *, factor: float = 1.0, shift_ms: int = 0, drop: tuple = (),
                   add: dict | None = None, **values) -> Path:
    """A synthesized repeat: times since run_start scaled by ``factor`` and shifted,
    the values of the keys in ``values`` replaced, the records of the keys in
    ``drop`` removed and one point-in-time record per ``add`` item inserted
    before ``run_start`` (where the trainer logs its settings)."""
    events = [e for e in raw_events(src) if e["key"] not in drop]
    t0 = first(events, "run_start")["time_ms"]
    at = events.index(first(events, "run_start"))
    events[at:at] = [{**events[at - 1], "event_type": "POINT_IN_TIME", "key": key, "value": value}
                     for key, value in (add or {}).items()]
    for e in events:
        # Not rounded: the runs of a small network last milliseconds, and rounding
        # them would change the throughput ratio the tests derive from ``factor``.
        e["time_ms"] = t0 + shift_ms + (e["time_ms"] - t0) * factor
        if e["key"] in values:
            e["value"] = values[e["key"]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(f":::MLLOG {json.dumps(e)}\n" for e in events))
    return dst


def compare(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["compare", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


# ---- minutes to target, not reached, throughput -------------------------------

@uses_real_runs
def test_minutes_to_target_is_run_start_to_first_eval_at_target(real_logs):
    facts = run_facts(read_log(real_logs.reached))
    assert facts.target == 0.05  # from the log's fastcam_target_iou
    expected = expected_minutes_and_epoch(real_logs.reached, 0.05)
    assert expected is not None and facts.reached
    assert facts.minutes_to_target == pytest.approx(expected[0], abs=1e-12)
    assert facts.epochs_to_target == expected[1]
    assert (facts.run_type, facts.nodes, facts.accelerators_per_node, facts.local_batch_size) == ("baseline", 1, 0, 8)
    assert (facts.optimizer, facts.start_lr, facts.schedule["type"]) == ("AdamW", 0.001, "multistep")
    assert facts.samples_per_s == pytest.approx(expected_throughput(real_logs.reached), rel=1e-12)
    assert facts.samples_per_s_per_device == facts.samples_per_s  # one process, no accelerators


@uses_real_runs
def test_not_reached_reports_the_best_accuracy(real_logs):
    log = read_log(real_logs.missed)
    facts = run_facts(log)
    accuracies = [e["value"] for e in raw_events(real_logs.missed) if e["key"] == "eval_accuracy"]
    assert facts.target == 0.82 and not facts.reached and facts.minutes_to_target is None
    assert facts.best_accuracy == max(accuracies) and facts.epochs_run == len(accuracies) == 2
    assert facts.status == "aborted"
    row = summary_table(group_runs([facts])).rows[0]
    assert row[7] == f"not reached (best {max(accuracies):.3f})" and row[8] == "not reached"
    # --target overrides the logged target: the same log then reaches it.
    lowered = run_facts(log, target=max(accuracies))
    expected = expected_minutes_and_epoch(real_logs.missed, max(accuracies))
    assert lowered.reached and lowered.minutes_to_target == pytest.approx(expected[0], abs=1e-12)
    assert lowered.epochs_to_target == expected[1]


# ---- the table -----------------------------------------------------------------

@uses_real_runs
def test_table_columns_speedup_and_csv(real_logs, capsys):
    rc, out, _ = compare(capsys, str(real_logs.reached), str(real_logs.missed), str(real_logs.optimized),
                         "--no-check")
    assert rc == 0
    tables = [block for block in out.split("\n\n") if block.startswith("| ")]
    header, _rule, *rows = tables[0].strip().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:9] == SPEC_COLUMNS
    assert {"Speedup vs baseline", "Throughput (samples/s)", "Compliance"} <= set(columns)
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert all(len(row) == len(columns) for row in cells) and len(cells) == 3
    by_type = {(r[0], r[columns.index("Time Required (minutes)")].startswith("not")): r for r in cells}
    baseline, missed = by_type[("baseline", False)], by_type[("baseline", True)]
    optimized = by_type[("optimized", False)]
    assert baseline[1:7] == ["1", "0", "8", "multistep [1200] x0.5", "1e-3", "AdamW (wd 0.01)"]
    assert optimized[3] == "4" and optimized[4].startswith("cosine_annealing") and optimized[6].startswith("LAMB")
    base_minutes = expected_minutes_and_epoch(real_logs.reached, 0.05)[0]
    opt_minutes = expected_minutes_and_epoch(real_logs.optimized, 0.05)[0]
    speedup = columns.index("Speedup vs baseline")
    assert baseline[speedup] == "1.00x" and optimized[speedup] == f"{base_minutes / opt_minutes:.2f}x"
    assert missed[speedup] == "n/a"  # no baseline was run to 0.82 successfully
    assert all(r[columns.index("Compliance")] == "not checked" for r in cells)

    rc, out, _ = compare(capsys, str(real_logs.reached), str(real_logs.optimized), "--no-check", "--csv")
    records = {Path(r["log"]).name: r for r in csv_rows(out)}
    assert rc == 0 and set(records) == {"reached.log", "optimized.log"}
    assert float(records["reached.log"]["minutes_to_target"]) == pytest.approx(base_minutes, rel=1e-5)
    assert float(records["optimized.log"]["speedup"]) == pytest.approx(base_minutes / opt_minutes, rel=1e-5)
    assert float(records["reached.log"]["samples_per_s"]) == pytest.approx(
        expected_throughput(real_logs.reached), rel=1e-5)


@uses_real_runs
def test_repeats_are_summarised_by_median_min_and_max(real_logs, tmp_path, capsys):
    runs = tmp_path / "repeats"
    copies = [rewritten_copy(real_logs.reached, runs / f"repeat{i}.log", factor=f, shift_ms=i * 3_600_000)
              for i, f in enumerate((1.0, 0.5, 1.7))]
    minutes = [expected_minutes_and_epoch(c, 0.05)[0] for c in copies]
    rc, out, _ = compare(capsys, str(runs), "--no-check", "--csv")
    rows = csv_rows(out)
    assert rc == 0 and len(rows) == 3 and all(r["group_runs"] == "3" for r in rows)
    assert float(rows[0]["group_median_minutes"]) == pytest.approx(statistics.median(minutes), rel=1e-5)
    assert float(rows[0]["group_min_minutes"]) == pytest.approx(min(minutes), rel=1e-5)
    assert float(rows[0]["group_max_minutes"]) == pytest.approx(max(minutes), rel=1e-5)
    group = group_runs([run_facts(read_log(c)) for c in copies])
    assert len(group) == 1
    cell = summary_table(group).rows[0][7]
    assert cell.startswith(f"{statistics.median(minutes):.3g} (") and cell.endswith("3/3 reached)")


@uses_real_runs
def test_scaling_efficiency_across_node_counts(real_logs, tmp_path):
    one = run_facts(read_log(real_logs.reached))
    # A synthesized 2-node run of the same configuration, training 1/0.6 times as fast.
    two_log = rewritten_copy(real_logs.reached, tmp_path / "two_nodes.log", factor=0.6, number_of_nodes=2)
    two = run_facts(read_log(two_log))
    groups = group_runs([one, two])
    assert [g.first.nodes for g in groups] == [1, 2]
    expected = (expected_throughput(two_log) / 2) / expected_throughput(real_logs.reached)
    assert groups[1].scaling_efficiency == pytest.approx(expected, rel=1e-9)
    assert groups[1].scaling_efficiency == pytest.approx(1 / 0.6 / 2, rel=0.02)
    assert groups[0].scaling_efficiency == pytest.approx(1.0)


# ---- compliance column -----------------------------------------------------------

@uses_real_runs
def test_compliance_column_shows_the_checkers_failed_rules(real_logs, capsys):
    rc, out, _ = compare(capsys, str(real_logs.missed), str(REFERENCE_LOG), "--csv")
    records = {Path(r["log"]).name: r for r in csv_rows(out)}
    verdict = run_checker(real_logs.missed)
    keys = failed_keys(verdict)
    # Synthetic data cannot have the real set's sizes nor reach 0.82.
    assert {"train_samples", "eval_samples", "eval_accuracy"} <= keys
    assert rc == 0 and records["missed.log"]["compliance"] == "fail: " + ", ".join(sorted(keys))
    assert records["reference_deepcam.log"]["compliance"] == "pass"


# ---- broken input ----------------------------------------------------------------

@uses_real_runs
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_log_is_one_error_line_naming_file_and_line(real_logs, tmp_path, capsys, damage):
    lines = real_logs.reached.read_text().splitlines()
    if damage == "truncated":  # the writer died mid-line
        bad_line = len(lines)
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    else:
        bad_line = 20
        lines[bad_line - 1] = lines[bad_line - 1].replace('"key"', '"key" "', 1)
    broken = tmp_path / "broken.log"
    broken.write_text("\n".join(lines) + ("\n" if damage == "corrupt" else ""))
    rc, out, err = compare(capsys, str(tmp_path), "--no-check")
    err_lines = err.strip().splitlines()
    assert rc != 0 and out == "" and len(err_lines) == 1, err
    assert str(broken) in err_lines[0] and f"line {bad_line}" in err_lines[0]
    assert "Traceback" not in err


@uses_real_runs
def test_directory_mixing_logs_and_other_files(real_logs, tmp_path, capsys):
    # The real output directory: logs/ next to the runs' checkpoints.
    assert list(real_logs.out.glob("*.cpt"))
    rc, out, _ = compare(capsys, str(real_logs.out), "--no-check", "--csv")
    assert rc == 0 and sorted(Path(r["log"]).name for r in csv_rows(out)) == [
        "missed.log", "optimized.log", "per_step.log", "reached.log"]
    mixed = tmp_path / "mixed"
    (mixed / "nested").mkdir(parents=True)
    shutil.copy(real_logs.reached, mixed / "nested" / "run.log")
    (mixed / "notes.txt").write_text("baseline runs of the CPU study\n")
    (mixed / "config.yaml").write_text("mode: baseline\n")
    (mixed / "weights.bin").write_bytes(bytes(range(256)) * 64)
    assert collect_logs([mixed]) == [mixed / "nested" / "run.log"]
    # A file named explicitly that is not a log, or a directory without logs, is an error.
    with pytest.raises(DataError, match="notes.txt"):
        collect_logs([mixed / "notes.txt"])
    (tmp_path / "empty").mkdir()
    rc, _, err = compare(capsys, str(tmp_path / "empty"), "--no-check")
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "no MLPerf logs" in err


def test_type_overrides_and_bad_values(capsys):
    rc, out, _ = compare(capsys, str(REFERENCE_LOG), "--no-check", "--csv", "--type", "reference_deepcam.log=baseline")
    assert rc == 0 and csv_rows(out)[0]["run_type"] == "baseline" and csv_rows(out)[0]["speedup"] == "1"
    for bad, needle in (("reference_deepcam.log=fast", "TYPE must be one of"), ("other.log=baseline", "other.log"),
                        ("baseline", "FILE=TYPE")):
        rc, _, err = compare(capsys, str(REFERENCE_LOG), "--no-check", "--type", bad)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err
    rc, _, err = compare(capsys, str(REFERENCE_LOG), "--no-check", "--target", "1.5")
    assert rc == 2 and "--target" in err


# ---- other implementations' formats -----------------------------------------------

def test_reference_format_log_parses():
    facts = run_facts(read_log(REFERENCE_LOG))
    # AdamW 1e-3, multistep [1200] x 0.5, local batch 8: the default profile's baseline parameters.
    assert facts.run_type == "baseline" and facts.org == "Umbrella Corp."
    assert (facts.nodes, facts.accelerators_per_node, facts.ranks, facts.local_batch_size) == (4, 4, 16, 8)
    assert facts.target == 0.82  # from target_accuracy_reached
    minutes, epoch = expected_minutes_and_epoch(REFERENCE_LOG, 0.82)
    assert facts.reached and facts.minutes_to_target == pytest.approx(minutes) and facts.epochs_to_target == epoch
    # The reference evaluates inside the epoch interval: training time ends at eval_start.
    assert facts.samples_per_s == pytest.approx(expected_throughput(REFERENCE_LOG), rel=1e-12)
    assert facts.samples_per_s_per_device == pytest.approx(facts.samples_per_s / 16)


def test_nvidia_stdout_with_prefixed_records_and_extra_keys_parses():
    log = read_log(NVIDIA_LOG)
    assert log.first("tracked_stats") is not None  # extra keys are kept
    facts = run_facts(log)
    assert (facts.nodes, facts.accelerators_per_node, facts.local_batch_size) == (4, 8, 8)  # 256 / 32 ranks
    assert (facts.optimizer, facts.schedule["type"], facts.status) == ("LAMB", "cosine_annealing", "aborted")
    assert not facts.reached and facts.best_accuracy == 0.5107 and facts.target == 0.82
    assert facts.samples_per_s == pytest.approx(expected_throughput(NVIDIA_LOG), rel=1e-12)


# ---- plots -----------------------------------------------------------------------

@uses_real_runs
def test_plots_are_written_and_scaling_only_across_node_counts(real_logs, tmp_path, capsys):
    image = pytest.importorskip("matplotlib.image")
    from fastcam.compare.plots import scaling_families
    rc, _, err = compare(capsys, str(real_logs.reached), str(real_logs.missed), str(real_logs.optimized),
                         "--no-check", "--plot", str(tmp_path / "plots"))
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert rc == 0 and written == ["accuracy_vs_epoch.png", "accuracy_vs_minutes.png", "throughput_per_epoch.png"]
    assert err.count("wrote ") == 3
    for name in written:
        pixels = image.imread(tmp_path / "plots" / name)
        assert pixels.shape[:2] == (450, 800) and pixels.std() > 0  # drawn, not blank
    two_nodes = rewritten_copy(real_logs.reached, tmp_path / "two.log", factor=0.6, number_of_nodes=2)
    rc, _, _ = compare(capsys, str(real_logs.reached), str(two_nodes), "--no-check", "--plot", str(tmp_path / "s"))
    assert rc == 0 and (tmp_path / "s" / "scaling.png").is_file()
    assert image.imread(tmp_path / "s" / "scaling.png").std() > 0
    # Different node counts but no configuration run at two of them: nothing to scale, so
    # write_plots draws no scaling.png (as in the first call); decided without drawing the rest again.
    pair = [run_facts(read_log(real_logs.reached)), run_facts(read_log(REFERENCE_LOG))]
    assert len({r.nodes for r in pair}) == 2 and scaling_families(group_runs(pair)) == []


def test_markdown_escapes_pipes():
    from fastcam.compare.table import Table

    text = render_markdown(Table(["a", "b"], [["x|y", "z"]]))
    assert text.splitlines()[2] == "| x\\|y | z |"


# ---- run types, scoring, RCPs, resumed and skipped logs (issue 16) -------------------
# Hand-made fixtures, written by tests/data/compare_make_fixtures.py.

from fastcam import rcp, rules  # noqa: E402
from fastcam.compare.runtype import classify  # noqa: E402
from fastcam.compare.scoring import rcp_verdict, score  # noqa: E402

BASELINE_276 = DATA / "compare_reference_baseline_276min.log"
LAMB_14 = DATA / "compare_nvidia_lamb_14min.txt"
REPEATS = DATA / "compare_repeats"
RESUMED = DATA / "compare_resumed"
STUB = DATA / "compare_stub.log"


def test_foreign_logs_get_run_types_from_the_profile_and_a_speedup(capsys):
    rc, out, _ = compare(capsys, str(BASELINE_276), str(LAMB_14), "--no-check", "--csv")
    records = {Path(r["log"]).name: r for r in csv_rows(out)}
    base, lamb = records[BASELINE_276.name], records[LAMB_14.name]
    assert rc == 0 and (base["run_type"], lamb["run_type"]) == ("baseline", "optimized")
    expected = expected_minutes_and_epoch(BASELINE_276, 0.82)[0] / expected_minutes_and_epoch(LAMB_14, 0.82)[0]
    assert float(lamb["speedup"]) == pytest.approx(expected, rel=1e-5) and round(expected, 1) == 19.6
    rc, out, _ = compare(capsys, str(BASELINE_276), str(LAMB_14), "--no-check")
    rows = [line for line in out.splitlines() if line.startswith("| optimized")]
    assert f"| {expected:.2f}x |" in rows[0]
    # The reason names the first differences from the profile's baseline.
    reason = classify(read_log(LAMB_14), rules.load("esif-2025-12")).reason
    assert "opt_name 'LAMB' != 'AdamW'" in reason
    # Under the MLPerf profile (LAMB baseline) the AdamW reference run is not a baseline run.
    assert classify(read_log(BASELINE_276), rules.load("mlperf-hpc-3.0")).kind == "optimized"
    # fp16 autocast ("amp") is not the fp32 the default profile's baseline allows.
    lamb_as_adamw = classify(read_log(LAMB_14), SimpleNamespace(
        name="p", baseline={"optimizer": "LAMB"}, global_batch_size=None, precision={"baseline": ("fp32",)}))
    assert lamb_as_adamw.kind == "optimized" and "precision fp16" in lamb_as_adamw.reason


def _repeat_facts() -> list:
    profile = rules.load("mlperf-hpc-3.0")
    return [run_facts(read_log(p), profile=profile) for p in sorted(REPEATS.glob("result_*.txt"))]


def test_five_repeats_olympic_mean_median_and_rcp_verdict(capsys):
    minutes = sorted(expected_minutes_and_epoch(p, 0.82)[0] for p in REPEATS.glob("result_*.txt"))
    epochs = sorted(expected_minutes_and_epoch(p, 0.82)[1] for p in REPEATS.glob("result_*.txt"))
    rc, out, _ = compare(capsys, str(REPEATS), "--no-check", "--json", "--rules", "mlperf-hpc-3.0")
    report = json.loads(out)
    result = report["scores"][0]
    assert rc == 0 and report["table"] == "mlperf" and result["runs"] == result["converged"] == 5
    assert result["olympic_mean_minutes"] == pytest.approx(statistics.mean(minutes[1:-1]), rel=1e-12)
    assert result["median_minutes"] == pytest.approx(statistics.median(minutes), rel=1e-12)
    point = rcp.point_for(128)
    assert statistics.mean(epochs[1:-1]) >= point.min_epochs and result["rcp_passed"] is True
    assert result["rcp"] == (f"pass: mean {statistics.mean(epochs[1:-1]):.2f} epochs >= "
                             f"{point.min_epochs:.2f} at global batch 128")
    assert result["rcp_factor"] == 1.0 and result["score_minutes"] == result["olympic_mean_minutes"]
    assert report["summary"][0]["RCP check"] == result["rcp"]


def test_rcp_failure_normalisation_and_non_convergence():
    profile = rules.load("mlperf-hpc-3.0")
    runs = _repeat_facts()
    point = rcp.point_for(128)

    def with_epochs(values):
        return [dataclasses.replace(r, epochs_to_target=e) for r, e in zip(runs, values)]

    too_fast = rcp_verdict(with_epochs([5, 5, 6, 6, 7]), profile)
    assert too_fast.passed is False and too_fast.text.startswith(f"fail: mean {17 / 3:.2f} epochs")
    assert f"{point.min_epochs:.2f}" in too_fast.text and len(too_fast.text.splitlines()) == 1
    # Faster than the RCP mean but within its limit: the score is scaled by RCP mean / mean epochs.
    close = with_epochs([6, 6, 7, 7, 7])
    result = score(close, profile)
    factor = point.mean_epochs / (20 / 3)
    assert rcp_verdict(close, profile).passed and result.rcp_factor == pytest.approx(factor)
    assert result.minutes == pytest.approx(result.olympic_mean_minutes * factor) and "RCP normalisation" in result.note
    # One run that did not converge counts as the slowest; two make the set fail.
    one = [dataclasses.replace(runs[0], minutes_to_target=None, epochs_to_target=None, reached=False), *runs[1:]]
    kept = sorted(r.minutes_to_target for r in runs[1:])[1:]
    assert score(one, profile).olympic_mean_minutes == pytest.approx(statistics.mean(kept))
    two = [dataclasses.replace(r, minutes_to_target=None, epochs_to_target=None, reached=False) for r in runs[:2]]
    failed = score([*two, *runs[2:]], profile)
    assert failed.minutes is None and "2 of 5 runs did not converge" in failed.note
    assert rcp_verdict([*two, *runs[2:]], profile).text.startswith("fail: insufficient convergence")


def test_esif_median_of_replicates_and_scenario_table(capsys, tmp_path):
    profile = rules.load("esif-2026-05")
    runs = [rewritten_copy(p, tmp_path / p.name, global_batch_size=1024)
            for p in sorted(REPEATS.glob("result_*.txt"))[:3]]
    rc, out, _ = compare(capsys, *map(str, runs), "--no-check", "--json", "--rules", profile.name)
    report = json.loads(out)
    assert rc == 0 and report["table"] == "esif-scenarios" and len(report["summary"]) == 3
    minutes = [expected_minutes_and_epoch(p, 0.82)[0] for p in runs]
    assert report["scores"][0]["score_minutes"] == pytest.approx(statistics.median(minutes))
    for row, path in zip(report["summary"], runs):
        events = raw_events(path)
        spans = [(b["time_ms"] - a["time_ms"]) / 60000.0 for a, b in zip(
            (e for e in events if e["key"] == "epoch_start"), (e for e in events if e["key"] == "epoch_stop"))]
        assert row["Scenario"] == "2" and row["Total Accelerators"] == "16" and row["Data staged"] == "no"
        assert row["Total Time Required (minutes)"] == f"{sum(spans):.3g}"
        assert row["Median timing per epoch (minutes)"] == f"{statistics.median(spans):.3g}"
        assert row["Epochs Required"] == str(expected_minutes_and_epoch(path, 0.82)[1])
    assert sorted(r["Replicate"] for r in report["summary"]) == ["1", "2", "3"]


def test_a_killed_and_resumed_run_is_one_row(capsys, tmp_path):
    first, second = RESUMED / "deepcam.20240101-120000.log", RESUMED / "deepcam.log"
    rc, out, _ = compare(capsys, str(RESUMED), "--no-check", "--csv")
    rows = csv_rows(out)
    assert rc == 0 and len(rows) == 1
    a, b = raw_events(first), raw_events(second)
    hit = next(e for e in b if e["key"] == "eval_accuracy" and e["value"] >= 0.82)
    expected = (a[-1]["time_ms"] - first_event(a, "run_start")) + (hit["time_ms"] - first_event(b, "run_start"))
    assert float(rows[0]["minutes_to_target"]) == pytest.approx(expected / 60000.0, rel=1e-5)
    assert (rows[0]["epochs_to_target"], rows[0]["epochs_run"], rows[0]["status"]) == ("6", "6", "success")
    # Another seed under the same tag is another run, not a continuation.
    other = tmp_path / "resumed"
    other.mkdir()
    shutil.copy(first, other / first.name)
    rewritten_copy(second, other / second.name, seed=78)
    rc, out, _ = compare(capsys, str(other), "--no-check", "--csv")
    assert rc == 0 and len(csv_rows(out)) == 2


def first_event(events: list[dict], key: str) -> float:
    return first(events, key)["time_ms"]


def test_a_stub_log_beside_good_logs_is_skipped_with_its_reason(capsys, tmp_path):
    good = tmp_path / "runs"
    good.mkdir()
    for path in (BASELINE_276, LAMB_14):
        shutil.copy(path, good / path.name)
    _, clean, _ = compare(capsys, str(good), "--no-check", "--csv")
    shutil.copy(STUB, good / STUB.name)
    rc, out, err = compare(capsys, str(good), "--no-check", "--csv")
    assert rc == 0 and out == clean
    assert err.strip() == (f"skipped {good / STUB.name}: {good / STUB.name}: no run_start record (line 3 is the "
                           "last record); the run never started or the log is cut short")
    rc, out, _ = compare(capsys, str(good), "--no-check")
    assert rc == 0 and "| Skipped log | Reason |" in out and "| baseline |" in out
    rc, out, err = compare(capsys, str(STUB), "--no-check")
    assert rc != 0 and out == "" and len(err.strip().splitlines()) == 1 and "no run_start" in err


def test_unknown_rules_profile_is_one_line(capsys):
    rc, _, err = compare(capsys, str(BASELINE_276), "--no-check", "--rules", "esif-1999")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "esif-1999" in err


# ---- the Precision column and the median step time (issue 15) -------------------------

from fastcam import logkeys as K  # noqa: E402
from fastcam.compare.runtype import logged_precision  # noqa: E402
from fastcam.compare.table import step_ms_text  # noqa: E402

NEW_KEYS = (K.PRECISION_MODE, K.FASTCAM_STAGE_DTYPE)  # what fastcam logs since issue 15
OLD_TEXT = {"fp32": "fp32", "fp16": "AMP fp16", "bf16": "AMP bf16"}  # fastcam_execution's precision -> cell


def old_style(src: Path, dst: Path, **values) -> Path:
    """The log as fastcam wrote it before precision_mode and fastcam_stage_dtype
    (fastcam_execution and fastcam_loader only): the real log less those keys."""
    return rewritten_copy(src, dst, drop=NEW_KEYS, **values)


def markdown_tables(text: str) -> list[list[dict]]:
    """Each Markdown table of a report as {column: cell} rows."""
    tables = []
    for block in (b for b in text.split("\n\n") if b.startswith("| ")):
        header, _rule, *rows = block.strip().splitlines()
        columns = [c.strip() for c in header.strip("|").split("|")]
        tables.append([dict(zip(columns, (c.strip() for c in row.strip("|").split("|")))) for row in rows])
    return tables


def logged_intervals(path: Path) -> list[float]:
    """Milliseconds per step between the per-step train_loss records of each epoch,
    from the raw lines: the record of each step number (the first, where the
    epoch's end repeats the last step), consecutive pairs of one epoch."""
    by_epoch: dict[int, dict[int, float]] = {}
    for e in raw_events(path):
        if e["key"] == "train_loss":
            by_epoch.setdefault(e["metadata"]["epoch_num"], {}).setdefault(e["metadata"]["step_num"], e["time_ms"])
    out = []
    for steps in by_epoch.values():
        ordered = sorted(steps.items())
        out += [(tb - ta) / (sb - sa) for (sa, ta), (sb, tb) in zip(ordered, ordered[1:])]
    return out


@uses_real_runs
def test_precision_of_fastcam_logs_before_precision_mode(real_logs, tmp_path):
    # The trainer's own records: fastcam_execution's autocast dtype and fastcam_loader.
    reached = old_style(real_logs.reached, tmp_path / "reached.log")
    optimized = old_style(real_logs.optimized, tmp_path / "optimized.log")
    autocast = first(raw_events(optimized), K.FASTCAM_EXECUTION)["value"]["precision"]
    assert first(raw_events(optimized), K.FASTCAM_LOADER)["value"] == "hdf5"
    assert run_facts(read_log(reached)).precision_label == "fp32"  # baseline: fp32, hdf5
    assert run_facts(read_log(optimized)).precision_label == OLD_TEXT[autocast]
    # The staged and DALI loaders then always stored float16 inputs.
    execution = {**first(raw_events(reached), K.FASTCAM_EXECUTION)["value"], "precision": "bf16"}
    for loader in ("staged", "dali"):
        staged = run_facts(read_log(old_style(real_logs.reached, tmp_path / f"{loader}.log", fastcam_loader=loader,
                                              fastcam_execution=execution)))
        assert staged.precision_label == "AMP bf16, fp16 inputs"
    # Float16 inputs are reduced precision: not the default profile's fp32 baseline.
    fp16_inputs = run_facts(read_log(old_style(real_logs.reached, tmp_path / "in16.log", fastcam_loader="staged")))
    assert fp16_inputs.precision_label == "fp32, fp16 inputs" and fp16_inputs.run_type == "optimized"
    assert "fp16 inputs from the stage cache (baseline allows fp32)" in fp16_inputs.run_type_reason
    assert run_facts(read_log(reached)).run_type == "baseline"


@uses_real_runs
def test_precision_mode_and_stage_dtype_decide_the_precision(real_logs, tmp_path):
    # fastcam_execution says fp32 and fastcam_loader hdf5: the new keys win where logged.
    assert first(raw_events(real_logs.reached), K.FASTCAM_EXECUTION)["value"]["precision"] == "fp32"
    cases = [("fp32", None, "fp32"), ("amp_fp16", None, "AMP fp16"), ("amp_bf16", None, "AMP bf16"),
             ("fp32", "fp16", "fp32, fp16 inputs"), ("amp_bf16", "fp16", "AMP bf16, fp16 inputs"),
             ("amp_fp16", "fp32", "AMP fp16"), ("tf32", None, "tf32")]  # another value: verbatim
    for index, (mode, stage, expected) in enumerate(cases):
        added = {K.PRECISION_MODE: mode, **({K.FASTCAM_STAGE_DTYPE: stage} if stage else {})}
        copy = rewritten_copy(real_logs.reached, tmp_path / f"case{index}.log", drop=NEW_KEYS, add=added)
        assert run_facts(read_log(copy)).precision_label == expected, (mode, stage)
    # A logged fp32 stage dtype overrides the staged loader's old float16 meaning.
    staged32 = rewritten_copy(real_logs.reached, tmp_path / "staged32.log", drop=NEW_KEYS, fastcam_loader="staged",
                              add={K.PRECISION_MODE: "fp32", K.FASTCAM_STAGE_DTYPE: "fp32"})
    facts = run_facts(read_log(staged32))
    assert (facts.precision_label, facts.run_type) == ("fp32", "baseline")
    # The precision_mode values are the profiles' fp16/bf16 for the baseline comparison.
    amp = rewritten_copy(LAMB_14, tmp_path / "amp_fp16.txt", precision_mode="amp_fp16")
    assert logged_precision(read_log(amp)) == "fp16"
    lamb_amp = SimpleNamespace(name="p", baseline={"optimizer": "LAMB"}, global_batch_size=None,
                               precision={"baseline": ("fp16",)})
    assert classify(read_log(amp), lamb_amp).kind == "baseline"
    bf16 = classify(read_log(rewritten_copy(LAMB_14, tmp_path / "amp_bf16.txt", precision_mode="amp_bf16")), lamb_amp)
    assert bf16.kind == "optimized" and "precision bf16 (baseline allows fp16)" in bf16.reason


def test_precision_of_other_tools_logs():
    assert first(raw_events(NVIDIA_LOG), K.PRECISION_MODE)["value"] == "amp"
    assert run_facts(read_log(NVIDIA_LOG)).precision_label == "amp"  # NVIDIA's own value, verbatim
    assert run_facts(read_log(REFERENCE_LOG)).precision_label == "unknown"  # neither key


@uses_real_runs
def test_every_table_has_the_precision_column(real_logs, tmp_path, capsys):
    autocast = first(raw_events(real_logs.optimized), K.FASTCAM_EXECUTION)["value"]["precision"]
    optimized = old_style(real_logs.optimized, tmp_path / "optimized.log")
    staged = rewritten_copy(real_logs.reached, tmp_path / "staged.log", drop=NEW_KEYS,
                            add={K.PRECISION_MODE: "amp_bf16", K.FASTCAM_STAGE_DTYPE: "fp16"})
    logs = [str(old_style(real_logs.reached, tmp_path / "reached.log")), str(optimized), str(staged), str(NVIDIA_LOG)]
    expected = {"reached.log": "fp32", "optimized.log": OLD_TEXT[autocast], "staged.log": "AMP bf16, fp16 inputs",
                NVIDIA_LOG.name: "amp"}
    rc, out, _ = compare(capsys, *logs, "--no-check")
    summary, detail = markdown_tables(out)
    assert rc == 0 and sorted(r["Precision"] for r in summary) == sorted(expected.values())
    assert {Path(r["Log"]).name: r["Precision"] for r in detail} == expected
    rc, out, _ = compare(capsys, *logs, "--no-check", "--csv")
    assert rc == 0 and {Path(r["log"]).name: r["precision"] for r in csv_rows(out)} == expected
    for table in ("esif-scenarios", "mlperf"):
        rc, out, _ = compare(capsys, *logs, "--no-check", "--json", "--table", table)
        report = json.loads(out)
        assert rc == 0 and sorted(r["Precision"] for r in report["summary"]) == sorted(expected.values())
        assert {Path(r["log"]).name: r["precision"] for r in report["runs"]} == expected
        assert sorted(s["precision"] for s in report["scores"]) == sorted(expected.values())


@uses_real_runs
def test_repeats_in_different_precisions_are_separate_rows(real_logs, tmp_path):
    def repeat(i: int, mode: str) -> object:
        path = rewritten_copy(real_logs.reached, tmp_path / f"r{i}.log", shift_ms=i * 3_600_000, drop=NEW_KEYS,
                              add={K.PRECISION_MODE: mode})
        # One run type for all (as --type sets it): under the default profile fp16 alone makes a run optimized.
        return run_facts(read_log(path), run_type="optimized")

    same = group_runs([repeat(0, "fp32"), repeat(1, "fp32")])
    assert len(same) == 1 and len(same[0].runs) == 2 and same[0].precision == "fp32"
    split = group_runs([repeat(0, "fp32"), repeat(1, "amp_fp16"), repeat(2, "fp32")])
    assert sorted((g.precision, len(g.runs)) for g in split) == [("AMP fp16", 1), ("fp32", 2)]
    rows = summary_table(split).rows
    column = summary_table(split).columns.index("Precision")
    assert sorted(r[column] for r in rows) == ["AMP fp16", "fp32"]
    # A group put together by hand does not hide the difference either.
    assert type(split[0])(split[0].runs + split[1].runs).precision == "mixed (AMP fp16; fp32)"


@uses_real_runs
def test_median_step_time_of_a_per_step_log(real_logs, capsys):
    facts = run_facts(read_log(real_logs.per_step))
    intervals = logged_intervals(real_logs.per_step)
    # 16 samples at local batch 2: 8 steps in each of 2 epochs, 7 intervals each; none across the epochs.
    steps = [e["metadata"]["step_num"] for e in raw_events(real_logs.per_step) if e["key"] == "train_loss"]
    assert steps == [*range(1, 9), 8, *range(9, 17), 16] and len(intervals) == 14
    assert [s * 1000 for s in facts.step_seconds] == pytest.approx(intervals)
    assert min(intervals) <= facts.median_step_ms <= max(intervals)
    assert facts.median_step_ms == pytest.approx(statistics.median(intervals))
    rc, out, _ = compare(capsys, str(real_logs.per_step), str(real_logs.reached), "--no-check", "--csv")
    records = {Path(r["log"]).name: r for r in csv_rows(out)}
    assert rc == 0 and float(records["per_step.log"]["median_step_ms"]) == pytest.approx(facts.median_step_ms,
                                                                                            rel=1e-5)
    assert records["reached.log"]["median_step_ms"] == ""  # per-epoch records only
    rc, out, _ = compare(capsys, str(real_logs.per_step), str(real_logs.reached), "--no-check")
    summary, detail = markdown_tables(out)
    by_type = {r["Run Type"]: r for r in summary}
    assert by_type["open"]["Median step (ms)"] == step_ms_text(facts.median_step_ms) != ""
    assert by_type["baseline"]["Median step (ms)"] == ""
    assert {Path(r["Log"]).name: r["Median step (ms)"] for r in detail} == {
        "per_step.log": step_ms_text(facts.median_step_ms), "reached.log": ""}


@uses_real_runs
def test_per_epoch_logs_have_no_step_time(real_logs):
    for path in (real_logs.reached, real_logs.missed, real_logs.optimized, REFERENCE_LOG, NVIDIA_LOG):
        facts = run_facts(read_log(path))
        assert facts.step_seconds == [] and facts.median_step_ms is None, path


@uses_real_runs
def test_step_time_never_spans_a_boundary_and_divides_by_the_steps(real_logs, tmp_path):
    reference = run_facts(read_log(real_logs.per_step)).step_seconds
    # Without epoch numbers telling the epochs apart, the eval and epoch records still do.
    events = raw_events(real_logs.per_step)
    for e in events:
        if e["key"] == "train_loss":
            e["metadata"]["epoch_num"] = 1
    one_epoch = tmp_path / "one_epoch.log"
    one_epoch.write_text("".join(f":::MLLOG {json.dumps(e)}\n" for e in events))
    assert run_facts(read_log(one_epoch)).step_seconds == pytest.approx(reference)
    # Logged every 2 steps: each interval counts as two steps.
    every_other = [e for e in raw_events(real_logs.per_step)
                   if e["key"] != "train_loss" or e["metadata"]["step_num"] % 2 == 0]
    sparse = tmp_path / "every_other.log"
    sparse.write_text("".join(f":::MLLOG {json.dumps(e)}\n" for e in every_other))
    intervals = logged_intervals(sparse)
    assert len(intervals) == 6 and run_facts(read_log(sparse)).step_seconds == pytest.approx(
        [i / 1000 for i in intervals])
    pairs = [(a + b) / 2 for a, b in zip(logged_intervals(real_logs.per_step)[1::2],
                                         logged_intervals(real_logs.per_step)[2::2])]
    assert intervals[:3] == pytest.approx(pairs[:3])


@uses_real_runs
def test_scenario_1_runs_are_timed_by_the_median_step(real_logs, tmp_path, capsys):
    # esif-2026-05 Scenario 1 (fixed local batch 8, per-step logging, no convergence).
    timing = rewritten_copy(real_logs.per_step, tmp_path / "scenario1.log", local_batch_size=8)
    facts = run_facts(read_log(timing))
    rc, out, _ = compare(capsys, str(timing), "--no-check", "--json", "--rules", "esif-2026-05")
    report = json.loads(out)
    row, result = report["summary"][0], report["scores"][0]
    assert rc == 0 and row["Scenario"] == "1" and row["Precision"] == "fp32"
    assert row["Median time per training step (s)"] == f"{facts.median_step_seconds:.4g}"
    assert result["metric"] == "median_step_time" and result["score_minutes"] is None
    assert result["median_step_ms"] == pytest.approx(facts.median_step_ms)
    assert "scenario 1 is reported, not scored" in result["note"] and result["rcp"].startswith("n/a")
    assert report["runs"][0]["median_step_ms"] != ""
