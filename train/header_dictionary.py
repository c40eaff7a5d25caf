"""Learn the enhancement layer's image-header dictionary from train-people crops (facecodec.headers)."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from facecodec.crop import face_crop

CODECS = ("jpeg", "jpeg2000", "webp", "avif")


def build(chips: list[np.ndarray]) -> bytes:
    from facecodec import headers
    from facecodec.image_codecs import image_codec

    files = []
    for chip in tqdm(chips, desc="header samples"):
        crop = face_crop(chip)
        for name in CODECS:
            c = image_codec(name)
            files += [(name, c.encode(crop, q)) for q in c.qualities]
    return headers.build(files)


def register(data: bytes) -> str:
    from facecodec import headers, zoo

    return zoo.add(data, "headers", ".bin", headers.KIND, "header-dictionary.md").name


def main(args) -> None:
    from train.data import load

    cache = load(args.cache)
    rows = cache.split_rows("train")
    pick = rows[np.linspace(0, len(rows) - 1, args.samples).astype(int)]
    print(register(build([np.asarray(cache.chips[i]) for i in pick])))
