"""``python -m train <model>``: train and register the project's models."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train")
    p.add_argument("--cache", type=Path, default=None, help="prepared LFW cache (FACECODEC_EVAL_CACHE)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reconstruction", help="feature-to-face network (paper 3.2)")
    r.add_argument("--out", type=Path, default=Path("var/train/reconstruction"))
    r.add_argument("--epochs", type=int, default=40)
    r.add_argument("--batch", type=int, default=64)
    r.add_argument("--lr0", type=float, default=2e-3)
    r.add_argument("--lr1", type=float, default=2e-5)
    r.add_argument("--lam", type=float, default=0.5, help="weight of the perceptual term")
    r.add_argument("--base", type=int, default=128, help="channels at 7x7")
    r.add_argument("--vgg-weights", type=Path, default=None, help="local VGG-19 state dict for the paper's loss")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--export", action="store_true", help="register the final weights in facecodec/models")
    b = sub.add_parser("base-layer", help="PCA transform + per-dimension probability model (paper 3.1)")
    b.add_argument("--default-step", type=int, default=7)
    h = sub.add_parser("header-dictionary", help="typical image headers, deflated away in enhancement layers")
    h.add_argument("--samples", type=int, default=24, help="train-people crops to sample")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.cmd == "base-layer":
        from train.base_layer import main as run

        run(args)
    elif args.cmd == "header-dictionary":
        from train.header_dictionary import main as run

        run(args)
    elif args.cmd == "reconstruction":
        from train.reconstruction import main as run

        run(args)


if __name__ == "__main__":
    main()
