"""Train the feature-to-face network (paper 3.2, equation 3) on the train people.

Loss: MAE + lambda * (1 - SSIM). The paper's perceptual term (VGG-19 relu3_2) needs weights
that cannot be downloaded here; ``--vgg-weights FILE`` uses them when a local file is given,
otherwise SSIM (an offline structural term) stands in. Checkpoints every epoch make the run
resumable; ``--export`` writes the half-precision weights into the model registry.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facecodec.crop import CROP, face_crop
from train.networks import FeatureToFace, to_tensor

log = logging.getLogger(__name__)


def vgg_perceptual(weights: Path):
    """Distance between VGG-19 relu3_2 feature maps (the paper's term), from a local weights file."""
    import torch
    from torchvision.models import vgg19

    net = vgg19()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    trunk = net.features[:14].eval()  # up to relu3_2
    for p in trunk.parameters():
        p.requires_grad_(False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def loss(a, b):
        na, nb = ((a + 1) / 2 - mean) / std, ((b + 1) / 2 - mean) / std
        return torch.mean((trunk(na) - trunk(nb)) ** 2)

    return loss


def ssim_term(a, b):
    from pytorch_msssim import ssim

    return 1 - ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, size_average=True)


def train(out_dir: Path, feats: np.ndarray, crops: np.ndarray, epochs: int, batch: int, lr0: float, lr1: float,
          lam: float, base: int, vgg_weights: Path | None, threads: int) -> Path:
    import torch

    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.pt"
    net = FeatureToFace(feats.shape[1], base)
    net.feat_mean.copy_(torch.from_numpy(feats.mean(0)))
    net.feat_std.copy_(torch.from_numpy(feats.std(0) + 1e-6))
    mean_face = crops.astype(np.float32).mean(0) / 127.5 - 1
    net.face_bias.data.copy_(torch.from_numpy(np.arctanh(np.clip(mean_face, -0.98, 0.98))).permute(2, 0, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr0)
    gamma = (lr1 / lr0) ** (1 / max(epochs - 1, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    perceptual = vgg_perceptual(vgg_weights) if vgg_weights else ssim_term
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["epoch"]
        log.info("resumed at epoch %d", start)
    f_all = torch.from_numpy(feats.astype(np.float32))
    rng = np.random.default_rng(0)
    t0 = time.time()
    for epoch in range(start, epochs):
        net.train()
        order = rng.permutation(len(feats))
        tot, n = 0.0, 0
        bar = tqdm(range(0, len(order) - batch + 1, batch), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for s in bar:
            idx = order[s : s + batch]
            x = to_tensor(crops[idx])
            y = net(f_all[idx])
            loss = torch.mean(torch.abs(y - x)) + lam * perceptual(y, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss) * len(idx)
            n += len(idx)
            bar.set_postfix(loss=f"{tot / n:.4f}")
        sched.step()
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch + 1}, ckpt)
        with open(out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, "loss": tot / n, "lr": opt.param_groups[0]["lr"],
                                "elapsed_s": round(time.time() - t0, 1)}) + "\n")
        log.info("epoch %d loss %.4f", epoch + 1, tot / n)
    return ckpt


def export(ckpt: Path, base: int, dim: int = 128) -> str:
    """Register the network in the form the services run (ONNX, :func:`train.convert.reconstruction_file`);
    returns the model name. Enhancement payloads name their predictor by the registry tag."""
    import torch

    from facecodec import zoo
    from train.convert import reconstruction_file

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["net"]
    config = {"dim": dim, "base": base}
    net = FeatureToFace(dim, base)
    net.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()})
    data, suffix, _ = reconstruction_file(net, config)
    return zoo.add(data, f"recon-dconv{base}", suffix, "reconstruction", "{name}.md", backend="dlib-resnet-128").name


def crops_of(chips: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty((len(rows), CROP, CROP, 3), np.uint8)
    for j, i in enumerate(tqdm(rows, desc="crops", leave=False)):
        out[j] = face_crop(np.asarray(chips[i]))
    return out


def main(args) -> None:
    from train.data import decoded_features, load

    cache = load(args.cache)
    rows = cache.split_rows("train")
    log.info("%d train images", len(rows))
    feats = decoded_features(cache.features[rows])
    crops = crops_of(cache.chips, rows)
    ckpt = train(args.out, feats, crops, args.epochs, args.batch, args.lr0, args.lr1, args.lam, args.base,
                 args.vgg_weights, args.threads)
    if args.export:
        print(export(ckpt, args.base))
