"""``python -m eval <command>``: the evaluation harness's single entry point."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from eval.lfw import lfw_root
from eval.prepare import default_cache


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    p.add_argument("--cache", type=Path, default=None, help="feature cache folder (FACECODEC_EVAL_CACHE)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("prepare", help="detect, align and extract features for all of LFW (resumable)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--limit", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cache = args.cache or default_cache()
    if args.cmd == "prepare":
        from eval.prepare import prepare

        prepare(lfw_root(), cache, workers=args.workers, limit=args.limit)


if __name__ == "__main__":
    main()
