"""Image-quality metrics shared by every evaluation: PSNR (RGB and luma) and MS-SSIM; and the
degradation (:func:`degrade`) under which identity is judged a second time.

All images are uint8 RGB. MS-SSIM uses pytorch-msssim with a 7-pixel Gaussian window (the
default 11-pixel window needs images larger than 160 px for five scales; the 112x112 crop is not).
"""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all RGB samples (peak 255)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def psnr_luma(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of BT.601 luma."""
    ya, yb = np.asarray(a, np.float64) @ LUMA, np.asarray(b, np.float64) @ LUMA
    mse = np.mean((ya - yb) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MS-SSIM of each image pair; ``a`` and ``b`` are (N,H,W,3) or (H,W,3) uint8."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    ta = torch.from_numpy(np.asarray(a, np.float32).reshape(-1, *np.shape(a)[-3:])).permute(0, 3, 1, 2)
    tb = torch.from_numpy(np.asarray(b, np.float32).reshape(-1, *np.shape(b)[-3:])).permute(0, 3, 1, 2)
    return _ms_ssim(ta, tb, data_range=255.0, size_average=False, win_size=7).numpy()


def degrade(images, sigma: float, size: int):
    """Images (a float tensor, N x 3 x H x W, any range) after a Gaussian blur of ``sigma`` px and a
    bilinear round trip through ``size`` x ``size`` px: what is left when the finest detail is lost."""
    import torch
    import torch.nn.functional as F

    if sigma > 0.2:
        t = torch.arange(-3, 4, dtype=images.dtype)
        k = torch.exp(-(t**2) / (2 * sigma**2))
        k = k / k.sum()
        c = images.shape[1]
        images = F.pad(images, (3, 3, 3, 3), mode="replicate")
        images = F.conv2d(images, k.view(1, 1, 1, 7).repeat(c, 1, 1, 1), groups=c)
        images = F.conv2d(images, k.view(1, 1, 7, 1).repeat(c, 1, 1, 1), groups=c)
    if size < images.shape[-1]:
        full = images.shape[-2:]
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = F.interpolate(images, size=full, mode="bilinear", align_corners=False)
    return images
