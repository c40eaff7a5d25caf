"""Train the enhancement layer's restoration network for one image codec (:mod:`facecodec.restoration`).

Data (train people only, ``--per-image`` samples per image): the crop, the prediction head's ``x_fea``
from the decoded base layer (the predictor the encoder will pair with this network), and the face as
the decoder sees it after the image codec at a random quality (uniform over ``--qualities``) in
residual or direct mode (:func:`facecodec.enhancement.code`, exactly the encoder's path; 60% residual,
about the share the encoder's choice gives on train people). The network (:class:`train.networks.Restorer`)
learns to map that face, ``x_fea``, the quality and the mode to the crop, by MSE on random 64x64
patches (offsets on a 4-pixel grid, so the stride-4 stage sees the phase it sees on whole faces) with
joint horizontal flips. People held out from training (``--val-people``) give the PSNR gain on whole
faces at every checkpoint. Resumable; ``--export`` converts to ONNX (checked against PyTorch by both
runtimes) and registers a zip with ``config.json``.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from train import checkpoints

log = logging.getLogger(__name__)
PATCH = 64
RESIDUAL_SHARE = 0.6


def _samples(job):
    from facecodec import enhancement
    from facecodec.image_codecs import image_codec

    crops, preds, qualities, modes, codec = job
    coder = image_codec(codec)
    out = np.empty_like(crops)
    for k in range(len(crops)):
        out[k] = enhancement.code(crops[k], preds[k].astype(np.int16), modes[k], coder, int(qualities[k])).face
    return out


def restoration_data(cache, out_dir: Path, codec: str, per_image: int, qualities: tuple[int, int], workers: int) -> dict:
    """Crops, predictions, people and decoded faces of the train people (kept in ``out_dir``)."""
    path = out_dir / f"data-{codec}.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    import multiprocessing as mp

    from facecodec import reconstruction, zoo
    from train.data import decoded_features
    from train.reconstruction import crops_of

    rows = cache.split_rows("train")
    predictor = reconstruction.default_name("prediction")
    crops = crops_of(cache.chips, rows)
    preds = reconstruction.load_reconstructor(predictor)(decoded_features(cache.features[rows]))
    rng = np.random.default_rng(1)
    image = np.repeat(np.arange(len(rows)), per_image)
    quality = rng.integers(qualities[0], qualities[1] + 1, len(image))
    direct = rng.random(len(image)) >= RESIDUAL_SHARE
    modes = np.where(direct, "direct", "residual")
    chunks = [slice(s, s + 256) for s in range(0, len(image), 256)]
    jobs = [(crops[image[c]], preds[image[c]], quality[c], modes[c], codec) for c in chunks]
    faces = np.empty((len(image), *crops.shape[1:]), np.uint8)
    with mp.get_context("spawn").Pool(workers) as pool:
        for c, out in zip(chunks, tqdm(pool.imap(_samples, jobs), total=len(jobs), desc=f"{codec} samples")):
            faces[c] = out
    data = {"crops": crops, "preds": preds, "people": np.array([cache.names[i].split("/")[0] for i in rows]),
            "image": image, "quality": quality, "direct": direct, "faces": faces,
            "predictor_tag": np.array(zoo.entry(predictor).tag), "predictor": np.array(predictor)}
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def planes(faces, preds, quality, direct):
    """The network's input (N, 8, H, W) float32, as :class:`facecodec.restoration.Restoration` builds it."""
    n, h, w, _ = faces.shape
    x = np.empty((n, 8, h, w), np.float32)
    x[:, :3] = faces.transpose(0, 3, 1, 2) / np.float32(255)
    x[:, 3:6] = preds.transpose(0, 3, 1, 2) / np.float32(255)
    x[:, 6] = (np.asarray(quality, np.float32) / 100)[:, None, None]
    x[:, 7] = np.asarray(direct, np.float32)[:, None, None]
    return x


def validate(net, data: dict, val: np.ndarray) -> dict:
    """Mean PSNR of the decoded faces before and after restoration, on whole faces of held-out people."""
    import torch

    from eval.metrics import psnr

    net.eval()
    before, after, by_q = [], [], {}
    with torch.inference_mode():
        for s in range(0, len(val), 64):
            k = val[s : s + 64]
            img = data["image"][k]
            x = planes(data["faces"][k], data["preds"][img], data["quality"][k], data["direct"][k])
            y = np.clip(np.rint(net(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
            for j, i in enumerate(img):
                b, a = psnr(data["faces"][k[j]], data["crops"][i]), psnr(y[j], data["crops"][i])
                before.append(b)
                after.append(a)
                by_q.setdefault(int(data["quality"][k[j]]) // 20 * 20, []).append(a - b)
    net.train()
    return {"psnr_before": float(np.mean(before)), "psnr_after": float(np.mean(after)),
            "gain_by_quality": {f"{q}-{q + 19}": round(float(np.mean(v)), 3) for q, v in sorted(by_q.items())}}


def train(out_dir: Path, data: dict, codec: str, steps: int, batch: int, lr0: float, lr1: float, width: int,
          threads: int, val_people: int, checkpoint_every: int, blocks: int = 1,
          train_qualities: tuple[int, int] = (0, 100)) -> Path:
    import torch

    from train.networks import Restorer
    from train.reconstruction import split_people

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ckpt = out_dir / f"checkpoint-{codec}.pt"
    net = Restorer(width, blocks=blocks)
    opt = torch.optim.Adam(net.parameters(), lr=lr0)
    tr_img, val_img = split_people(data["people"], val_people)
    held = np.isin(data["image"], val_img)
    lo, hi = train_qualities
    tr = np.flatnonzero(~held & (data["quality"] >= lo) & (data["quality"] <= hi))
    val = np.flatnonzero(held)[::4]
    start, rng = checkpoints.resume(ckpt, net, opt)
    size = data["crops"].shape[1]
    t0, total, n = time.time(), 0.0, 0
    for step in tqdm(range(start, steps), initial=start, total=steps, desc=f"restoration ({codec})"):
        lr = lr0 * (lr1 / lr0) ** (step / max(steps - 1, 1))
        for g in opt.param_groups:
            g["lr"] = lr
        k = tr[rng.integers(0, len(tr), batch)]
        img = data["image"][k]
        ys, xs = (rng.integers(0, (size - PATCH) // 4 + 1, (2, batch)) * 4)
        flip = rng.random(batch) < 0.5

        def take(a):
            out = np.stack([a[i, y : y + PATCH, x : x + PATCH] for i, y, x in zip(range(len(a)), ys, xs)])
            out[flip] = out[flip, :, ::-1]
            return np.ascontiguousarray(out)

        x = planes(take(data["faces"][k]), take(data["preds"][img]), data["quality"][k], data["direct"][k])
        target = torch.from_numpy(take(data["crops"][img]).transpose(0, 3, 1, 2).astype(np.float32) / 255)
        loss = torch.mean((net(torch.from_numpy(x)) - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
        n += 1
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            checkpoints.save(ckpt, net, opt, step + 1, rng, {"width": width, "blocks": blocks, "codec": codec})
            record = {"step": step + 1, "lr": lr, "mse": total / n, "psnr_patch": float(10 * np.log10(n / total)),
                      "elapsed_s": round(time.time() - t0, 1), "val": validate(net, data, val)}
            with open(out_dir / f"log-{codec}.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("%s", record)
            total, n = 0.0, 0
    return ckpt


def export(ckpt: Path, data: dict) -> str:
    """Register the network as the services run it: a zip of ONNX and ``config.json``."""
    import torch

    from facecodec import zoo
    from train.convert import _compare, _export
    from train.networks import Restorer

    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    config = blob["config"]
    net = Restorer(config["width"], blocks=config.get("blocks", 1)).eval()
    net.load_state_dict(blob["net"])
    rng = np.random.default_rng(3)
    example = rng.random((1, 8, 112, 112)).astype(np.float32)
    onnx = _export(net, (torch.from_numpy(example),), ["x"], ["y"], {"x": {0: "n"}, "y": {0: "n"}})
    diffs = _compare(onnx, net, [(example,), (rng.random((2, 8, 112, 112)).astype(np.float32),)], "restoration")
    meta = {"codec": config["codec"], "predictor_tag": int(data["predictor_tag"]), "predictor": str(data["predictor"]),
            "width": config["width"], "blocks": config.get("blocks", 1), "steps": blob["step"],
            "largest_difference_to_pytorch": diffs}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in (("restoration.onnx", onnx), ("config.json", json.dumps(meta, indent=1).encode())):
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), content, zipfile.ZIP_DEFLATED)
    return zoo.add(buf.getvalue(), f"restore-{config['codec']}", ".zip", "restoration", "restoration.md",
                   backend="dlib-resnet-128", head=config["codec"]).name


def main(args) -> None:
    from train.data import load

    data = restoration_data(load(args.cache), args.out, args.codec, args.per_image, tuple(args.qualities), args.workers)
    ckpt = train(args.out, data, args.codec, args.steps, args.batch, args.lr0, args.lr1, args.width, args.threads,
                 args.val_people, args.checkpoint_every, args.blocks, tuple(args.train_qualities))
    if args.export:
        print(export(ckpt, data))
