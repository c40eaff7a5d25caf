"""Train the display network: the face an operator sees, rebuilt from the decoded base layer (paper 3.2).

Two networks of :mod:`train.networks` can be trained here:

- ``dconv`` (the paper's Fig. 1, ``recon-dconv128``): loss MAE + lambda * (1 - SSIM) (equation 3 with
  an offline structural term; the paper's perceptual term, VGG-19 relu3_2, needs weights that cannot be
  downloaded here: ``--vgg-weights FILE`` uses them when a local file is given).
- ``upconv`` (``recon-upconv``, the default since base-layer format 2): MSE + ``--lam`` * (1 - SSIM)
  + ``--identity`` * the squared distance between dlib's descriptor of the reconstruction and of the
  original. The descriptor is dlib's ResNet run by PyTorch (:mod:`facecodec.frontend.dlib_torch`), so
  the term is differentiable; the reconstruction is pasted into the mean train chip (150x150) before
  dlib sees it, exactly as ``python -m eval reconstruction`` measures identity. Horizontal flips double
  the data: a flipped face's input is the decoded base layer of the flipped chip's feature.

Inputs are the features after a base-layer round trip at the default codec (what the server holds,
:func:`train.data.decoded_features`). A people-disjoint slice of the train people (``--val-people``)
is held out to watch the run; nothing of the test people is used. Checkpoints every
``--checkpoint-every`` steps (and the log, one JSON line per checkpoint) make the run resumable;
``--export`` registers the network as the services run it (ONNX, :func:`train.convert.reconstruction_file`).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facecodec.crop import CHIP, CROP, face_crop
from train import checkpoints
from train.networks import FaceDecoder, FeatureToFace, to_tensor

log = logging.getLogger(__name__)
SAME_PERSON = 0.6  # dlib's documented threshold: descriptors closer than this are the same person


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


def random_degradation(images, rng: np.random.Generator):
    """One random :func:`eval.metrics.degrade`, the same for every image of the batch: sigma 0-1.5 px, size 56-112 px.

    The identity term compares dlib's descriptors of the reconstruction and of the original after the
    same degradation: what tells dlib who it is must survive losing the finest detail, so the network
    cannot carry identity in a fine texture that dlib reads and people do not (what the first network
    trained through dlib did, see the model card)."""
    from eval.metrics import degrade

    return degrade(images, rng.uniform(0, 1.5), int(rng.integers(56, images.shape[-1] + 1)))


class Identity:
    """dlib's descriptor of reconstructions pasted into a fixed 150x150 chip, differentiable."""

    def __init__(self, chip: np.ndarray):
        import torch

        from facecodec.frontend import dlib_torch

        self.net = dlib_torch.load()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.chip = torch.from_numpy(chip.astype(np.float32))
        self.o = (CHIP - CROP) // 2

    def __call__(self, y):
        """Descriptors (N, 128) of network outputs ``y`` in [-1, 1], (N, 3, 112, 112)."""
        chips = self.chip.expand(len(y), -1, -1, -1).clone()
        chips[:, self.o : self.o + CROP, self.o : self.o + CROP] = ((y + 1) * 127.5).permute(0, 2, 3, 1)
        return self.net(chips)


# -- data --------------------------------------------------------------------------------------------
def display_data(cache, out_dir: Path) -> dict[str, np.ndarray]:
    """Train-people crops, features (float and decoded, of the chip and of its mirror image), person
    names and the mean train chip; computed once and kept in ``out_dir/data.npz``."""
    path = out_dir / "data.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    import torch

    from eval.reconstruction import mean_chip
    from facecodec.frontend import dlib_torch
    from train.data import decoded_features

    rows = cache.split_rows("train")
    net = dlib_torch.load()
    flipped = np.zeros((len(rows), 128), np.float32)
    with torch.inference_mode():
        for s in tqdm(range(0, len(rows), 64), desc="mirrored features", leave=False):
            chips = np.stack([np.asarray(cache.chips[i])[:, ::-1] for i in rows[s : s + 64]])
            flipped[s : s + 64] = net(torch.from_numpy(np.ascontiguousarray(chips))).numpy()
    data = {"crops": crops_of(cache.chips, rows), "feats": cache.features[rows].astype(np.float32),
            "decoded": decoded_features(cache.features[rows]).astype(np.float32), "feats_flip": flipped,
            "decoded_flip": decoded_features(flipped).astype(np.float32),
            "people": np.array([cache.names[i].split("/")[0] for i in rows]),
            "mean_chip": mean_chip(cache, rows)}
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def split_people(people: np.ndarray, val_people: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) image indexes: ``val_people`` whole people (chosen by a hash of the name) held out."""
    names = sorted(set(people.tolist()), key=lambda n: zlib.crc32(n.encode()))
    held = set(names[:val_people])
    val = np.array([i for i, p in enumerate(people) if p in held], dtype=int)
    return np.setdiff1d(np.arange(len(people)), val), val


# -- training ----------------------------------------------------------------------------------------
def validate(net, identity: Identity | None, data: dict, val: np.ndarray) -> dict:
    """PSNR, share better than the mean face, and dlib's same-person rate on the held-out people."""
    import torch

    net.eval()
    with torch.inference_mode():
        y = torch.cat([net(torch.from_numpy(data["decoded"][val[s : s + 64]])) for s in range(0, len(val), 64)])
        rec = ((y.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
        truth = data["crops"][val].astype(np.float64)
        mean = data["crops"].mean(0)
        mse = ((rec - truth) ** 2).mean((1, 2, 3))
        mse0 = ((mean - truth) ** 2).mean((1, 2, 3))
        out = {"psnr": float(np.mean(10 * np.log10(255**2 / mse))), "mean_face_psnr": float(np.mean(10 * np.log10(255**2 / mse0))),
               "better_than_mean_face": float(np.mean(mse < mse0))}
        if identity is not None:
            f = torch.cat([identity(y[s : s + 64].clamp(-1, 1)) for s in range(0, len(y), 64)]).numpy()
            d = np.linalg.norm(f - data["feats"][val], axis=1)
            out.update({"identity_distance": float(d.mean()), "same_person": float(np.mean(d < SAME_PERSON))})
            # the same judge when both faces have lost their finest detail (sigma 1 px, through 56 px)
            from eval.metrics import degrade

            x = to_tensor(data["crops"][val])
            fb = torch.cat([identity(degrade(y[s : s + 64].clamp(-1, 1), 1.0, 56)) for s in range(0, len(y), 64)])
            tb = torch.cat([identity(degrade(x[s : s + 64], 1.0, 56)) for s in range(0, len(x), 64)])
            out["same_person_blurred"] = float(np.mean(np.linalg.norm((fb - tb).numpy(), axis=1) < SAME_PERSON))
    net.train()
    return out


def train(out_dir: Path, data: dict, arch: str, steps: int, batch: int, lr0: float, lr1: float, lam: float,
          identity_weight: float, base: int, threads: int, val_people: int, checkpoint_every: int,
          vgg_weights: Path | None = None, degraded: bool = False) -> Path:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.pt"
    feats = data["decoded"]
    net = (FaceDecoder if arch == "upconv" else FeatureToFace)(feats.shape[1], base)
    net.feat_mean.copy_(torch.from_numpy(feats.mean(0)))
    net.feat_std.copy_(torch.from_numpy(feats.std(0) + 1e-6))
    mean_face = data["crops"].astype(np.float32).mean(0) / 127.5 - 1
    net.face_bias.data.copy_(torch.from_numpy(np.arctanh(np.clip(mean_face, -0.98, 0.98))).permute(2, 0, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr0)
    perceptual = vgg_perceptual(vgg_weights) if vgg_weights else ssim_term
    identity = Identity(data["mean_chip"]) if identity_weight > 0 else None
    tr, val = split_people(data["people"], val_people)
    start, rng = checkpoints.resume(ckpt, net, opt)
    t0, sums, n = time.time(), {}, 0
    net.train()
    for step in tqdm(range(start, steps), initial=start, total=steps, desc=f"display network ({arch})"):
        lr = lr0 * (lr1 / lr0) ** (step / max(steps - 1, 1))  # exponential decay, by step (resumable)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = tr[rng.integers(0, len(tr), batch)]
        flip = rng.random(batch) < 0.5
        crops = data["crops"][idx]
        crops[flip] = crops[flip, :, ::-1]
        f_in = np.where(flip[:, None], data["decoded_flip"][idx], data["decoded"][idx])
        x = to_tensor(crops)
        y = net(torch.from_numpy(f_in))
        terms = {"mse": torch.mean((y - x) ** 2)} if arch == "upconv" else {"mae": torch.mean(torch.abs(y - x))}
        terms["structure"] = lam * perceptual(y, x)
        if identity is not None and degraded:
            seed = int(rng.integers(1 << 31))
            with torch.no_grad():
                target = identity(random_degradation(x, np.random.default_rng(seed)))
            seen = identity(random_degradation(y, np.random.default_rng(seed)))
            terms["identity"] = identity_weight * torch.mean(torch.sum((seen - target) ** 2, 1))
        elif identity is not None:
            target = torch.from_numpy(np.where(flip[:, None], data["feats_flip"][idx], data["feats"][idx]))
            terms["identity"] = identity_weight * torch.mean(torch.sum((identity(y) - target) ** 2, 1))
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n += 1
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            checkpoints.save(ckpt, net, opt, step + 1, rng, {"type": arch, "dim": int(feats.shape[1]), "base": base})
            record = {"step": step + 1, "lr": lr, **{k: v / n for k, v in sums.items()},
                      "elapsed_s": round(time.time() - t0, 1), "val": validate(net, identity, data, val)}
            with open(out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("%s", record)
            sums, n = {}, 0
    return ckpt


def export(ckpt: Path, base: int | None = None, dim: int = 128) -> str:
    """Register the network in the form the services run (ONNX, :func:`train.convert.reconstruction_file`);
    returns the model name. Enhancement payloads name their predictor by the registry tag, so older
    reconstruction models stay registered."""
    import torch

    from facecodec import zoo
    from train.convert import reconstruction_file
    from train.networks import build

    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    config = blob.get("config") or {"dim": dim, "base": base}
    net = build(config)
    net.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in blob["net"].items()})
    data, suffix, _ = reconstruction_file(net, config)
    prefix = f"recon-{config.get('type', 'dconv')}{config['base']}"
    return zoo.add(data, prefix, suffix, "reconstruction", "{name}.md", backend="dlib-resnet-128").name


def crops_of(chips: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty((len(rows), CROP, CROP, 3), np.uint8)
    for j, i in enumerate(tqdm(rows, desc="crops", leave=False)):
        out[j] = face_crop(np.asarray(chips[i]))
    return out


def main(args) -> None:
    from train.data import load

    data = display_data(load(args.cache), args.out)
    log.info("%d train images", len(data["crops"]))
    ckpt = train(args.out, data, args.arch, args.steps, args.batch, args.lr0, args.lr1, args.lam, args.identity,
                 args.base, args.threads, args.val_people, args.checkpoint_every, args.vgg_weights,
                 args.degrade)
    if args.export:
        print(export(ckpt))
