"""What the ``facecodec`` command costs a user: start-up, one image in a fresh process, and each image in a batch.

    python -m bench.cli [--runs 3] [--out bench/results/cli.json]

Every figure is the wall-clock time of real processes (``python -m facecodec.cli ...``, as the
``facecodec`` script runs), the median of ``--runs``, on the committed sample faces (tests/data/faces,
36 images):

- ``startup_s``: ``facecodec --help`` (the interpreter and the command line, nothing else);
- ``info_s``: ``facecodec info`` of a base-layer payload (the codec library, no network);
- ``first_image_s``, ``first_image_rss_mb``: ``facecodec analyze`` of one image (start-up, the networks
  loaded, one image analysed: what one call per image costs each time);
- ``batch_s``, ``batch_rss_mb``: ``facecodec analyze`` of all 36 in one process; ``per_image_s`` is
  ``(batch_s - first_image_s) / 35``: what each further image costs once the networks are loaded;
- ``stderr_warnings``: lines of stderr, over every run, that mention a warning (the progress bar aside).

Peak memory from ``wait4``'s ``ru_maxrss``. The load average before and after is recorded: the machine
may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "faces"
PROVENANCE_PATHS = ("facecodec", "bench/cli.py")


def run(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stderr) of ``python -m facecodec.cli ARGS``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "facecodec.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    stderr = proc.stderr.read()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"facecodec {' '.join(args)} exited {proc.returncode}: {stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, stderr


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.search(r"warn", line, re.I)]


def measure(runs: int) -> dict:
    from eval import provenance

    images = sorted(FACES.glob("*/*.jpg"))
    one = str(images[0])
    warnings: list[str] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "face.fcb"
        wall, _, err = run(["encode", one, "-o", str(payload)])
        warnings += warnings_in(err)

        def median(args: list[str]) -> tuple[float, float]:
            walls, rss = [], []
            for _ in range(runs):
                w, r, e = run(args)
                walls.append(w)
                rss.append(r)
                warnings.extend(warnings_in(e))
            return statistics.median(walls), max(rss)

        startup, startup_rss = median(["--help"])
        info, _ = median(["info", str(payload)])
        first, first_rss = median(["analyze", "-q", one])
        batch, batch_rss = median(["analyze", "-q", str(FACES)])
    n = len(images)
    return {
        "images": n,
        "runs": runs,
        "startup_s": round(startup, 3),
        "startup_rss_mb": round(startup_rss, 1),
        "info_s": round(info, 3),
        "first_image_s": round(first, 3),
        "first_image_rss_mb": round(first_rss, 1),
        "batch_s": round(batch, 3),
        "batch_rss_mb": round(batch_rss, 1),
        "per_image_s": round((batch - first) / (n - 1), 4),
        "one_process_per_image_s": round(first, 3),
        "stderr_warnings": len(warnings),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "commit": provenance.commit(PROVENANCE_PATHS),
        "machine": provenance.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs per figure (the median is kept)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli.json")
    args = p.parse_args(argv)
    result = measure(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
