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
    r = sub.add_parser("rate-accuracy", help="verification accuracy against bytes per face")
    r.add_argument("--set-default", action="store_true",
                   help="make the chosen default point the base-layer model's default step")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cache = args.cache or default_cache()
    if args.cmd == "prepare":
        from eval.prepare import prepare

        prepare(lfw_root(), cache, workers=args.workers, limit=args.limit)
    elif args.cmd == "rate-accuracy":
        from eval.prepare import FeatureCache
        from eval.rate_accuracy import run

        result = run(FeatureCache(cache))
        point = result["default_point"]
        print(f"float accuracy {result['float_accuracy']:.4f}; default point: step {point['step']} "
              f"{point['bytes']:.1f} bytes, accuracy {point['accuracy']:.4f}")
        if args.set_default:
            from train.base_layer import set_default_step

            set_default_step(result["base_layer_model"], point["step_index"])
            print(f"default step of {result['base_layer_model']} is now {point['step_index']}")


if __name__ == "__main__":
    main()
