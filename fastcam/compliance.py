"""Runs the official MLPerf compliance checker and parses what it reports.

The checker (``python -m mlperf_logging.compliance_checker --usage hpc
--ruleset 3.0.0 LOG``, mlperf_logging/compliance_checker/mlp_compliance.py)
prints, through :mod:`logging` as ``LEVEL - message`` records, one WARNING
record holding every problem joined by a line of 30 dashes, then
``ERROR - FAILED`` (exit code 1) or ``INFO - SUCCESS`` (exit code 0). The
problem messages have these shapes:

- ``CHECK for 'KEY' failed in line N:`` / the log line / ``failed test: EXPR``
- ``Failed executing CHECK code:`` / EXPR / ``triggered by line:`` / log line
- ``Failed executing code PRE|POST code triggered by line :`` / log line
- ``Failed checks for KEY : EXPR`` -- an ``ATLEAST_ONE_CHECK`` no record met;
  for DeepCAM this is how "target not reached" is reported: at least one
  ``eval_accuracy`` anywhere in the log must lie in [0.82, 1]
  (closed_deepcam.yaml / open_deepcam.yaml)
- ``Required EXACTLY_ONE occurrence of 'KEY' but found N[ with different
  values: [...]]``; found N > 1 *with identical values* is only a warning
  (``put_warning``), which does not fail the log
- ``Required AT_LEAST_ONE occurrence of 'KEY' but found 0``,
  ``Required AT_LEAST(n) occurrence of 'KEY' ...``
- ``Required AT_LEAST_ONE occurrence of 'A' or 'B'``
- ``Log lines had parsing errors.``, ``No log lines detected``,
  ``Could not find config file: ...``, ``failed test: ...`` (END blocks).

The checker keeps one message per key (a later message for a key replaces
the earlier), so a key appears at most once among the failures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import mlperf_logging.compliance_checker as checker_package

from fastcam.errors import ConfigError, DataError

_SEPARATOR = "\n" + "-" * 30 + "\n"
_RECORD_START = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) - ", re.MULTILINE)
_CHECKER_TIMEOUT_S = 300
# Keys of failures that concern the log as a whole rather than one key.
LOG_KEY = "log"
CHECKER_KEY = "checker"


@dataclass
class CheckerResult:
    """What the checker said about one log.

    ``failures`` holds one ``"<key>: <reason>"`` string per failed rule;
    ``warnings`` the problems the checker reports but does not fail on
    (a key logged more than once with the same value); ``output`` is the
    checker's complete output.
    """

    passed: bool
    failures: list[str]
    output: str
    warnings: list[str] = field(default_factory=list)


def run_checker(log_path: str | os.PathLike[str], ruleset: str = "3.0.0",
                usage: str = "hpc") -> CheckerResult:
    """Runs the official checker on ``log_path`` in a subprocess and parses it."""
    log_path = os.fspath(log_path)
    if not os.path.isfile(log_path):
        raise DataError(f"MLPerf log {log_path} does not exist")
    rules_dir = os.path.join(os.path.dirname(checker_package.__file__), f"{usage}_{ruleset}")
    if not os.path.isdir(rules_dir):
        raise ConfigError(f"the installed mlperf_logging has no rules for usage {usage!r}, "
                          f"ruleset {ruleset!r}")
    # --log_output defaults to ./compliance_checker.log; keep it out of the
    # caller's working directory.
    with tempfile.TemporaryDirectory(prefix="fastcam-checker-") as scratch:
        proc = subprocess.run(
            [sys.executable, "-m", "mlperf_logging.compliance_checker",
             "--usage", usage, "--ruleset", ruleset,
             "--log_output", os.path.join(scratch, "checker.log"), os.path.abspath(log_path)],
            cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=_CHECKER_TIMEOUT_S, check=False)
    return parse_checker_output(proc.stdout, proc.returncode)


def parse_checker_output(output: str, returncode: int) -> CheckerResult:
    """Turns the checker's output and exit code into a :class:`CheckerResult`."""
    messages = _problem_messages(output)
    failures: list[str] = []
    warnings: list[str] = []
    for message in messages:
        summary, is_warning = _summarise(message)
        (warnings if is_warning else failures).append(summary)
    passed = returncode == 0
    if not passed and not failures:
        # Not a verdict on the log: the checker itself crashed (traceback).
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        failures.append(f"{CHECKER_KEY}: exited with code {returncode}: {last}")
    return CheckerResult(passed=passed, failures=failures, output=output, warnings=warnings)


def failed_keys(result: CheckerResult) -> set[str]:
    """The log keys named by the failures (``A or B`` alternatives give both)."""
    keys: set[str] = set()
    for failure in result.failures:
        keys.update(k.strip() for k in failure.split(": ", 1)[0].split(" or "))
    return keys


def _problem_messages(output: str) -> list[str]:
    """The messages of the checker's final WARNING record (its problem list)."""
    starts = [m.start() for m in _RECORD_START.finditer(output)]
    records = [output[a:b] for a, b in zip(starts, starts[1:] + [len(output)])]
    warnings = [r for r in records if r.startswith("WARNING - ")]
    # Parsing errors are logged earlier as their own WARNING records, but they
    # also add "Log lines had parsing errors." to the problem list, so the
    # problem list, when there is one, is always the last WARNING record.
    if not warnings:
        return []
    block = warnings[-1][len("WARNING - "):].strip()
    block = block.split("\n** Logging output also at", 1)[0]
    return [m.strip() for m in block.split(_SEPARATOR) if m.strip()]


def _summarise(message: str) -> tuple[str, bool]:
    """``("<key>: <reason>", is_warning)`` for one checker message."""
    first, _, rest = message.partition("\n")
    if m := re.match(r"CHECK for '([^']+)' failed in line (\d+):", first):
        line, test = _log_line(rest), _field(rest, "failed test:")
        value = line.get("value") if line else "?"
        return f"{m[1]}: failed `{test}` (value {value!r}, log line {m[2]})", False
    if first.startswith("Failed executing CHECK code:"):
        line = _log_line(rest)
        test = rest.split("\ntriggered by line:", 1)[0].strip()
        key = line.get("key", "?") if line else "?"
        value = line.get("value") if line else "?"
        return f"{key}: cannot evaluate `{test}` (value {value!r})", False
    if m := re.match(r"Failed executing code (\w+) code triggered by line", first):
        line = _log_line(rest)
        return f"{line.get('key', '?') if line else '?'}: {m[1]} code raised", False
    if m := re.match(r"Failed checks for (\S+) : (.*)", first):
        return f"{m[1]}: no record satisfies `{m[2].strip()}`", False
    if m := re.match(r"Required EXACTLY_ONE occurrence of '([^']+)' but found (\d+)(.*)", first):
        is_warning = int(m[2]) > 1 and "different values" not in m[3]
        return f"{m[1]}: expected exactly one, found {m[2]}{m[3]}", is_warning
    if m := re.match(r"Required (AT_LEAST_ONE|AT_LEAST\(\d+\)) occurrence of '([^']+)' "
                     r"but found (\d+)", first):
        return f"{m[2]}: required {m[1]}, found {m[3]}", False
    if m := re.match(r"Required AT_LEAST_ONE occurrence of (.*)", first):
        keys = " or ".join(re.findall(r"'([^']+)'", m[1]))
        return f"{keys}: none logged (at least one required)", False
    if first.startswith("Log lines had parsing errors") or first.startswith("No log lines"):
        return f"{LOG_KEY}: {first.rstrip('.')}", False
    return f"{CHECKER_KEY}: {first}", False


def _log_line(text: str) -> dict | None:
    """The JSON of the first ``:::MLLOG`` line in ``text``, if any."""
    m = re.search(r"^:::MLLOG (.*)$", text, re.MULTILINE)
    if not m:
        return None
    try:
        return json.loads(m[1])
    except json.JSONDecodeError:
        return None


def _field(text: str, label: str) -> str:
    m = re.search(rf"^{re.escape(label)}(.*)$", text, re.MULTILINE)
    return m[1].strip() if m else "?"
