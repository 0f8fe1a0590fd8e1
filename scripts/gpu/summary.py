"""The GPU check's summary: ``$OUT/summary.json`` and a text table on stdout.

Joins ``$OUT/parts.jsonl`` (what the shell script saw: rc, seconds, limit,
skipped) with each part's ``$OUT/<part>.json`` (status, errors, figures).
``figures`` flattens every number the parts measured to ``part.key.field``
names (the profile's kernel list is kept apart as ``top_kernels``). A part
that failed gets the tail of its log, ``$FASTCAM_CHECK_WORK/logs/<part>.log``,
since only the files under ``$OUT`` come back from the GPU machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from report import now

LOG_TAIL_LINES = 15


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def part_lines(out: Path) -> list[dict]:
    lines = []
    try:
        text = (out / "parts.jsonl").read_text()
    except OSError:
        return lines
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"part": "?", "rc": None, "unreadable_line": line[:200]})
    return lines


def flatten(prefix: str, value, into: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}", item, into)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        into[prefix] = value


def summarize(out: Path, work: Path) -> dict:
    parts, figures, top_kernels = [], {}, None
    env = None
    for line in part_lines(out):
        name = line.get("part", "?")
        data = load_json(out / f"{name}.json")
        entry = dict(line)
        entry["status"] = "skipped" if line.get("skipped") else (data or {}).get("status", "no JSON written")
        entry["errors"] = (data or {}).get("errors", {})
        if line.get("rc") not in (0, None) or entry["errors"]:
            entry["log_tail"] = _tail(work / "logs" / f"{name}.log")
        parts.append(entry)
        if data:
            flatten(name, data.get("results", {}), figures)
            if name == "env":
                env = data
            if name == "compiled":
                top_kernels = data.get("results", {}).get("profile", {}).get("top")
    gpu = (env or {}).get("results", {}).get("gpu", {})
    host = (env or {}).get("results", {}).get("host", {})
    return {"date": now(), "device": gpu.get("name") or os.environ.get("FASTCAM_CHECK_DEVICE", "cuda"),
            "torch": host.get("torch"), "cuda": gpu.get("cuda"), "parts": parts, "figures": figures,
            "top_kernels": top_kernels}


def _tail(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return []


def format_text(summary: dict) -> str:
    lines = [f"GPU check on {summary['device']} (torch {summary['torch']}, CUDA {summary['cuda']}), {summary['date']}",
             "", "| part | rc | seconds / limit | status | first error |", "| --- | --- | --- | --- | --- |"]
    for p in summary["parts"]:
        error = next(iter(p["errors"].values()), "") if p["errors"] else ""
        lines.append(f"| {p.get('part')} | {p.get('rc')} | {p.get('seconds')} / {p.get('limit')} | {p['status']} | "
                     f"{error[:90]} |")
    lines += ["", "| figure | value |", "| --- | --- |"]
    lines += [f"| {key} | {value:.4g} |" for key, value in summary["figures"].items()]
    if summary["top_kernels"]:
        lines += ["", "| top kernel (compiled step) | ms/step | % |", "| --- | --- | --- |"]
        lines += [f"| {k['name'][:70]} | {k['ms_per_step']:.2f} | {k['percent']:.1f} |"
                  for k in summary["top_kernels"][:8]]
    return "\n".join(lines)


def main() -> None:
    from fastcam.files import atomic_write_text

    out = Path(os.environ.get("OUT") or Path.cwd() / "gpu-out")
    work = Path(os.environ.get("FASTCAM_CHECK_WORK") or "/tmp/fastcam-gpu-check")
    summary = summarize(out, work)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(format_text(summary))
    print(f"\nwrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
