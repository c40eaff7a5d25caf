"""``python -m eval <command>``: the evaluation harness's single entry point."""

from __future__ import annotations

import argparse
import json
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
    r.add_argument("--no-anchors", action="store_true", help="base layer only (skip compress-then-analyze)")
    r.add_argument("--no-quantizers", action="store_true", help="skip the PQ / OPQ / ITQ comparison (FAISS, minutes)")
    r.add_argument("--pairs-per-fold", type=int, default=30, help="pairs per fold for the anchors (dlib is slow)")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--quick", action="store_true", help="a few pairs and qualities: checks the harness, not the codec")
    r.add_argument("--out", type=Path, default=None, help="results file (default eval/results/rate_accuracy.json)")
    d = sub.add_parser("rate-distortion", help="PSNR / MS-SSIM against bits per pixel on test people")
    d.add_argument("--images", type=int, default=None, help="test images to use (default: all those --per-person keeps)")
    d.add_argument("--per-person", type=int, default=2, help="at most this many images of each test person (0: all)")
    d.add_argument("--learned", action="store_true", help="also measure the learned codecs (experiments)")
    d.add_argument("--bootstrap", type=int, default=200, help="resamples of people for the BD-rate intervals")
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--quick", action="store_true", help="24 images, half the qualities")
    d.add_argument("--out", type=Path, default=None, help="results file (default eval/results/rate_distortion.json)")
    a = sub.add_parser("avif-settings", help="AVIF encoder settings for the face and for the enhancement layer")
    a.add_argument("--images", type=int, default=300, help="test images (default 300)")
    a.add_argument("--per-person", type=int, default=1, help="at most this many images of each test person")
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--out", type=Path, default=None, help="results file (default eval/results/avif_settings.json)")
    b = sub.add_parser("prediction-bound", help="what a prediction that knew the person perfectly would save")
    b.add_argument("--least", type=int, default=10, help="test people with at least this many images")
    b.add_argument("--per-person", type=int, default=10, help="at most this many images of each")
    b.add_argument("--out", type=Path, default=None, help="results file (default eval/results/prediction_bound.json)")
    sub.add_parser("figures", help="PNG plots of the results files and the Fig. 3 grid")
    c = sub.add_parser("reconstruction", help="quality and identity of faces rebuilt from the base layer")
    c.add_argument("--model", default=None, help="registered reconstruction model (default: newest)")
    c.add_argument("--limit", type=int, default=None, help="test images to use (default: all)")
    c.add_argument("--previous", nargs="*", default=None,
                   help="older display models measured beside it and shown in the grid (default: every older one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cache = args.cache or default_cache()
    if args.cmd == "prepare":
        from eval.prepare import prepare

        prepare(lfw_root(), cache, workers=args.workers, limit=args.limit)
    elif args.cmd == "rate-accuracy":
        from eval.prepare import FeatureCache
        from eval.rate_accuracy import run

        from eval.rate_accuracy import RESULTS

        result = run(FeatureCache(cache), out=args.out or RESULTS / "rate_accuracy.json", anchors=not args.no_anchors,
                     per_fold=args.pairs_per_fold, workers=args.workers, quick=args.quick,
                     quantizers=not args.no_quantizers)
        point = result["default_point"]
        print(f"float accuracy {result['float_accuracy']:.4f}; default point: step {point['step']} "
              f"{point['bytes']:.1f} bytes per person ({point['bytes_per_image']:.1f} per image, "
              f"{point['stream_bytes']:.1f} on the stream), accuracy {point['accuracy']:.4f}, "
              f"threshold {point['threshold']['value']:.6f}")
        if args.set_default:
            from train.base_layer import set_default_step

            set_default_step(result["base_layer_model"], point["step_index"])
            print(f"default step of {result['base_layer_model']} is now {point['step_index']}")
    elif args.cmd == "reconstruction":
        from eval.prepare import FeatureCache
        from eval.reconstruction import RESULTS, grid, run

        from facecodec import reconstruction, zoo

        display = args.model or reconstruction.default_name()
        previous = args.previous
        if previous is None:  # every older display model: the grid shows before and after
            previous = [e.name for e in sorted(zoo.entries(reconstruction.KIND), key=lambda e: e.tag or 0)
                        if e.serves("display") and e.name != display]
        result = run(FeatureCache(cache), args.model, args.limit, previous=tuple(previous))
        predictor = reconstruction.default_name("prediction")
        rows = [*previous, display] + ([predictor] if args.model is None and predictor != display else [])
        grid(FeatureCache(cache), RESULTS / "reconstruction_grid.png", models=rows)
        print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=2))
    elif args.cmd == "rate-distortion":
        from eval.prepare import FeatureCache
        from eval.rate_distortion import RESULTS, run

        result = run(FeatureCache(cache), images=args.images, workers=args.workers, quick=args.quick,
                     out=args.out or RESULTS / "rate_distortion.json", per_person=args.per_person or None,
                     learned=args.learned, bootstrap=args.bootstrap)
        print(json.dumps(result["bd_rate"], indent=2))
    elif args.cmd == "avif-settings":
        from eval.avif_settings import RESULTS, run
        from eval.prepare import FeatureCache

        result = run(FeatureCache(cache), images=args.images, per_person=args.per_person, workers=args.workers,
                     out=args.out or RESULTS / "avif_settings.json")
        print(json.dumps({k: {m: v for m, v in e.items() if m != "curves"} for k, e in result["settings"].items()},
                         indent=2))
    elif args.cmd == "prediction-bound":
        from eval.prediction_bound import RESULTS, run
        from eval.prepare import FeatureCache

        result = run(FeatureCache(cache), args.least, args.per_person, out=args.out or RESULTS / "prediction_bound.json")
        print(json.dumps(result["bd_rate"], indent=2))
    elif args.cmd == "figures":
        from eval.figures import main as figures

        for path in figures(cache):
            print(path)


if __name__ == "__main__":
    main()
