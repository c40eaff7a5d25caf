"""``python -m train <model>``: train and register the project's models."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train")
    p.add_argument("--cache", type=Path, default=None, help="prepared LFW cache (FACECODEC_EVAL_CACHE)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reconstruction", help="the display network: feature-to-face (paper 3.2)")
    r.add_argument("--out", type=Path, default=Path("var/train/reconstruction"))
    r.add_argument("--arch", choices=("upconv", "dconv"), default="upconv",
                   help="upconv: upsampling + 3x3 convolutions, MSE + SSIM + identity; dconv: the paper's Fig. 1, MAE + SSIM")
    r.add_argument("--steps", type=int, default=6000)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--lr0", type=float, default=1e-3)
    r.add_argument("--lr1", type=float, default=1e-5)
    r.add_argument("--lam", type=float, default=0.1, help="weight of the structural (SSIM or VGG) term")
    r.add_argument("--identity", type=float, default=0.3,
                   help="weight of the squared dlib-descriptor distance to the original (0: no identity term)")
    r.add_argument("--degrade", action="store_true",
                   help="compare the descriptors after the same random blur of both faces (an experiment, see the card)")
    r.add_argument("--base", type=int, default=192, help="channels at 7x7")
    r.add_argument("--val-people", type=int, default=100, help="train people held out to watch the run")
    r.add_argument("--checkpoint-every", type=int, default=250)
    r.add_argument("--vgg-weights", type=Path, default=None, help="local VGG-19 state dict for the paper's loss")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--export", action="store_true", help="register the final weights in facecodec/models")
    b = sub.add_parser("base-layer", help="transform + per-component probability model (paper 3.1)")
    b.add_argument("--format", type=int, choices=(1, 2), default=2,
                   help="2: discriminant basis, range coder (the default); 1: PCA over 128 dimensions, rANS")
    b.add_argument("--default-step", type=int, default=None, help="step index until rate-accuracy sets it")
    h = sub.add_parser("header-dictionary", help="typical image headers, deflated away in enhancement layers")
    h.add_argument("--samples", type=int, default=24, help="train-people crops to sample")
    c = sub.add_parser("learned-codec", help="learned enhancement-layer codecs (paper 3.3): factorized prior, GDN")
    c.add_argument("--variant", choices=("residual", "conditional"), default="residual")
    c.add_argument("--out", type=Path, default=Path("var/train/learned"))
    c.add_argument("--steps", type=int, nargs="+", default=[6000, 2500],
                   help="steps of the first rate point, then of each later point (the last value repeats)")
    c.add_argument("--lambdas", type=float, nargs="+", default=None, help="rate-distortion weights, highest rate first")
    c.add_argument("--batch", type=int, default=16)
    c.add_argument("--lr", type=float, default=2e-4)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--checkpoint-every", type=int, default=250)
    c.add_argument("--export", action="store_true", help="register the finished rate points in facecodec/models")
    ph = sub.add_parser("prediction-head", help="ridge map from feature to pixels: the enhancement layer's predictor")
    ph.add_argument("--alpha", type=float, default=1000.0, help="ridge penalty (standardised features)")
    rs = sub.add_parser("restoration", help="the enhancement layer's restoration network for one image codec")
    rs.add_argument("--codec", default="avif")
    rs.add_argument("--out", type=Path, default=Path("var/train/restoration"))
    rs.add_argument("--per-image", type=int, default=3, help="coded samples per train image")
    rs.add_argument("--qualities", type=int, nargs=2, default=(0, 95), help="range of qualities to sample")
    rs.add_argument("--steps", type=int, default=6000)
    rs.add_argument("--batch", type=int, default=16)
    rs.add_argument("--lr0", type=float, default=1e-3)
    rs.add_argument("--lr1", type=float, default=2e-5)
    rs.add_argument("--width", type=int, default=32, help="channels at full resolution")
    rs.add_argument("--blocks", type=int, default=1, help="residual blocks at the coarsest stage")
    rs.add_argument("--train-qualities", type=int, nargs=2, default=(0, 100),
                    help="train on the samples coded at these qualities only (validation keeps them all)")
    rs.add_argument("--val-people", type=int, default=100, help="train people held out to watch the run")
    rs.add_argument("--checkpoint-every", type=int, default=250)
    rs.add_argument("--threads", type=int, default=1)
    rs.add_argument("--workers", type=int, default=1, help="processes coding the samples")
    rs.add_argument("--export", action="store_true", help="register the final network in facecodec/models")
    sub.add_parser("runtime-models", help="convert MTCNN, dlib's descriptor and PyTorch reconstruction models to "
                                          "the files the services run (ONNX, .npz), check and register them")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.cmd == "base-layer":
        from train.base_layer import main as run

        run(args)
    elif args.cmd == "header-dictionary":
        from train.header_dictionary import main as run

        run(args)
    elif args.cmd == "prediction-head":
        from train.prediction_head import main as run

        run(args)
    elif args.cmd == "learned-codec":
        from train.learned_codec import LAMBDAS, main as run

        args.lambdas = args.lambdas or list(LAMBDAS)
        run(args)
    elif args.cmd == "runtime-models":
        from train.convert import main as run

        run(args)
    elif args.cmd == "restoration":
        from train.restoration import main as run

        run(args)
    elif args.cmd == "reconstruction":
        from train.reconstruction import main as run

        run(args)


if __name__ == "__main__":
    main()
