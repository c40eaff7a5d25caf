"""Where a results file came from: the commit (and whether the tree was clean) and the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# The code that an evaluation's numbers depend on; edits elsewhere (a service) do not make them dirty.
EVAL_PATHS = ("facecodec", "eval", "train")


def commit(paths: tuple[str, ...] = ()) -> str:
    """HEAD's hash, with ``-dirty`` when tracked files (under ``paths``, default all) differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        # results files are outputs, not code: rewriting one does not make the next run dirty
        spec = [*paths, ":(exclude)eval/results", ":(exclude)bench/results"] if paths else []
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *spec], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def write_results(result: dict, out: Path | None) -> dict:
    """Stamp ``result`` with the commit of the evaluated code and the machine, and write it to ``out``."""
    result = {**result, "commit": commit(EVAL_PATHS), "machine": machine()}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
