"""Image primitives the auxiliary maps and the descriptors share: Gaussian blur, grey, Lab, map
normalisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EPS = 1e-6


def _check_image(image: torch.Tensor, who: str) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{who} expects image of shape (B, 3, H, W) in [0, 1], got {tuple(image.shape)}")


def normalize_map(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation of ``(B, 1, H, W)`` to [0, 1] (constant maps become 0)."""
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo + _EPS)


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of ``(B, 3, H, W)`` -> ``(B, 1, H, W)``."""
    w = image.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (image * w).sum(dim=1, keepdim=True)


def gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


def _filter_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """1-D correlation along ``dim`` (-1 or -2) with replicate padding, as a sum of shifted slices.

    Faster on CPUs than a grouped ``conv2d`` for the few-channel maps here (oneDNN handles
    single-channel depthwise convolutions poorly), identical on GPUs, differentiable everywhere.
    """
    r = kernel.numel() // 2
    n = x.shape[dim]
    pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
    xp = F.pad(x, pad, mode="replicate")
    out = kernel[0] * xp.narrow(dim, 0, n)
    for i in range(1, kernel.numel()):
        out = out + kernel[i] * xp.narrow(dim, i, n)
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` (replicate padding, kernel radius 3 sigma)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    return _filter_axis(_filter_axis(x, k, -1), k, -2)


def _srgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE Lab (D65), ``(B, 3, H, W)``; L in [0, 100]."""
    lin = torch.where(image <= 0.04045, image / 12.92, ((image.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    m = image.new_tensor(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    white = image.new_tensor([0.95047, 1.0, 1.08883]).view(1, 3, 1, 1)
    t = xyz / white
    delta = 6.0 / 29.0
    f = torch.where(t > delta**3, (t.clamp(min=_EPS)) ** (1.0 / 3.0), t / (3 * delta**2) + 4.0 / 29.0)
    lab_l = 116.0 * f[:, 1:2] - 16.0
    lab_a = 500.0 * (f[:, 0:1] - f[:, 1:2])
    lab_b = 200.0 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([lab_l, lab_a, lab_b], dim=1)


def unit_lab(image: torch.Tensor) -> torch.Tensor:
    """Lab of ``image`` (sRGB, clamped to [0, 1]) scaled to about unit range: L / 100, a / 128, b / 128.
    Every descriptor part reads it; a caller computing several parts passes it to each as ``lab``."""
    scale = torch.tensor([100.0, 128.0, 128.0], device=image.device).view(1, 3, 1, 1)
    return _srgb_to_lab(image.float().clamp(0, 1)) / scale
