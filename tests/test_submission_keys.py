"""The submission keys are the submitter's (``--submission_org``,
``--submission_platform``, ``--submission_status``), and the log says how the
network computed (``precision_mode``) and with what software (issue 15)."""

import json

import pytest

from conftest import small_network
from fastcam import logkeys as K
from fastcam.cli import main
from fastcam.compliance import failed_keys, run_checker
from fastcam.train import train
from fastcam.train.cli import parse_train_config


def events(log_path):
    out = {}
    for line in log_path.read_text().splitlines():
        if line.startswith(":::MLLOG "):
            record = json.loads(line[len(":::MLLOG "):])
            out.setdefault(record["key"], record["value"])
    return out


def test_submitter_keys_precision_mode_and_software_are_logged(tiny_synthetic, tmp_path):
    config = parse_train_config([
        "--mode", "baseline", "--data_dir_prefix", str(tiny_synthetic), "--output_dir", str(tmp_path),
        "--device", "cpu", "--seed", "3", "--max_epochs", "1", "--max_inter_threads", "0",
        "--submission_org", "NREL", "--submission_platform", "2 x Example 9000", "--submission_status", "research"])
    result = train(config, model_factory=small_network)
    logged = events(result.log_path)
    assert (logged[K.SUBMISSION_ORG], logged[K.SUBMISSION_PLATFORM], logged[K.SUBMISSION_STATUS]) == (
        "NREL", "2 x Example 9000", "research")
    assert logged[K.PRECISION_MODE] == "fp32"
    assert K.FASTCAM_STAGE_DTYPE not in logged  # the HDF5 loader has no stage cache
    software = logged[K.FASTCAM_SOFTWARE]
    assert {"fastcam", "python", "torch"} <= set(software) and "cuda" not in software
    # The official checker accepts the submitter's values.
    assert failed_keys(run_checker(result.log_path)) <= {"train_samples", "eval_samples", "eval_accuracy"}


def test_optimized_log_names_amp_and_the_stage_dtype(tiny_synthetic, tmp_path):
    config = parse_train_config([
        "--mode", "optimized", "--data_dir_prefix", str(tiny_synthetic), "--output_dir", str(tmp_path),
        "--device", "cpu", "--seed", "3", "--max_epochs", "1", "--precision", "bf16", "--compile", "off",
        "--local_batch_size", "4", "--stage_dtype", "fp32"])
    logged = events(train(config, model_factory=small_network).log_path)
    assert logged[K.PRECISION_MODE] == "amp_bf16"
    assert logged[K.FASTCAM_STAGE_DTYPE] == "fp32"


@pytest.mark.parametrize("flags, words", [
    (["--submission_status", "on-premises"], "submission_status"),
    (["--submission_org", " "], "submission_org must not be empty"),
])
def test_bad_submission_values_are_one_line(flags, words, tmp_path, capsys):
    assert main(["train", "--output_dir", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "o").exists()
