"""Train the learned enhancement-layer codecs (paper 3.3) on the train people.

``residual``: Balle et al.'s factorized prior with GDN (compressai ``FactorizedPrior``, N = M =
128 as in the paper) coding the min-max normalised residual ``x_tex`` (equation 4) between the
face crop and its reconstruction from the decoded base layer. ``conditional`` (beyond the
paper): the same transforms, but the reconstruction ``x_fea`` is given to both the analysis and
the synthesis transform (:mod:`facecodec.learned`), which codes the crop itself.

Loss ``lambda * 255^2 * MSE + bpp`` (compressai's convention) on random 64x64 crops, batch 16,
Adam 2e-4 (the paper's settings). Rate points form a lambda ladder, trained from the highest
rate down, each starting from the previous point's weights. A checkpoint every
``--checkpoint-every`` steps makes the run resumable; ``--export`` registers each finished
point in the model registry in half precision, with its entropy-model tables frozen.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

LAMBDAS = (0.0483, 0.025, 0.013, 0.0067, 0.0035)
PATCH = 64


def prepare_data(out_dir: Path, split: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """Crops, base-layer predictions and normalised residuals of ``split`` people (cached)."""
    path = out_dir / f"data-{split}.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    from eval.prepare import FeatureCache, default_cache
    from facecodec import base_layer, enhancement, reconstruction
    from facecodec.crop import face_crop

    cache = FeatureCache(default_cache())
    rows = cache.split_rows(split)[:limit]
    model = reconstruction.load_reconstructor(reconstruction.default_name("prediction"))  # what the encoder subtracts
    crops, preds, texs = [], [], []
    for i in tqdm(rows, desc=f"{split} residuals"):
        crop = face_crop(np.asarray(cache.chips[i]))
        feature = base_layer.decode(base_layer.encode(cache.features[i])).feature
        pred = model(feature)[0]
        tex, _, _ = enhancement.normalise(crop.astype(np.int16) - pred.astype(np.int16))
        crops.append(crop), preds.append(pred), texs.append(tex)
    data = {"crops": np.stack(crops), "preds": np.stack(preds), "texs": np.stack(texs)}
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def _batch(data: dict[str, np.ndarray], variant: str, rng: np.random.Generator, batch: int):
    """(input, target, context) tensors in [0, 1], NCHW: random 64x64 patches with flips."""
    import torch

    n, size = len(data["crops"]), data["crops"].shape[1]
    idx = rng.integers(0, n, batch)
    ys, xs = rng.integers(0, size - PATCH + 1, batch), rng.integers(0, size - PATCH + 1, batch)
    flip = rng.random(batch) < 0.5

    def take(a):
        out = np.stack([a[i, y : y + PATCH, x : x + PATCH] for i, y, x in zip(idx, ys, xs)])
        out[flip] = out[flip, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(out)).permute(0, 3, 1, 2).float() / 255.0

    if variant == "residual":
        t = take(data["texs"])
        return t, None
    return take(data["crops"]), take(data["preds"])


def _evaluate(net, data: dict[str, np.ndarray], variant: str, count: int = 48) -> dict[str, float]:
    """Real bitstreams on whole 112x112 test images: bpp and PSNR in the coded domain."""
    import torch

    from eval.metrics import psnr
    from facecodec.learned import code_image, decode_image

    bpps, psnrs = [], []
    with torch.no_grad():
        for i in np.linspace(0, len(data["crops"]) - 1, count).astype(int):
            target = data["texs"][i] if variant == "residual" else data["crops"][i]
            context = None if variant == "residual" else data["preds"][i]
            stream = code_image(net, target, context)
            out = decode_image(net, stream, context)
            bpps.append(len(stream) * 8 / (target.shape[0] * target.shape[1]))
            psnrs.append(psnr(out, target))
    return {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs))}


def train(out_dir: Path, variant: str, steps: list[int], lambdas: tuple[float, ...], batch: int, lr: float,
          threads: int, checkpoint_every: int) -> list[Path]:
    """Train every rate point in turn; returns the finished points' checkpoint files."""
    import torch

    from facecodec.learned import build

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(out_dir, "train")
    val = prepare_data(out_dir, "test", limit=480)
    net = build(variant)
    ckpt = out_dir / f"{variant}-checkpoint.pt"
    point, step = 0, 0

    def optimisers():
        main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
        aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
        return torch.optim.Adam(main, lr=lr), torch.optim.Adam(aux, lr=1e-3)

    opt, aux_opt = optimisers()
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"], strict=False)
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        point, step = state["point"], state["step"]
        log.info("resumed at point %d step %d", point, step)
    rng = np.random.default_rng(1000 * point + step)
    finished = [out_dir / f"{variant}-point{k}.pt" for k in range(point)]
    logf = out_dir / f"{variant}-log.jsonl"
    t0 = time.time()
    while point < len(lambdas):
        lam, total = lambdas[point], steps[min(point, len(steps) - 1)]
        bar = tqdm(range(step, total), desc=f"{variant} lambda={lam}", initial=step, total=total)
        sums, count = np.zeros(3), 0  # loss, bpp, mse since the last checkpoint
        for step in bar:
            x, ctx = _batch(data, variant, rng, batch)
            net.train()
            out = net(x) if ctx is None else net(x, ctx)
            n_px = x.shape[0] * x.shape[2] * x.shape[3]
            bpp = sum(torch.log(l).sum() for l in out["likelihoods"].values()) / (-np.log(2) * n_px)
            mse = torch.mean((out["x_hat"] - x) ** 2)
            loss = lam * 255**2 * mse + bpp
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            aux = net.aux_loss()
            aux_opt.zero_grad()
            aux.backward()
            aux_opt.step()
            sums += (float(loss), float(bpp), float(mse))
            count += 1
            run_loss, run_bpp, run_mse = sums / count
            bar.set_postfix(loss=f"{run_loss:.3f}", bpp=f"{run_bpp:.3f}", psnr=f"{10 * np.log10(1 / max(run_mse, 1e-10)):.2f}")
            done = step + 1
            if done % checkpoint_every == 0 or done == total:
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                            "point": point, "step": done}, ckpt)
                row = {"variant": variant, "point": point, "lambda": lam, "step": done, "loss": run_loss,
                       "bpp": run_bpp, "mse": run_mse, "aux": float(aux), "elapsed_s": round(time.time() - t0, 1)}
                if done == total:
                    net.eval()
                    net.update(force=True)
                    row["val"] = _evaluate(net, val, variant)
                    path = out_dir / f"{variant}-point{point}.pt"
                    torch.save(net.state_dict(), path)
                    finished.append(path)
                with open(logf, "a") as f:
                    f.write(json.dumps(row) + "\n")
                sums, count = np.zeros(3), 0
        point, step = point + 1, 0
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                    "point": point, "step": 0}, ckpt)
    return finished


def export(variant: str, paths: list[Path], lambdas: tuple[float, ...]) -> list[str]:
    """Register finished points (half precision, entropy tables included); returns their names."""
    import io

    import torch

    from facecodec import learned, zoo

    names = []
    for k, path in enumerate(paths):
        state = torch.load(path, map_location="cpu", weights_only=False)
        blob = {"config": {"variant": variant, "N": learned.CHANNELS, "M": learned.CHANNELS, "lambda": lambdas[k]},
                "state": {n: (v.half() if v.is_floating_point() and not learned.is_table(n) else v)
                          for n, v in state.items()}}
        buf = io.BytesIO()
        torch.save(blob, buf)
        quality = len(lambdas) - k  # trained from the highest rate down; quality 1 is the lowest rate
        e = zoo.add(buf.getvalue(), f"{learned.PREFIX[variant]}-q{quality}", ".pt", learned.KINDS[variant],
                    f"{learned.KINDS[variant]}.md", preferred_tag=quality)
        names.append(e.name)
    return names


def main(args) -> None:
    lambdas = tuple(args.lambdas)
    paths = train(args.out, args.variant, args.steps, lambdas, args.batch, args.lr, args.threads, args.checkpoint_every)
    if args.export:
        for name in export(args.variant, paths, lambdas):
            print(name)
