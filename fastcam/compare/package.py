"""``fastcam package``: an MLPerf HPC submission package from run logs.

Layout (what ``mlperf_logging.package_checker DIR hpc 3.0.0`` walks,
package_checker.py ``check_training_result_files``; for usage hpc it requires
a ``strong`` or ``weak`` folder between the system and the benchmark)::

    DIR/results/<system>/strong/deepcam/result_0.txt ... result_4.txt
    DIR/systems/<system>.json
    DIR/benchmarks/deepcam/implementations/fastcam/README.md

Each result file is a log copied byte for byte, ordered by ``run_start``.
Strong scaling needs exactly 5 of them for DeepCAM (benchmark_meta.py); fewer
or more are written but reported. The system description holds every field
``system_desc_checker`` requires: what the logs say (submitter, division,
status, nodes, accelerators per node), what this machine says (processor,
core and vCPU counts, memory, operating system, framework versions; the
accelerator where torch sees one), and :data:`UNKNOWN` for the rest, which
the command lists so the submitter fills them in. The probed host fields
describe the machine ``fastcam package`` ran on: run it on a training node,
or correct them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fastcam import logkeys
from fastcam.compare.logs import RunLog, Skipped, collect_logs, read_logs
from fastcam.errors import ConfigError, DataError
from fastcam.files import atomic_write_text

BENCHMARK = "deepcam"
SCALING = "strong"
UNKNOWN = "UNKNOWN: fill in before submitting"
REQUIRED_RUNS = 5  # mlperf_logging benchmark_meta: hpc deepcam result file count
_CHECKER_TIMEOUT_S = 600


@dataclass
class Package:
    root: Path
    result_files: list[Path]
    system_file: Path
    unknown_fields: list[str]
    skipped: list[Skipped] = field(default_factory=list)


def register(subparsers) -> None:
    p = subparsers.add_parser("package", help="MLPerf HPC submission package from run logs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", metavar="LOG_OR_DIR", help="the runs' MLPerf logs (5 for DeepCAM)")
    p.add_argument("--system", required=True, metavar="NAME", help="system name: systems/NAME.json, results/NAME/")
    p.add_argument("--out", required=True, metavar="DIR", help="package directory (the submitter's folder)")
    p.add_argument("--ruleset", default="3.0.0", help="MLPerf HPC ruleset for --check (default 3.0.0)")
    p.add_argument("--check", action="store_true", help="run mlperf_logging's package checker on the result")
    p.set_defaults(func=run_package)


def run_package(args: argparse.Namespace) -> int:
    package = build_package(collect_logs(args.logs), args.system, args.out)
    for skip in package.skipped:
        print(f"skipped {skip.path}: {skip.reason}", file=sys.stderr)
    print(f"wrote {len(package.result_files)} result file(s) under "
          f"{package.result_files[0].parent} and {package.system_file}")
    if len(package.result_files) != REQUIRED_RUNS:
        print(f"note: MLPerf HPC scores {REQUIRED_RUNS} DeepCAM runs; this package has "
              f"{len(package.result_files)}", file=sys.stderr)
    if package.unknown_fields:
        print(f"fill in {len(package.unknown_fields)} field(s) of {package.system_file}: "
              f"{', '.join(package.unknown_fields)}")
    if args.check:
        check = check_package(package.root, args.ruleset)
        print("package checker: " + ("passed" if check.passed else f"{len(check.errors)} error(s)"))
        for error in check.errors:
            print(f"  {error}")
        return 0 if check.passed else 1
    return 0


def build_package(paths: list[Path], system: str, out: str | os.PathLike[str]) -> Package:
    """Writes the package; refuses to overwrite an earlier one's results for ``system``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", system):
        raise ConfigError(f"--system {system!r}: use letters, digits and _ . + - (it names files and folders)")
    logs, skipped = read_logs(paths)
    logs.sort(key=lambda log: log.first(logkeys.RUN_START).time_ms)
    _same_submission(logs)
    root = Path(out)
    results = root / "results" / system / SCALING / BENCHMARK
    if results.exists() and any(results.iterdir()):
        raise DataError(f"{results} already holds results; choose another --out or remove it")
    try:
        results.mkdir(parents=True, exist_ok=True)
        written = []
        for index, log in enumerate(logs):
            target = results / f"result_{index}.txt"
            shutil.copyfile(log.path, target)
            written.append(target)
        description = system_description(logs[0], system)
        system_file = root / "systems" / f"{system}.json"
        system_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(system_file, json.dumps(description, indent=2) + "\n")
        notes = root / "benchmarks" / BENCHMARK / "implementations" / "fastcam" / "README.md"
        notes.parent.mkdir(parents=True, exist_ok=True)
        notes.write_text("Put the code, the run scripts and the configuration that produced the results here "
                         "(MLPerf submissions include their implementation).\n")
    except OSError as err:
        raise DataError(f"cannot write the package under {root}: {err.strerror or err}") from err
    unknown = [k for k, v in description.items() if v == UNKNOWN]
    return Package(root, written, system_file, unknown, skipped)


def _same_submission(logs: list[RunLog]) -> None:
    """One package directory holds repeats of one configuration of one benchmark."""
    for key in (logkeys.SUBMISSION_BENCHMARK, logkeys.SUBMISSION_ORG, logkeys.SUBMISSION_DIVISION,
                logkeys.NUMBER_OF_NODES, logkeys.ACCELERATORS_PER_NODE, logkeys.GLOBAL_BATCH_SIZE):
        values = {json.dumps(log.value(key)) for log in logs}
        if len(values) > 1:
            raise DataError(f"the logs differ in {key} ({', '.join(sorted(values))}); "
                            "package the runs of one configuration together")
    benchmark = logs[0].value(logkeys.SUBMISSION_BENCHMARK)
    if benchmark != BENCHMARK:
        raise DataError(f"{logs[0].path}: submission_benchmark is {benchmark!r}, not {BENCHMARK!r}")


def system_description(log: RunLog, system: str) -> dict[str, object]:
    """Every field system_desc_checker requires, from the log, the machine, or UNKNOWN."""
    from fastcam import accelerator

    accelerators = int(log.value(logkeys.ACCELERATORS_PER_NODE) or 0)
    cpu = _cpuinfo()
    # The packaging machine's accelerator (CUDA, ROCm or XPU) describes the runs' when they used one.
    device = accelerator.resolve_device("auto") if accelerators else None
    gpu = accelerator.device_name(device) if device is not None and device.type != "cpu" else None
    versions = accelerator.software_versions(device if gpu else accelerator.resolve_device("cpu"))
    no_accelerator = "N/A (CPU run)" if accelerators == 0 else UNKNOWN
    return {
        "submitter": str(log.value(logkeys.SUBMISSION_ORG) or UNKNOWN),
        "division": str(log.value(logkeys.SUBMISSION_DIVISION) or UNKNOWN),
        "status": str(log.value(logkeys.SUBMISSION_STATUS) or UNKNOWN),
        "system_name": system,
        "number_of_nodes": str(log.value(logkeys.NUMBER_OF_NODES) or UNKNOWN),
        "host_processors_per_node": str(cpu["sockets"]) if cpu["sockets"] else UNKNOWN,
        "host_processor_model_name": cpu["model"] or UNKNOWN,
        "host_processor_core_count": str(cpu["cores"]) if cpu["cores"] else UNKNOWN,
        "host_processor_vcpu_count": str(os.cpu_count() or UNKNOWN),
        "host_processor_frequency": UNKNOWN,
        "host_processor_caches": cpu["cache"] or UNKNOWN,
        "host_processor_interconnect": UNKNOWN,
        "host_memory_capacity": _memory() or UNKNOWN,
        "host_storage_type": UNKNOWN,
        "host_storage_capacity": UNKNOWN,
        "host_networking": UNKNOWN,
        "host_networking_topology": UNKNOWN,
        "host_memory_configuration": UNKNOWN,
        "accelerators_per_node": str(accelerators),
        "accelerator_model_name": gpu or no_accelerator,
        "accelerator_host_interconnect": no_accelerator,
        "accelerator_frequency": no_accelerator,
        "accelerator_on-chip_memories": no_accelerator,
        "accelerator_memory_configuration": no_accelerator,
        "accelerator_memory_capacity": (f"{accelerator.memory_capacity_bytes(device) / 2**30:.0f} GiB"
                                        if gpu else no_accelerator),
        "accelerator_interconnect": no_accelerator,
        "accelerator_interconnect_topology": no_accelerator,
        "cooling": UNKNOWN,
        "hw_notes": f"host_* fields probed by fastcam package on {platform.node() or 'this machine'}",
        "framework": _framework(versions),
        "other_software_stack": ", ".join(f"{'Python' if name == 'python' else name} {versions[name]}"
                                          for name in versions if name not in ("torch", "cuda", "rocm", "xpu")),
        "operating_system": platform.platform(),
        "sw_notes": f"platform logged by the runs: {log.value(logkeys.SUBMISSION_PLATFORM)}",
    }


def _framework(versions: dict[str, str]) -> str:
    """"PyTorch 2.13.0, CUDA 13.0" (or ROCm 7.0, XPU ...) from accelerator.software_versions."""
    stack = [f"{label} {versions[key]}" for key, label in (("cuda", "CUDA"), ("rocm", "ROCm"), ("xpu", "XPU"))
             if key in versions]
    return ", ".join([f"PyTorch {versions['torch']}", *stack])


def _cpuinfo() -> dict[str, object]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or None, "sockets": None, "cores": None, "cache": None}

    def values(name: str) -> list[str]:
        return re.findall(rf"^{name}\s*:\s*(.+)$", text, re.MULTILINE)

    sockets = len(set(values("physical id"))) or None
    per_socket = values("cpu cores")
    cores = int(per_socket[0]) * (sockets or 1) if per_socket else None
    return {"model": (values("model name") or [None])[0], "sockets": sockets, "cores": cores,
            "cache": (values("cache size") or [None])[0]}


def _memory() -> str | None:
    try:
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return None
    return f"{int(match[1]) / 2**20:.0f} GiB" if match else None


@dataclass
class PackageCheck:
    passed: bool
    errors: list[str]  # the checker's ERROR lines, in order
    output: str


def check_package(root: str | os.PathLike[str], ruleset: str = "3.0.0") -> PackageCheck:
    """Runs ``python -m mlperf_logging.package_checker ROOT hpc RULESET`` and collects its ERROR lines.

    The checker logs ``LEVEL - message`` lines and always exits 0; its verdict
    is the last line, "PACKAGE CHECKER FOUND NO ERRORS, SUCCESS !" or "...FOUND ERRORS...".
    """
    with tempfile.TemporaryDirectory(prefix="fastcam-package-check-") as scratch:
        proc = subprocess.run([sys.executable, "-m", "mlperf_logging.package_checker", os.path.abspath(root), "hpc",
                               ruleset, "--log_output", os.path.join(scratch, "checker.log")],
                              cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=_CHECKER_TIMEOUT_S, check=False)
    output = proc.stdout
    errors = [line[len("ERROR - "):].strip() for line in output.splitlines() if line.startswith("ERROR - ")]
    passed = proc.returncode == 0 and "FOUND NO ERRORS" in output and not errors
    if proc.returncode != 0 and not errors:
        errors.append(f"the checker exited with code {proc.returncode}: {output.strip().splitlines()[-1:]}")
    return PackageCheck(passed, errors, output)
