"""``fastcam package`` on real short fastcam runs, judged by mlperf_logging's own
package checker, system description checker and compliance checker."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from mlperf_logging.system_desc_checker.system_desc_checker import check_system_desc

from conftest import small_network
from fastcam.compare.package import UNKNOWN, build_package, check_package, register
from fastcam.compliance import failed_keys, run_checker
from fastcam.errors import DataError
from fastcam.train import train
from fastcam.train.cli import parse_train_config

SYSTEM = "cpu2core"
# What any run on synthetic data must fail: the data-set sizes (121266 / 15158
# files) and the 0.82 target (closed_deepcam.yaml); nothing else.
SYNTHETIC_DATA_FAILURES = {"train_samples", "eval_samples", "eval_accuracy"}


@pytest.fixture(scope="module")
def five_runs(tmp_path_factory):
    """Five real one-epoch baseline runs with different seeds, on the smallest data set
    a baseline epoch can use (one batch of 8, two validation samples, 32 x 48)."""
    from fastcam.data.synth import synthesize

    data = tmp_path_factory.mktemp("package_data") / "data"
    synthesize(data, 8, 2, height=32, width=48, seed=3, workers=1, progress=False)
    out = tmp_path_factory.mktemp("package_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [train(parse_train_config([
            "--data_dir_prefix", str(data), "--output_dir", str(out), "--max_inter_threads", "0",
            "--device", "cpu", "--mode", "baseline", "--max_epochs", "1", "--seed", str(seed),
            "--run_tag", f"run{seed}"]), echo=lambda _msg: None, model_factory=small_network).log_path
            for seed in range(1, 6)]
    finally:
        torch.set_num_threads(threads)


def package_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_package_passes_the_official_checker_but_for_synthetic_data(five_runs, tmp_path, capsys):
    out = tmp_path / "submission"
    rc = package_cli(["package", "--system", SYSTEM, "--out", str(out), *map(str, five_runs)])
    printed = capsys.readouterr().out
    assert rc == 0
    results = out / "results" / SYSTEM / "strong" / "deepcam"
    written = sorted(results.glob("result_*.txt"))
    assert [p.name for p in written] == [f"result_{i}.txt" for i in range(5)]
    assert sorted(p.read_bytes() for p in written) == sorted(p.read_bytes() for p in five_runs)

    system_file = out / "systems" / f"{SYSTEM}.json"
    description = json.loads(system_file.read_text())
    valid, name, _, _ = check_system_desc(str(system_file), "hpc", "3.0.0")
    assert valid and name == SYSTEM
    assert (description["submitter"], description["division"], description["number_of_nodes"]) == (
        "fastcam", "closed", "1")
    assert description["accelerators_per_node"] == "0" and description["accelerator_model_name"] == "N/A (CPU run)"
    unknown = sorted(k for k, v in description.items() if v == UNKNOWN)
    assert unknown and f"fill in {len(unknown)} field(s)" in printed and all(k in printed for k in unknown)

    check = check_package(out)
    # Each result file fails exactly the synthetic-data rules ...
    for path in written:
        verdict = run_checker(path)
        assert not verdict.passed and failed_keys(verdict) == SYNTHETIC_DATA_FAILURES, verdict.failures
    # ... so the directory is refused for them, and the RCP check finds no converged run;
    # the system description and the seed checks pass (no error of theirs).
    assert not check.passed
    assert check.errors == ["5 files do not comply, directory cannot be accepted",
                            "RCP Test Failed: Insufficient convergence"], check.output


@pytest.mark.slow
def test_package_refuses_mixed_configurations_and_overwriting(five_runs, tmp_path):
    out = tmp_path / "pkg"
    build_package(five_runs[:2], SYSTEM, out)
    with pytest.raises(DataError, match="already holds results"):
        build_package(five_runs[2:], SYSTEM, out)
    other = tmp_path / "other.log"
    other.write_text(five_runs[0].read_text().replace('"global_batch_size", "value": 8',
                                                      '"global_batch_size", "value": 16'))
    with pytest.raises(DataError, match="global_batch_size"):
        build_package([five_runs[0], other], SYSTEM, tmp_path / "pkg2")
