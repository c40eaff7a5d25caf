"""``python -m bench.deploy``: the compose smoke run (``deploy/smoke.py``), timed, into bench/results/deploy.json.

Records ``build_s`` (both images, from a cold or warm cache as found: ``base_images`` and the engine say
which), ``image_mb`` per image, ``context_mb`` (the build context as sent), ``healthy_s`` (``up`` until
every service is healthy), ``first_face_s`` (``up`` until a face is listed over REST), the checks of the
scenario, the indexes used and the machine's load. ``--docker-root DIR`` keeps a daemon started here
(and its image cache) in DIR between runs; the default is a fresh one, deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from eval.provenance import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "deploy.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.deploy", description=__doc__.splitlines()[0])
    p.add_argument("--docker-root", type=Path, help="folder of a dockerd started here, kept between runs")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from deploy import smoke

    result = smoke.run(a.docker_root)
    result.pop("logs", None) if result["passed"] else None
    write_results(result, a.out)
    json.dump({k: v for k, v in result.items() if k != "logs"}, sys.stdout, indent=2)
    print()
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
