"""Auxiliary maps of the generated image (depth, saliency) behind one interface, chosen by name.

Every extractor is an ``nn.Module`` mapping ``image (B, 3, H, W)`` in [0, 1] to a map
``(B, 1, H, W)`` in [0, 1] (per image min-max normalised, so only the relative layout counts). All
of them are written in torch and differentiable, so RFFT can choose to let its reward gradient flow
through them (``aux_grad``). Networks are frozen: they stay in eval mode and never receive
gradients for their own weights.

Depth (``RFNetConfig.depth``):

- ``depth_anything``: Depth Anything (Yang et al. 2024; ViT-S/14 DINOv2 + DPT head, 25M
  parameters) through ``transformers.DepthAnythingForDepthEstimation``. Random init unless
  ``depth_source`` names weights (e.g. a local mirror of ``depth-anything/Depth-Anything-V2-Small-hf``).
- ``dpt``: DPT (Ranftl et al. 2021) with a ViT-B/16 backbone, ``transformers.DPTForDepthEstimation``.
- ``tiny_depth_anything``: the Depth Anything architecture at a few thousand parameters (tests).
- ``defocus``: a classical, weight-free fallback: relative depth from defocus blur, after Zhuo & Sim
  (2011, "Defocus map estimation from a single image"): re-blur the image with a known Gaussian, the
  ratio of gradient magnitudes at edges gives the local blur scale, spread to the whole image by a
  normalised Gaussian convolution (instead of the paper's matting Laplacian, which needs a sparse
  solver). Advertising photos focus on the product, so blur grows with distance from the focal
  plane: a usable depth cue at ~0.3 ms per 128 px image on a CPU.

Saliency (``RFNetConfig.saliency``):

- ``spectral_residual`` (default; Hou & Zhang 2007, "Saliency detection: a spectral residual
  approach"): the log amplitude spectrum minus its local average marks what is unexpected in the
  image; with the phase kept, the inverse FFT highlights it. Chosen because it is training-free,
  needs no weights to ship, is differentiable (``torch.fft``), costs well under a millisecond per
  image, and responds to exactly what RFNet needs to see: whether the product stands out from the
  scene (Indistinctiveness) and whether the scene grows extra salient structure (Shape
  Hallucination).
- ``frequency_tuned`` (Achanta et al. 2009): distance of each blurred Lab pixel from the image's
  mean Lab colour. Also training-free; full-resolution, favours large uniformly coloured objects.

Also here: :func:`product_match_maps`, the explicit product/image comparison RFNet adds beyond the
paper (colour back-projection of the product into the generated image).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipelines import models as pipeline_models

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


class AuxExtractor(nn.Module):
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` in [0, 1]. Frozen; subclasses set ``name``."""

    name: str = ""
    kind: str = ""  # "depth" or "saliency"

    def train(self, mode: bool = True) -> AuxExtractor:
        # Frozen extractors stay in eval mode whatever the surrounding model does.
        return super().train(False)


# ----------------------------------------------------------------------------------------------------
# Saliency.


class SpectralResidualSaliency(AuxExtractor):
    """Hou & Zhang (2007) in torch. Runs at ``work_size`` px (the paper uses 64), blurred, resized back."""

    name = "spectral_residual"
    kind = "saliency"

    def __init__(self, work_size: int = 64, blur_sigma: float = 2.5):
        super().__init__()
        self.work_size = work_size
        self.blur_sigma = blur_sigma  # px at work_size; the paper's sigma=8 is for its own scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _check_image(image, "spectral_residual saliency")
        h, w = image.shape[-2:]
        gray = to_gray(image.float())
        small = F.interpolate(
            gray, size=(self.work_size, self.work_size), mode="bilinear", antialias=True, align_corners=False
        )
        spec = torch.fft.fft2(small)
        amp = torch.sqrt(spec.real**2 + spec.imag**2 + _EPS)
        log_amp = torch.log(amp)
        avg = F.avg_pool2d(F.pad(log_amp, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        residual = log_amp - avg
        # exp(residual + i * phase) = exp(residual) * spec / |spec|
        recon = torch.fft.ifft2(spec * (torch.exp(residual) / amp))
        sal = recon.real**2 + recon.imag**2
        sal = gaussian_blur(sal, self.blur_sigma)
        sal = F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False)
        return normalize_map(sal).to(image.dtype)


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


class FrequencyTunedSaliency(AuxExtractor):
    """Achanta et al. (2009): ``|| mean Lab - Gaussian-blurred Lab ||`` per pixel."""

    name = "frequency_tuned"
    kind = "saliency"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _check_image(image, "frequency_tuned saliency")
        lab = _srgb_to_lab(image.float())
        blurred = gaussian_blur(lab, sigma=max(0.5, image.shape[-1] / 128.0))
        mean = lab.mean(dim=(2, 3), keepdim=True)
        sal = torch.sqrt(((blurred - mean) ** 2).sum(dim=1, keepdim=True) + _EPS)
        return normalize_map(sal).to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# Depth.


class DefocusDepth(AuxExtractor):
    """Relative depth from defocus blur (after Zhuo & Sim 2011); no weights.

    1. gradient magnitude ``g`` of the grey image and ``g_b`` of the image re-blurred with ``sigma0``;
    2. at edges, the blur scale is ``sigma0 / sqrt(R**2 - 1)`` with ``R = g / g_b`` (> 1 at edges);
    3. the sparse edge estimates are spread over the image by a normalised Gaussian convolution
       weighted by edge strength; output min-max normalised (1 = most blurred = farthest from focus).
    """

    name = "defocus"
    kind = "depth"

    def __init__(self, sigma0: float = 1.0, spread: float = 0.06):
        super().__init__()
        self.sigma0 = sigma0
        self.spread = spread  # propagation Gaussian sigma as a fraction of the image side

    @staticmethod
    def _grad_mag(x: torch.Tensor) -> torch.Tensor:
        """Sobel gradient magnitude of ``(B, 1, H, W)`` (separable: smooth [1 2 1], derive [-1 0 1])."""
        smooth = x.new_tensor([1.0, 2.0, 1.0]) / 4.0
        derive = x.new_tensor([-1.0, 0.0, 1.0]) / 2.0
        gx = _filter_axis(_filter_axis(x, derive, -1), smooth, -2)
        gy = _filter_axis(_filter_axis(x, smooth, -1), derive, -2)
        return torch.sqrt(gx**2 + gy**2 + _EPS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _check_image(image, "defocus depth")
        gray = to_gray(image.float())
        g = self._grad_mag(gray)
        g_b = self._grad_mag(gaussian_blur(gray, self.sigma0))
        ratio = (g / (g_b + _EPS)).clamp(min=1.0 + 1e-3, max=50.0)
        blur = self.sigma0 / torch.sqrt(ratio**2 - 1.0)
        blur = blur.clamp(max=5.0)
        weight = g / (g.flatten(1).amax(dim=1).view(-1, 1, 1, 1) + _EPS)
        # Spread at <= 32 px: the propagation is smooth, so nothing is lost and the wide Gaussian is cheap.
        h, w = image.shape[-2:]
        factor = max(1, min(h, w) // 32)
        num, den = blur * weight, weight
        if factor > 1:
            num, den = F.avg_pool2d(num, factor), F.avg_pool2d(den, factor)
        sigma = max(1.0, self.spread * num.shape[-1])
        dense = gaussian_blur(num, sigma) / (gaussian_blur(den, sigma) + 1e-3)
        if factor > 1:
            dense = F.interpolate(dense, size=(h, w), mode="bilinear", align_corners=False)
        return normalize_map(dense).to(image.dtype)


class NetworkDepth(AuxExtractor):
    """A transformers depth network (DPT / Depth Anything): resize to ``size``, predict, resize back.

    The networks predict relative *inverse* depth; it is min-max normalised per image, so near = 1.
    """

    kind = "depth"

    def __init__(self, name: str, network: nn.Module, size: int, patch: int):
        super().__init__()
        self.name = name
        self.network = network.eval().requires_grad_(False)
        self.size = max(patch, size // patch * patch)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _check_image(image, f"{self.name} depth")
        h, w = image.shape[-2:]
        x = F.interpolate(
            image, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
        )
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        param = next(self.network.parameters())
        depth = self.network(pixel_values=x.to(param.dtype)).predicted_depth  # (B, h', w')
        depth = F.interpolate(depth.unsqueeze(1).float(), size=(h, w), mode="bilinear", align_corners=False)
        return normalize_map(depth).to(image.dtype)


def _tiny_depth_anything_config():
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=56,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
        apply_layernorm=True,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8,
        head_hidden_size=8,
        reassemble_hidden_size=16,
        patch_size=14,
    )


def _build_depth_network(
    name: str, source: str | None, config_dir: str | None = None
) -> tuple[nn.Module, int]:
    """(network, patch size). Pretrained weights from ``source`` (safetensors only); else the
    architecture of ``config_dir`` (a saved RFNet checkpoint's ``depth/`` folder: the config of the
    source it was built from) or the named default, with random weights."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        DPTConfig,
        DPTForDepthEstimation,
    )

    cls = DPTForDepthEstimation if name == "dpt" else DepthAnythingForDepthEstimation
    if source is not None:
        parsed = pipeline_models.parse_source(source)
        if parsed.kind == "random":
            raise ValueError(f"depth_source={source!r}: give a checkpoint directory, s3:// prefix or hub id")
        path, revision = pipeline_models.materialize(parsed)
        net = cls.from_pretrained(path, revision=revision, use_safetensors=True)
    elif config_dir is not None:
        net = cls(cls.config_class.from_pretrained(config_dir))
    elif name == "dpt":
        net = DPTForDepthEstimation(DPTConfig())
    elif name == "depth_anything":
        net = DepthAnythingForDepthEstimation(DepthAnythingConfig())
    else:
        net = DepthAnythingForDepthEstimation(_tiny_depth_anything_config())
    return net, int(net.config.patch_size)


# ----------------------------------------------------------------------------------------------------
# The registry.

_BUILDERS: dict[str, Callable[..., AuxExtractor]] = {
    "spectral_residual": lambda **_: SpectralResidualSaliency(),
    "frequency_tuned": lambda **_: FrequencyTunedSaliency(),
    "defocus": lambda **_: DefocusDepth(),
}
DEPTH_EXTRACTORS = ("depth_anything", "dpt", "tiny_depth_anything", "defocus")
SALIENCY_EXTRACTORS = ("spectral_residual", "frequency_tuned")


def build_aux(
    name: str,
    *,
    size: int = 252,
    source: str | None = None,
    pretrained: bool = True,
    config_dir: str | None = None,
) -> AuxExtractor:
    """An auxiliary extractor by name (``DEPTH_EXTRACTORS`` or ``SALIENCY_EXTRACTORS``).

    ``size``: px a depth network runs at; ``source``: its pretrained weights; ``pretrained=False``
    builds the architecture only (for loading an RFNet checkpoint that already holds the weights),
    from ``config_dir`` when given (the checkpoint's ``depth/`` folder).
    """
    if name in _BUILDERS:
        return _BUILDERS[name]()
    if name in ("depth_anything", "dpt", "tiny_depth_anything"):
        network, patch = _build_depth_network(name, source if pretrained else None, config_dir)
        return NetworkDepth(name, network, size, patch)
    raise ValueError(
        f"unknown auxiliary extractor {name!r}; depth: {DEPTH_EXTRACTORS}, saliency: {SALIENCY_EXTRACTORS}"
    )


# ----------------------------------------------------------------------------------------------------
# Product / image comparison.


def product_match_maps(
    image: torch.Tensor,
    product: torch.Tensor,
    has_product: torch.Tensor,
    bins: int = 4,
    work_size: int = 48,
    scale_prior: float = 0.6,
) -> torch.Tensor:
    """Where the product's colours appear in the generated image: ``(B, 2, H, W)`` in [0, 1].

    A soft colour back-projection (Swain & Ballard 1991). Pixels are softly assigned to ``bins**3``
    RGB bin centres; the product's alpha-weighted histogram ``h_p`` and the image's histogram ``h_i``
    give two maps:

    - channel 0, *likelihood*: ``sum_k w_k(x) h_p[k] / max(h_p)``: the pixel has a product colour.
      Lights up the product, and the scene too when it copies the product's colours
      (Indistinctiveness) or grows product-coloured parts (Shape Hallucination);
    - channel 1, *ratio*: ``sum_k w_k(x) min(a h_p[k] / h_i[k], 1)``: Swain & Ballard's ratio
      histogram, high only where the product's colours are no more common in the image than the
      product itself would make them (the product stands out), low when the scene repeats them.
      ``a`` is the share of the image the product is expected to cover: its alpha coverage of its
      canonical square times ``scale_prior**2`` (the square is assumed to span ``scale_prior`` of
      the image side; the generation pipeline uses 0.66-0.78).

    ``image (B, 3, H, W)`` and ``product (B, 4, P, P)`` in [0, 1]; rows with ``has_product`` False
    get zero maps. Computed at ``work_size`` px and resized back; differentiable w.r.t. ``image``.
    """
    b, _, h, w = image.shape
    size = min(work_size, h)
    img = F.interpolate(
        image.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    prod = product.float()
    if prod.shape[-1] > work_size // 2:
        # The histogram needs no detail: 32 px of product are plenty and 4x cheaper than 64.
        prod = F.interpolate(
            prod, size=(work_size // 2, work_size // 2), mode="bilinear", antialias=True, align_corners=False
        )
    centres = (torch.arange(bins, dtype=img.dtype, device=img.device) + 0.5) / bins
    grid = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), dim=-1).view(-1, 3)  # (K, 3)
    inv_two_sigma2 = 1.0 / (2.0 * (0.6 / bins) ** 2)

    def assign(rgb: torch.Tensor) -> torch.Tensor:  # (B, 3, N) -> (B, N, K) soft assignment
        # -|x - c|^2 = 2 c.x - |c|^2 - |x|^2; the |x|^2 term is constant over k and cancels in softmax.
        logits = torch.einsum("bcn,kc->bnk", rgb * (2.0 * inv_two_sigma2), grid)
        return torch.softmax(logits - (grid**2).sum(dim=1) * inv_two_sigma2, dim=-1)

    w_img = assign(img.flatten(2))  # (B, N, K)
    alpha = prod[:, 3].flatten(1)  # (B, M)
    w_prod = assign(prod[:, :3].flatten(2))  # (B, M, K)
    h_p = torch.einsum("bmk,bm->bk", w_prod, alpha) / (alpha.sum(dim=1, keepdim=True) + _EPS)  # (B, K)
    h_i = w_img.mean(dim=1)
    likelihood = torch.einsum("bnk,bk->bn", w_img, h_p / (h_p.amax(dim=1, keepdim=True) + _EPS))
    area = alpha.mean(dim=1, keepdim=True) * scale_prior**2  # (B, 1) expected image share of the product
    ratio = torch.einsum("bnk,bk->bn", w_img, (area * h_p / (h_i + _EPS)).clamp(max=1.0))
    maps = torch.stack([likelihood, ratio], dim=1).view(b, 2, size, size)
    maps = maps * has_product.to(maps.dtype).view(-1, 1, 1, 1)
    if size != h or size != w:
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
    return maps.clamp(0.0, 1.0).to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# Where is the product in the image?


def _box_theta(box: torch.Tensor, context: float) -> torch.Tensor:
    """Affine ``theta (B, 2, 3)`` for ``F.affine_grid`` sampling a square window of side ``context``
    times the box's longer side, centred on the box. ``box (B, 4)``: ``x0, y0, x1, y1`` in [0, 1]."""
    cx = (box[:, 0] + box[:, 2]) / 2
    cy = (box[:, 1] + box[:, 3]) / 2
    side = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]).clamp(min=1e-3) * context
    theta = torch.zeros(box.shape[0], 2, 3, dtype=box.dtype, device=box.device)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 2] = 2 * cy - 1
    return theta


def crop_around(x: torch.Tensor, box: torch.Tensor, size: int, context: float) -> torch.Tensor:
    """A ``size`` px square view of ``x (B, C, H, W)`` centred on ``box``, ``context`` x its longer side.

    Bilinear, zero outside the image, differentiable w.r.t. ``x``. This is RFNet's product-centred
    view: the product always appears at the same place and size, so what is under it (Space
    Mismatch), next to it (Size Mismatch) and on its outline (Shape Hallucination) sits at fixed
    positions for the encoder.
    """
    theta = _box_theta(box.to(x.dtype), context)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _pyramid(prod: torch.Tensor) -> list[torch.Tensor]:
    """``prod`` and its antialiased halvings down to 4 px: templates are sampled from the level at most
    twice their size, so small ones are area-averaged like the downscaled image they are compared with
    (point-sampling a 64 px product down to 8 px would alias labels and edges into large errors)."""
    levels = [prod]
    while levels[-1].shape[-1] // 2 >= 4:
        size = levels[-1].shape[-1] // 2
        levels.append(
            F.interpolate(levels[-1], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        )
    return levels


def _templates(pyramid: list[torch.Tensor], sizes: torch.Tensor, canvas: int) -> torch.Tensor:
    """Each row's product square resized to ``sizes[b]`` px, top-left in a ``canvas`` px frame (zeros
    elsewhere): ``(B, 4, canvas, canvas)``, for rows of different sizes at once."""
    b = sizes.shape[0]
    k = canvas / sizes.clamp(min=1.0)  # frame px per template px
    theta = torch.zeros(b, 2, 3, dtype=pyramid[0].dtype, device=pyramid[0].device)
    theta[:, 0, 0] = k
    theta[:, 1, 1] = k
    theta[:, 0, 2] = k - 1
    theta[:, 1, 2] = k - 1
    grid = F.affine_grid(theta, [b, 4, canvas, canvas], align_corners=False)
    out = None
    for level in pyramid:  # coarsest level whose side is still >= the template size
        use = sizes <= level.shape[-1]
        if out is None:
            out = F.grid_sample(level, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        elif bool(use.any()):
            sampled = F.grid_sample(level, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out = torch.where(use.view(-1, 1, 1, 1), sampled, out)
    return out


def _signal_fft(signal: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """rfft2 of ``[sum_c I_c^2, I_r, I_g, I_b, inside]`` for :func:`_correlate`."""
    return torch.fft.rfft2(torch.cat([(signal**2).sum(dim=1, keepdim=True), signal, inside], dim=1))


def _correlate(f_sig: torch.Tensor, n: int, t: torch.Tensor, valid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted squared error of template ``t (B, 4, C, C)`` (RGBA) at every top-left position
    ``(y, x) < valid`` of an ``n`` px signal given by ``f_sig`` (:func:`_signal_fft`; its ``inside``
    channel is 1 where the signal is real image): ``(error, product mass inside the frame)``, both
    ``(B, valid, valid)``.

    Pixels are weighted by ``w = alpha^2``: a partly transparent edge pixel of the template is a
    blend of the product and a background it does not know, so it counts less than the product's
    inside (with ``w = alpha`` the edges of a small product outweigh its inside and a flat region of
    similar colour can beat the true placement). ``sum w (I - T)^2 = sum w I^2 - 2 sum w T I +
    sum w T^2`` as FFT cross-correlations, over ``sum w`` inside the frame; positions with
    ``y + C <= n`` do not wrap around.
    """
    shape = (n, n)
    a, rgb = t[:, 3:4], t[:, :3]
    w = a * a
    f_ker = torch.fft.rfft2(
        torch.cat([w, w * rgb, w * (rgb**2).sum(dim=1, keepdim=True), a], dim=1), s=shape
    ).conj()
    prods = torch.stack(
        [
            f_sig[:, 0] * f_ker[:, 0],  # sum w I^2
            (f_sig[:, 1:4] * f_ker[:, 1:4]).sum(dim=1),  # sum w T I
            f_sig[:, 4] * f_ker[:, 4],  # sum w T^2 over the part inside the frame
            f_sig[:, 4] * f_ker[:, 0],  # weight inside the frame
            f_sig[:, 4] * f_ker[:, 5],  # product mass inside the frame
        ],
        dim=1,
    )
    corr = torch.fft.irfft2(prods, s=shape)[:, :, :valid, :valid]
    return (corr[:, 0] - 2 * corr[:, 1] + corr[:, 2]) / corr[:, 3].clamp(min=1e-6), corr[:, 4]


# Added to a template's colour variance before its coarse error is divided by it (RGB in [0, 1]).
# A plain product's variance is far below it, so its placements are ranked much as by the error.
COARSE_VARIANCE_FLOOR = 0.01


def _template_variance(t: torch.Tensor) -> torch.Tensor:
    """Colour variance ``(B,)`` of templates ``t (B, 4, C, C)`` under the search's ``alpha^2`` weights."""
    w = t[:, 3:4] ** 2
    mass = w.flatten(1).sum(dim=1).clamp(min=_EPS)
    mean = (w * t[:, :3]).flatten(2).sum(dim=2) / mass.view(-1, 1)
    return (w * (t[:, :3] - mean[:, :, None, None]) ** 2).flatten(1).sum(dim=1) / mass


def _coarse_search(
    img: torch.Tensor, pyramid: list[torch.Tensor], sizes: list[int], min_inside: float, candidates: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position, every size (the same for all rows): the ``candidates`` best placements per row,
    ``(B, K, 3)`` as ``(size, x, y)`` (top-left, px), and their scores ``(B, K)`` (inf where a row has
    fewer). Candidates are local minima over a 3x3 neighbourhood of top-left positions (each position
    at its best size), so they are distinct places, not one place at neighbouring offsets.

    The score is the error over the template's own colour variance plus
    :data:`COARSE_VARIANCE_FLOOR`. Shrunk to a few coarse pixels, a detailed product (a printed
    label, a console with its controller) loses its detail and fits a patch of its average colour
    better than the true placement fits it, whose error is the detail's resampling: on a background
    in the product's own colours, such patches took all the candidates. Relative to how much the
    template varies, the true placement ranks first again (on studio scenes around real product
    photos, boxes off the exhaustive search's in 22 % of Indistinctiveness images before, 5 % after;
    docs/rfnet.md)."""
    b, _, w, _ = img.shape
    canvas = max(sizes)
    # The canonical square may reach past the frame by its transparent padding (up to half its side
    # for a long product) plus the share of the product allowed outside: zeros around the image,
    # `pad` on the left/top and `pad + canvas` on the right/bottom so templates of any size fit.
    pad = math.ceil(0.6 * canvas) + 1
    padded = F.pad(img, (pad, pad + canvas, pad, pad + canvas))
    inside = F.pad(
        torch.ones(b, 1, w, w, dtype=img.dtype, device=img.device), (pad, pad + canvas, pad, pad + canvas)
    )
    valid = padded.shape[-1] - canvas + 1
    coords = torch.arange(valid, device=img.device, dtype=img.dtype) - pad
    f_sig = _signal_fft(padded, inside)
    best_err = torch.full((b, valid, valid), float("inf"), device=img.device)
    best_size = torch.zeros(b, valid, valid, device=img.device)
    for size in sizes:
        t = _templates(pyramid, torch.full((b,), float(size), device=img.device), canvas)
        err, n_in = _correlate(f_sig, padded.shape[-1], t, valid)
        total = t[:, 3].flatten(1).sum(dim=1)
        err = err.masked_fill(n_in < min_inside * total.view(-1, 1, 1), float("inf"))
        err = err / (_template_variance(t) + COARSE_VARIANCE_FLOOR).view(-1, 1, 1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_size = torch.where(better, float(size), best_size)
    lowest = -F.max_pool2d(-best_err.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    score = best_err.masked_fill(best_err > lowest, float("inf")).flatten(1)
    value, index = score.topk(min(candidates, score.shape[1]), dim=1, largest=False)
    cand = torch.stack(
        [best_size.flatten(1).gather(1, index), coords[index % valid], coords[index // valid]], dim=2
    )
    return cand, value


def _refine_search(
    img: torch.Tensor,
    pyramid: list[torch.Tensor],
    sizes: torch.Tensor,
    start: torch.Tensor,
    radius: int,
    min_inside: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sizes ``(B, K)`` and top-left positions within ``radius`` px of ``start (B, 2)`` (x, y):
    best ``(size, x, y)`` and its error. Works on a window around each row's start, not the frame."""
    b, _, w, _ = img.shape
    canvas = int(sizes.max().ceil())
    span = canvas + 2 * radius + 1  # window side: every candidate placement fits inside it
    margin = span + 1
    padded = F.pad(img, (margin, margin, margin, margin))
    inside = F.pad(
        torch.ones(b, 1, w, w, dtype=img.dtype, device=img.device), (margin, margin, margin, margin)
    )
    origin = (start.round() - radius).long()  # window top-left, image px
    offs = torch.arange(span, device=img.device)
    ys = (origin[:, 1:2] + margin + offs).clamp(0, padded.shape[-1] - 1)  # (B, span)
    xs = (origin[:, 0:1] + margin + offs).clamp(0, padded.shape[-1] - 1)
    bi = torch.arange(b, device=img.device).view(-1, 1, 1)

    def window(x: torch.Tensor) -> torch.Tensor:  # (B, C, N, N) -> (B, C, span, span)
        return x.permute(0, 2, 3, 1)[bi, ys.unsqueeze(2), xs.unsqueeze(1)].permute(0, 3, 1, 2)

    f_sig = _signal_fft(window(padded), window(inside))
    valid = 2 * radius + 1
    best_err = torch.full((b,), float("inf"), device=img.device)
    best = torch.zeros(b, 3, device=img.device)
    for j in range(sizes.shape[1]):
        size = sizes[:, j]
        t = _templates(pyramid, size, canvas)
        err, n_in = _correlate(f_sig, span, t, valid)
        total = t[:, 3].flatten(1).sum(dim=1)
        err = err.masked_fill(n_in < min_inside * total.view(-1, 1, 1), float("inf"))
        value, index = err.flatten(1).min(dim=1)
        better = value < best_err
        cand = torch.stack([size, origin[:, 0] + index % valid, origin[:, 1] + index // valid], dim=1).float()
        best_err = torch.where(better, value, best_err)
        best = torch.where(better.view(-1, 1), cand, best)
    return best, best_err


def locate_product(
    image: torch.Tensor,
    product: torch.Tensor,
    has_product: torch.Tensor,
    *,
    work_size: int = 32,
    refine_size: int = 48,
    min_scale: float = 0.2,
    num_scales: int = 10,
    refine_steps: int = 7,
    min_inside: float = 0.8,
    candidates: int = 4,
    min_template: int = 10,
    verify_size: int | None = 96,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the product in the generated image: ``(box (B, 4) in [0, 1], error (B,))``.

    The generation pipeline pastes the product back unchanged, so its pixels are in the image; RFNet
    gets it as a canonical square (position and scale thrown away). This finds the placement with
    the lowest weighted mean squared colour difference, ``sum w (I - T)^2 / sum w`` with
    ``w = alpha^2`` (expanded into FFT cross-correlations, see :func:`_correlate`), coarse to fine:

    1. at ``work_size`` px: every position, ``num_scales`` scales (the canonical square spanning
       ``min_scale`` to 1.0 of the image side, geometric steps); a scale whose template would be
       under ``min_template`` px there is searched at twice (or four times, ...) that size instead,
       since a few-pixel template fits any patch of its colour; the ``candidates`` best distinct
       places are kept, because at this size a look-alike object or a flat patch of the product's
       colour can still score better than the product itself (places are ranked by the error over
       the template's colour variance, so a small copy that has lost the product's detail does not
       take every candidate, see :func:`_coarse_search`);
    2. at ``refine_size`` px, for each candidate: ``refine_steps`` scales from one coarse step below
       to one above its size, positions within two coarse pixels of it; the lowest error wins;
    3. at ``verify_size`` px (None: skip), the winner against each candidate over 1.2 times its
       size, each at its refined size, positions within one refine pixel; the lowest error there
       wins. A plain product (a black vase, a single-colour box) shrunk to a few pixels fits
       anywhere inside itself, and at ``refine_size`` that small placement can beat the true one,
       whose outline carries the resampling error; at twice the resolution the outline is sharper
       and the small copy's shading no longer matches.

    Placements with less than ``min_inside`` of the product inside the frame are not considered, nor
    products whose canonical square is under ``min_scale`` of the image side (the production
    pipeline places them at 0.66-0.78). ``box`` is the product's alpha bounding box (x0, y0, x1,
    y1) as fractions of the image side; ``error`` the mean squared difference there (RGB in [0, 1];
    ~0 for an unchanged paste). Rows without a product get the whole image and error 1. A search,
    so not differentiable; the views built from the box (:func:`crop_around`, :func:`placement_map`)
    are differentiable in the image.
    """
    b = image.shape[0]
    dev = image.device
    prod = product.float()
    pyramid = _pyramid(prod)
    ratio = (1.0 / min_scale) ** (1.0 / max(1, num_scales - 1))
    # Each scale is searched at the smallest of work_size, 2 * work_size, ... (up to the image) at
    # which its template has min_template px: a few-pixel template fits any patch of its colour.
    by_side: dict[int, set[int]] = {}
    for i in range(num_scales):
        scale, side = min_scale * ratio**i, work_size
        while scale * side < min_template and side * 2 <= image.shape[-1]:
            side *= 2
        by_side.setdefault(side, set()).add(max(3, round(side * scale)))
    found_cand, found_err = [], []
    for side, sizes in sorted(by_side.items()):
        coarse = F.interpolate(
            image.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False
        )
        c, e = _coarse_search(coarse, pyramid, sorted(sizes), min_inside, candidates)
        found_cand.append(c * (work_size / side))  # in work_size px
        found_err.append(e)
    cand_err, pick = torch.cat(found_err, dim=1).topk(candidates, dim=1, largest=False)
    cand = torch.cat(found_cand, dim=1).gather(1, pick.unsqueeze(2).expand(-1, -1, 3))
    k = cand.shape[1]
    cand = cand.flatten(0, 1)  # (B * K, 3): row b's candidates are rows b*K .. b*K + K-1
    f = refine_size / work_size
    rel = ratio ** torch.linspace(-1.0, 1.0, refine_steps, device=dev)
    fine_sizes = (cand[:, :1] * f * rel.view(1, -1)).clamp(3, refine_size).round()
    fine = F.interpolate(
        image.float(), size=(refine_size, refine_size), mode="bilinear", antialias=True, align_corners=False
    )
    radius = max(1, math.ceil(2 * f))  # two coarse pixels
    best, best_err = _refine_search(
        fine.repeat_interleave(k, dim=0),
        [level.repeat_interleave(k, dim=0) for level in pyramid],
        fine_sizes,
        cand[:, 1:] * f,
        radius,
        min_inside,
    )
    best_err = best_err.view(b, k).masked_fill(~torch.isfinite(cand_err), float("inf"))
    rows = torch.arange(b, device=dev)
    pick = best_err.argmin(dim=1)
    best = best.view(b, k, 3)
    if verify_size is not None and k > 1:
        g = verify_size / refine_size
        sizes = best[..., 0]
        contenders = (sizes > 1.2 * sizes[rows, pick].view(-1, 1)) & torch.isfinite(best_err)
        if bool(contenders.any()):
            # Only rows with a contender, and only their contenders and winner, are scored again.
            checked = contenders.clone()
            checked[rows, pick] = contenders.any(dim=1)
            row, cand = checked.nonzero(as_tuple=True)
            large = F.interpolate(
                image[row].float(),
                size=(verify_size, verify_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            _, err = _refine_search(
                large,
                [level[row] for level in pyramid],
                (sizes[row, cand] * g).clamp(3, verify_size).round().view(-1, 1),
                best[row, cand, 1:] * g,
                max(1, math.ceil(g)),
                min_inside,
            )
            check_err = torch.full((b, k), float("inf"), device=dev)
            check_err[row, cand] = err
            lowest, verified = check_err.min(dim=1)
            pick = torch.where(torch.isfinite(lowest), verified, pick)
    best_err, best = best_err[rows, pick], best[rows, pick]
    # The canonical square at the best placement, then the product's alpha bbox inside it.
    size, x_tl, y_tl = best[:, 0], best[:, 1], best[:, 2]
    alpha = prod[:, 3]
    p = alpha.shape[-1]
    idx = torch.arange(p, device=dev, dtype=torch.float32)
    cols, rows = (alpha > 0).any(dim=1), (alpha > 0).any(dim=2)
    c0 = torch.where(cols, idx, float(p)).amin(dim=1)
    c1 = torch.where(cols, idx + 1, 0.0).amax(dim=1)
    r0 = torch.where(rows, idx, float(p)).amin(dim=1)
    r1 = torch.where(rows, idx + 1, 0.0).amax(dim=1)
    scale = size / p
    box = (
        torch.stack([x_tl + c0 * scale, y_tl + r0 * scale, x_tl + c1 * scale, y_tl + r1 * scale], dim=1)
        / refine_size
    )
    found = has_product.to(dev) & torch.isfinite(best_err)
    whole = torch.tensor([0.0, 0.0, 1.0, 1.0], device=dev).expand(b, 4)
    box = torch.where(found.view(-1, 1), box.clamp(0.0, 1.0), whole)
    error = torch.where(found, best_err, torch.ones_like(best_err))
    return box.to(image.dtype), error.to(image.dtype)


# A search error above this means the product was not found as pasted. On four sets whose images
# hold their cut-outs unchanged the median error is 0.005-0.011 (resampling and blending at the
# outline) and 0-7 % of the images are over it (37 % of one set's broken pictures, its Unsuitable
# class). Cut-outs swapped between images: median 0.09, 89 % over; a cut-out pasted at 0.1 of the
# image side, below the search's range: median 0.08.
POOR_SEARCH_ERROR = 0.05
POOR_SEARCH_WARN_SHARE = 0.25  # warn when more of a set's images than this are over it


def search_report(error: torch.Tensor, has_product: torch.Tensor) -> dict[str, float | int]:
    """How well :func:`locate_product` matched over a set: the number of images with a product, the
    number without one, the median search error among those with one and the share of them over
    :data:`POOR_SEARCH_ERROR` (``poor_share``).

    RFNet's placement channel, centred view and measurements are read at the box the search returns,
    so they mean what they say only where each image holds its product's cut-out unchanged (as the
    generation pipeline pastes it back), at 0.2-1.0 of the image side. A set whose ``products/``
    files are original photos, other products or differently processed copies shows up here as a
    high ``poor_share`` (see :func:`search_warning`).
    """
    has = has_product.detach().cpu().bool()
    err = error.detach().float().cpu()[has]
    if err.numel() == 0:
        return {"with_product": 0, "without_product": int(has.numel())}
    return {
        "with_product": int(err.numel()),
        "without_product": int(has.numel() - err.numel()),
        "median_error": round(float(err.median()), 4),
        "poor_error": POOR_SEARCH_ERROR,
        "poor_share": round(float((err > POOR_SEARCH_ERROR).float().mean()), 4),
    }


def search_warning(report: dict[str, float | int]) -> str | None:
    """The warning an operator should see for a :func:`search_report`, or None when it looks right."""
    if report["with_product"] == 0 and report.get("without_product", 0) > 0:
        return (
            f"none of the {report['without_product']} images has a product cut-out (products/<name>): "
            "RFNet compares the image with its product, and without it reads the image alone (macro F1 "
            "0.38 instead of 0.85 on the synthetic set, docs/rfnet.md); check the set's products/ folder"
        )
    share = report.get("poor_share")
    if share is None or share <= POOR_SEARCH_WARN_SHARE:
        return None
    return (
        f"the product search matched its cut-out poorly (error > {POOR_SEARCH_ERROR}) in "
        f"{100 * share:.0f}% of the {report['with_product']} images with a product (median error "
        f"{report['median_error']:.3f}; sets whose images hold their cut-outs unchanged: 0-7%). RFNet "
        "reads the product's placement and its measurements where the cut-out is found, so check that "
        "products/<name> is the cut-out pasted into image <name> (not an original photo, another "
        "product or a copy processed differently) and that products take 0.2-1.0 of the image side"
    )


def placement_map(product: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """The product's alpha drawn into a ``size`` px image at ``box``: ``(B, 1, size, size)`` in [0, 1].

    Inverse of the canonicalisation: the canonical square is centred on the box with the box's longer
    side, as :func:`rfnet.data.transforms.canonical_product` centred it.
    """
    b = product.shape[0]
    cx = (box[:, 0] + box[:, 2]) / 2
    cy = (box[:, 1] + box[:, 3]) / 2
    side = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]).clamp(min=1e-3)
    # affine_grid maps output coords (image, [-1, 1]) to input coords (canonical square, [-1, 1]).
    theta = torch.zeros(b, 2, 3, dtype=product.dtype, device=product.device)
    theta[:, 0, 0] = 1.0 / side
    theta[:, 1, 1] = 1.0 / side
    theta[:, 0, 2] = (1 - 2 * cx) / side
    theta[:, 1, 2] = (1 - 2 * cy) / side
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    return F.grid_sample(product[:, 3:4], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------------------------------
# An explicit descriptor of the product in its scene.

DESCRIPTOR_SIZE = 46


def _dilate(mask: torch.Tensor, k: int) -> torch.Tensor:
    """``k x k`` max filter of ``(B, 1, H, W)``, as a column then a row pass (the same result as one
    square window, ~6x faster at k = 17)."""
    mask = F.max_pool2d(mask, (k, 1), stride=1, padding=(k // 2, 0))
    return F.max_pool2d(mask, (1, k), stride=1, padding=(0, k // 2))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` averaged over ``mask (B, 1, H, W)`` -> ``(B, C)`` (0 where the mask is empty)."""
    return (x * mask).sum(dim=(2, 3)) / (mask.sum(dim=(2, 3)) + 1e-6)


def _sample_points(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x (B, 1, H, W)`` at fractions ``xs (B, N)``, ``ys (B, M)`` -> ``(B, M, N)``."""
    grid = torch.stack(
        [
            (2 * xs - 1).unsqueeze(1).expand(-1, ys.shape[1], -1),
            (2 * ys - 1).unsqueeze(2).expand(-1, -1, xs.shape[1]),
        ],
        dim=-1,
    )
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)[
        :, 0
    ]


def product_descriptor(
    image: torch.Tensor,
    placement: torch.Tensor,
    match: torch.Tensor,
    box: torch.Tensor,
    error: torch.Tensor | None = None,
    *,
    lab: torch.Tensor | None = None,
) -> torch.Tensor:
    """A fixed-length description of the located product in its scene: ``(B, DESCRIPTOR_SIZE)``.

    The defect classes are statements about the product relative to its scene; this measures them
    directly, so a network trained on a few thousand images does not have to discover them. From
    ``image (B, 3, S, S)`` in [0, 1], the ``placement`` mask and ``match`` maps and the ``box``
    (see :func:`locate_product`), with rings just outside the product (``ring1``, ~2 px at 128 px),
    around it (``ring2``, ~8 px) and the rest of the scene (``background``):

    - geometry (8): box x0, y0, x1, y1, width, height, product area, search error;
    - contrast (3): Lab distance between the product's mean colour and ring1 / ring2 / background
      (Indistinctiveness);
    - product colours (6): the match likelihood inside the product, in ring1 / ring2 / background,
      and the match ratio inside and in the background (Indistinctiveness, Shape Hallucination:
      product-coloured matter attached to the outline);
    - scene texture (5): gradient magnitude in the background, ring1 and product; luma and chroma
      spread of the background (Unsuitable: clutter, garbling);
    - support (16): under the product's base, at 8 depths from -0.1 to 0.6 box heights, the mean
      vertical luma gradient (is there a surface edge, and how far below?) and the luma relative
      to the background (a contact shadow?) across the box's width (Space Mismatch);
    - surroundings (8): beside the product (half a box width to 1.5 widths out, both sides), the
      gradient magnitude at 8 heights from 0.1 to 3 box heights above the base: how tall the
      neighbouring objects are in product heights (Size Mismatch).

    Differentiable w.r.t. ``image`` (the box is a constant). Rows without a product describe the
    whole frame; the model masks them like the product tokens.
    ``lab`` (here and in the other descriptor parts) is :func:`unit_lab` of ``image`` when the
    caller already has it.
    """
    b, _, s, _ = image.shape
    img = image.float()
    lab = unit_lab(img) if lab is None else lab
    luma = lab[:, :1]
    mask = (placement.float() > 0.5).float()
    k1, k2 = max(3, s // 64 * 2 + 1), max(5, s // 16 * 2 + 1)
    near = _dilate(mask, k1)
    around = _dilate(mask, k2)
    ring1, ring2, background = near - mask, around - near, 1 - around
    box = box.float()
    x0, y0, x1, y1 = box.unbind(dim=1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    err = error.float().view(b) if error is not None else torch.zeros(b, device=img.device)
    geometry = torch.stack([x0, y0, x1, y1, w, h, mask.mean(dim=(1, 2, 3)), err.clamp(max=1.0).sqrt()], dim=1)

    mean_p = _masked_mean(lab, mask)
    contrast = torch.stack(
        [(mean_p - _masked_mean(lab, m)).norm(dim=1) for m in (ring1, ring2, background)], dim=1
    )
    likelihood, ratio = match[:, :1].float(), match[:, 1:2].float()
    colours = torch.cat(
        [
            _masked_mean(likelihood, mask),
            _masked_mean(likelihood, ring1),
            _masked_mean(likelihood, ring2),
            _masked_mean(likelihood, background),
            _masked_mean(ratio, mask),
            _masked_mean(ratio, background),
        ],
        dim=1,
    )
    gx = (luma[..., :, 2:] - luma[..., :, :-2]).abs()
    gy = (luma[..., 2:, :] - luma[..., :-2, :]).abs()
    gx, gy = F.pad(gx, (1, 1, 0, 0)), F.pad(gy, (0, 0, 1, 1))
    grad = gx + gy
    bg_std = torch.sqrt(_masked_mean(lab**2, background) - _masked_mean(lab, background) ** 2 + 1e-6)
    texture = torch.cat(
        [
            _masked_mean(grad, background),
            _masked_mean(grad, ring1),
            _masked_mean(grad, mask),
            bg_std[:, :1],
            bg_std[:, 1:].mean(dim=1, keepdim=True),
        ],
        dim=1,
    )
    depths = torch.linspace(-0.1, 0.6, 8, device=img.device)
    across = torch.linspace(0.1, 0.9, 12, device=img.device)
    xs = x0.view(-1, 1) + w.view(-1, 1) * across.view(1, -1)
    ys = y1.view(-1, 1) + h.view(-1, 1) * depths.view(1, -1)
    bg_luma = _masked_mean(luma, background).view(-1, 1)
    support = torch.cat(
        [_sample_points(gy, xs, ys).mean(dim=2), _sample_points(luma, xs, ys).mean(dim=2) - bg_luma], dim=1
    )
    heights = torch.linspace(0.1, 3.0, 8, device=img.device)
    out = torch.linspace(0.5, 1.5, 6, device=img.device)
    sides = torch.cat(
        [x0.view(-1, 1) - w.view(-1, 1) * out.view(1, -1), x1.view(-1, 1) + w.view(-1, 1) * out.view(1, -1)],
        dim=1,
    )
    ys_up = y1.view(-1, 1) - h.view(-1, 1) * heights.view(1, -1)
    surroundings = _sample_points(grad, sides, ys_up).mean(dim=2)
    desc = torch.cat([geometry, contrast, colours, texture, support, surroundings], dim=1)
    assert desc.shape[1] == DESCRIPTOR_SIZE
    return desc.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# Scene measurements around the located product (an extension of the descriptor).

SCENE_DESCRIPTOR_SIZE = 38


def _max3(x: torch.Tensor) -> torch.Tensor:
    """3x3 max filter of ``(B, 1, H, W)`` as shifted maxima (much faster on CPUs than ``max_pool2d``)."""
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    h, w = x.shape[-2:]
    rows = torch.maximum(torch.maximum(p[..., :, 0:w], p[..., :, 1 : w + 1]), p[..., :, 2 : w + 2])
    return torch.maximum(torch.maximum(rows[..., 0:h, :], rows[..., 1 : h + 1, :]), rows[..., 2 : h + 2, :])


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over channels, ``(B, C, H, W)`` -> ``(B, 1, H, W)``."""
    return torch.sqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)


def _differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central two-pixel differences of ``x (B, C, H, W)`` along x and along y (zero at the border),
    ``(gx, gy)``: twice the gradient."""
    gx = F.pad(x[..., :, 2:] - x[..., :, :-2], (1, 1, 0, 0))
    gy = F.pad(x[..., 2:, :] - x[..., :-2, :], (0, 0, 1, 1))
    return gx, gy


def _grow(
    mask: torch.Tensor, passable: torch.Tensor, steps: int, pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grow ``mask (B, 1, H, H)`` geodesically through ``passable`` for ``steps`` 3x3 steps:
    ``(grown, extra, top, left, right)``, ``extra`` the grown part outside the mask and ``top`` /
    ``left`` / ``right`` its outermost row and columns at positions ``pos (H,)`` (1 / 1 / 0 when
    nothing grew)."""
    grown = mask
    for _ in range(steps):
        grown = torch.maximum(mask, _max3(grown) * passable)
    extra = (grown - mask).clamp(min=0)
    rows = extra.amax(dim=3)[:, 0] > 0
    cols = extra.amax(dim=2)[:, 0] > 0
    top = torch.where(rows, pos, torch.ones_like(pos)).amin(dim=1)
    left = torch.where(cols, pos, torch.ones_like(pos)).amin(dim=1)
    right = torch.where(cols, pos, torch.zeros_like(pos)).amax(dim=1)
    return grown, extra, top, left, right


def _components(binary: torch.Tensor) -> torch.Tensor:
    """8-connected components of a ``(B, 1, H, W)`` 0/1 map: ``(B, H*W)`` labels, 0 for background,
    else the largest flat index (1-based) in the component. Max-label propagation until nothing
    changes (at most ``H + W`` rounds); no host round-trip, so it runs where the image is."""
    h, w = binary.shape[-2:]
    index = torch.arange(1, h * w + 1, device=binary.device, dtype=torch.float32).view(1, 1, h, w)
    labels = index * binary
    for _ in range(h + w):
        grown = _max3(labels) * binary
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.long().flatten(1)


def _floor_objects(
    objects: torch.Tensor, box: torch.Tensor, horizon: torch.Tensor, area: torch.Tensor
) -> list[torch.Tensor]:
    """Sizes of the objects standing in the scene against the product's, corrected for perspective.

    ``objects`` ``(B, 1, S, S)`` marks scene pixels unlike their row; ``horizon`` ``(B,)`` is the
    estimated far end of the ground (fraction of the side), ``area`` the product's area fraction.
    On a ground plane seen from a level camera, an object's height in the image divided by how far
    its base is below the horizon is its real height over the camera's, whatever its distance; so
    ``(H / (base - horizon)) / (h / (y1 - horizon))`` is its real height in product heights.
    """
    b, _, s, _ = objects.shape
    dev = objects.device
    labels = _components(objects)
    n = s * s + 1
    grid = torch.arange(s, device=dev, dtype=torch.float32)
    rows = grid.view(s, 1).expand(s, s).reshape(1, -1).expand(b, -1)
    cols = grid.view(1, s).expand(s, s).reshape(1, -1).expand(b, -1)

    def reduce(values: torch.Tensor, how: str, start: float) -> torch.Tensor:
        out = torch.full((b, n), start, device=dev)
        return out.scatter_reduce(1, labels, values, how, include_self=True)[:, 1:]

    top, bottom = reduce(rows, "amin", float(s)), reduce(rows, "amax", -1.0)
    left, right = reduce(cols, "amin", float(s)), reduce(cols, "amax", -1.0)
    count = torch.zeros((b, n), device=dev).scatter_add(1, labels, torch.ones_like(rows))[:, 1:]
    height, width, base = (bottom - top + 1) / s, (right - left + 1) / s, (bottom + 1) / s
    y0, y1 = box.float()[:, 1], box.float()[:, 3]
    h = (y1 - y0).clamp(min=1e-3)
    horizon_ = horizon.view(-1, 1)
    # Upright things standing below the horizon, not specks, not cut by the top of the frame.
    standing = (
        (count >= 4)
        & (count >= 0.01 * area.view(-1, 1) * s * s)
        & (height >= 0.25 * width)
        & (base > horizon_ + 0.02)
        & (top > 0)
    )
    own = h / (y1 - horizon).clamp(min=0.03)
    log_real = ((height / (base - horizon_).clamp(min=0.03)) / own.view(-1, 1)).clamp(1e-3, 1e3).log()
    log_box = (height / h.view(-1, 1)).clamp(1e-3, 1e3).log()
    beside = standing & ((base - y1.view(-1, 1)).abs() < 0.15 * h.view(-1, 1))
    far = torch.full_like(log_real, 1e9)
    zero = torch.zeros_like(h)

    def extreme(values: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
        some = keep.any(dim=1)
        high = torch.where(keep, values, -far).amax(dim=1)
        low = torch.where(keep, values, far).amin(dim=1)
        return [torch.where(some, high, zero), torch.where(some, low, zero)]

    largest = torch.where(standing, count, -1.0).argmax(dim=1, keepdim=True)
    return [
        standing.any(dim=1).float(),
        *extreme(log_real, standing),
        torch.where(standing.any(dim=1), log_real.gather(1, largest)[:, 0], zero),
        standing.float().sum(dim=1).log1p(),
        beside.any(dim=1).float(),
        *extreme(log_box, beside),
        ((y1 - horizon) / h).clamp(-4, 8),
    ]


def scene_descriptor(
    image: torch.Tensor,
    placement: torch.Tensor,
    match: torch.Tensor,
    box: torch.Tensor,
    *,
    lab: torch.Tensor | None = None,
) -> torch.Tensor:
    """Measurements of the scene relative to the located product: ``(B, SCENE_DESCRIPTOR_SIZE)``.

    Each follows from a defect's definition and is computed the same way for any image (no
    learned part, nothing specific to one data source); all are invariant to a horizontal flip
    (left and right are pooled by max / min), so they can be computed once per training example.
    Inputs as for :func:`product_descriptor`.

    - outline (7): how the scene just outside the outline (~3 px) compares with the product colour
      just inside it: the share of the ring whose Lab distance is below 0.06 / 0.12, overall and
      for the most and least similar of the left, right and upper sides, and the mean distance.
      An outline that the scene continues (Shape Hallucination on one side, Indistinctiveness all
      round) has low contrast there;
    - attached product-coloured matter (8): the product mask grown geodesically through pixels of
      product colour (match likelihood above 0.4 / 0.7 of its mean inside the product): the grown area in product areas, how far it
      reaches above the top and beyond the sides in box heights / widths, and the product-coloured
      area not connected to the product (Shape Hallucination, Indistinctiveness);
    - horizontal structure (7): the row profile of long horizontal edges in the background (signed
      vertical luma gradient averaged along each row, so texture cancels): where the strongest
      line is relative to the base, in box heights, and its strength; the strongest line near the
      base, just below it and above it, relative to the strongest; luma right under the base minus
      beside it at the same height (contact shadow); the colour change across the base line
      (Space Mismatch: a product with nothing under it);
    - other objects (5): pixels unlike their row's median colour (layered scenes: wall, floor,
      table) outside the product's surroundings; the tallest such column, its 90th and 75th
      percentile, and the tallest within two box widths beside the product, in box heights; their
      area in product areas (log) (Size Mismatch: neighbouring objects out of scale);
    - edge orientation (2): share of background gradient energy within 0.2 rad of horizontal or
      vertical, and near the diagonals (Unsuitable: a tilted or warped scene);
    - standing objects (9): the same "other objects" pixels as connected components; those upright,
      not specks and standing below the horizon (the strongest long horizontal line above the base)
      are measured in real product heights by perspective (:func:`_floor_objects`): whether there is
      one, the largest and smallest ratio (log), the ratio of the biggest object, their number (log);
      whether one stands at the product's depth (base within 0.15 box heights), the largest and
      smallest of those in box heights (log); and the base's distance below the horizon in box
      heights (Size Mismatch: furniture at dolls'-house scale, tabletop things towering over it).
    """
    s = image.shape[-1]
    dev = image.device
    img = image.float().clamp(0, 1)
    lab = unit_lab(img) if lab is None else lab
    luma = lab[:, :1]
    mask = (placement.float() > 0.5).float()
    area = mask.sum(dim=(1, 2, 3)).clamp(min=1.0)
    x0, y0, x1, y1 = box.float().unbind(1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    pos = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s
    gx_pos, gy_pos = pos.view(1, 1, 1, s), pos.view(1, 1, s, 1)
    feats: list[torch.Tensor] = []

    # Outline contrast.
    outer = _dilate(mask, max(3, s // 64 * 2 + 1)) - mask
    inside_colour = gaussian_blur(lab * mask, 2.0) / (gaussian_blur(mask, 2.0) + 1e-4)
    diff = _norm(lab - inside_colour)
    dx = (gx_pos - ((x0 + x1) / 2).view(-1, 1, 1, 1)) / w.view(-1, 1, 1, 1)
    dy = (gy_pos - ((y0 + y1) / 2).view(-1, 1, 1, 1)) / h.view(-1, 1, 1, 1)
    side = (dx.abs() >= dy.abs()).float()
    sectors = [
        outer * side * (dx < 0).float(),
        outer * side * (dx >= 0).float(),
        outer * (1 - side) * (dy < 0).float(),
    ]
    for t in (0.06, 0.12):
        low = (diff < t).float()
        per_side = torch.stack([_masked_mean(low, m)[:, 0] for m in sectors], dim=1)
        feats += [_masked_mean(low, outer)[:, 0], per_side.amax(dim=1), per_side.amin(dim=1)]
    feats.append(_masked_mean(diff, outer)[:, 0])

    # Product-coloured matter attached to the product (at half resolution: cheap, wide enough).
    half = max(16, s // 2)
    mask_h = (
        F.interpolate(placement.float(), size=(half, half), mode="bilinear", align_corners=False) > 0.5
    ).float()
    like_h = F.interpolate(match[:, :1].float(), size=(half, half), mode="bilinear", align_corners=False)
    area_h = mask_h.sum(dim=(1, 2, 3)).clamp(min=1.0)
    pos_h = (torch.arange(half, device=dev, dtype=torch.float32) + 0.5) / half
    own = _masked_mean(like_h, mask_h).view(-1, 1, 1, 1)  # how product-coloured the product itself is
    for share in (0.4, 0.7):
        similar = (like_h > share * own).float()
        grown, extra, top, left, right = _grow(mask_h, similar, max(4, half // 6), pos_h)
        feats += [
            (extra.sum(dim=(1, 2, 3)) / area_h).clamp(max=20).log1p(),
            ((y0 - top) / h).clamp(-1, 2),
            torch.maximum((x0 - left) / w, (right - x1) / w).clamp(-1, 2),
            ((similar * (1 - grown)).sum(dim=(1, 2, 3)) / area_h).clamp(max=50).log1p(),
        ]

    # Horizontal structure and the base.
    background = 1 - _dilate(mask, max(5, s // 16 * 2 + 1))
    gx, gy = _differences(luma)
    coverage = background.mean(dim=3)[:, 0]
    profile = ((gy * background).sum(dim=3) / (background.sum(dim=3) + 1e-3))[:, 0].abs()
    profile = profile * (coverage > 0.2).float()
    strongest, where = profile.max(dim=1)
    feats += [((y1 - pos[where]) / h).clamp(-4, 4), strongest]
    above = profile * (pos.view(1, -1) < (y1 - 0.05 * h).view(-1, 1)).float()
    line, line_at = above.max(dim=1)
    horizon = torch.where(line > 0.01, pos[line_at], torch.zeros_like(y1))

    def band(lo: float, hi: float) -> torch.Tensor:
        sel = (pos.view(1, -1) >= (y1 + lo * h).view(-1, 1)) & (pos.view(1, -1) < (y1 + hi * h).view(-1, 1))
        return (profile * sel.float()).amax(dim=1) / (strongest + 1e-3)

    feats += [band(-0.1, 0.1), band(0.1, 0.4), band(-0.6, -0.1)]

    def region(xa: torch.Tensor, xb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        inside = (
            (gx_pos >= xa.view(-1, 1, 1, 1))
            & (gx_pos < xb.view(-1, 1, 1, 1))
            & (gy_pos >= ya.view(-1, 1, 1, 1))
            & (gy_pos < yb.view(-1, 1, 1, 1))
        )
        return inside.float() * (1 - mask)

    below = y1 + 0.12 * h
    under = region(x0, x1, y1, below)
    beside = region(x0 - 0.6 * w, x0 - 0.1 * w, y1, below) + region(x1 + 0.1 * w, x1 + 0.6 * w, y1, below)
    feats.append((_masked_mean(luma, under) - _masked_mean(luma, beside))[:, 0])
    strip_above = region(x0 - 0.6 * w, x1 + 0.6 * w, y1 - 0.12 * h, y1)
    strip_below = region(x0 - 0.6 * w, x1 + 0.6 * w, y1, below)
    feats.append((_masked_mean(lab, strip_above) - _masked_mean(lab, strip_below)).norm(dim=1))

    # Other objects: unlike their row's median colour.
    median = lab.median(dim=3, keepdim=True).values
    objects = (gaussian_blur(_norm(lab - median), 1.0) > 0.12).float() * background
    heights = objects.sum(dim=2)[:, 0] / s / h.view(-1, 1)  # (B, S) per column, in box heights
    ranked = heights.sort(dim=1, descending=True).values
    near = ((pos.view(1, -1) > (x0 - 2 * w).view(-1, 1)) & (pos.view(1, -1) < x0.view(-1, 1))) | (
        (pos.view(1, -1) > x1.view(-1, 1)) & (pos.view(1, -1) < (x1 + 2 * w).view(-1, 1))
    )
    feats += [
        ranked[:, 0].clamp(max=5),
        ranked[:, s // 10].clamp(max=5),
        ranked[:, s // 4].clamp(max=5),
        (heights * near.float()).amax(dim=1).clamp(max=5),
        (objects.sum(dim=(1, 2, 3)) / area).clamp(max=20).log1p(),
    ]

    # Orientation of background edges.
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-12) * background
    angle = torch.atan2(gy, gx).remainder(math.pi)
    axis = (angle < 0.2) | (angle > math.pi - 0.2) | ((angle - math.pi / 2).abs() < 0.2)
    diagonal = ((angle - math.pi / 4).abs() < 0.3) | ((angle - 3 * math.pi / 4).abs() < 0.3)
    total = magnitude.sum(dim=(1, 2, 3)) + 1e-3
    feats += [
        (magnitude * axis.float()).sum(dim=(1, 2, 3)) / total,
        (magnitude * diagonal.float()).sum(dim=(1, 2, 3)) / total,
    ]

    # Standing objects in real product heights.
    feats += _floor_objects(objects, box, horizon, area / (s * s))

    out = torch.stack(feats, dim=1)
    assert out.shape[1] == SCENE_DESCRIPTOR_SIZE
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# Image integrity: is the picture itself broken (an extension of the descriptor)?

INTEGRITY_DESCRIPTOR_SIZE = 18
_SLICE_SHIFTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
_CHANNEL_SHIFTS = tuple(range(1, 13))
_BLOCK_PERIODS = (4, 6, 8, 12, 16)


def _shift_gain(img: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """How much sliding each row sideways makes it continue the row above: ``(B, H - 1)``.

    For each pair of neighbouring rows, the mean colour difference as they are, minus the smallest
    difference over the sideways shifts (both signs, circular), over the image's median difference.
    A band of rows moved sideways (a glitch, a collage strip) gives a large gain at its two ends; a
    real horizontal edge (a table's front, a shelf) gives none, as no shift makes it continue."""
    a, b = img[..., 1:, :], img[..., :-1, :]
    base = (a - b).abs().mean(dim=(1, 3))
    best = base
    for k in shifts:
        for sign in (1, -1):
            best = torch.minimum(best, (a - torch.roll(b, sign * k, dims=-1)).abs().mean(dim=(1, 3)))
    scale = base.median(dim=1, keepdim=True).values + 0.01
    return (base - best) / scale


def _channel_misregistration(img: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """``(B,)``: how much better the red or blue channel's fine detail lines up with the green
    channel's when moved by a few pixels (along either axis) than where it is. Cameras, codecs and
    diffusion models keep the channels registered: a split channel is a broken picture."""
    hp = img - gaussian_blur(img, 1.5)
    hp = hp - hp.mean(dim=(2, 3), keepdim=True)
    g = hp[:, 1]
    gn = g.pow(2).mean(dim=(1, 2)).sqrt() + 1e-6

    def corr(c: torch.Tensor) -> torch.Tensor:
        return (c * g).mean(dim=(1, 2)) / (c.pow(2).mean(dim=(1, 2)).sqrt() + 1e-6) / gn

    gain = torch.zeros(img.shape[0], device=img.device, dtype=img.dtype)
    for ch in (0, 2):
        c = hp[:, ch]
        here = corr(c)
        best = here
        for k in shifts:
            for sign in (1, -1):
                for dim in (-1, -2):
                    best = torch.maximum(best, corr(torch.roll(c, sign * k, dims=dim)))
        gain = torch.maximum(gain, best - here)
    return gain


def _grid_energy(diff: torch.Tensor, periods: tuple[int, ...]) -> torch.Tensor:
    """``(B,)``: the largest share of the gradient energy ``diff`` (``(B, L)``, one value per column
    boundary) that falls on one regular grid of boundaries (any period in ``periods``, best phase),
    over the share a grid of that period would get by chance. Block codecs at low quality and
    enlarged pixels put nearly all of it on a grid."""
    total = diff.sum(dim=1) + 1e-6
    best = torch.ones_like(total)
    n = diff.shape[1]
    for p in periods:
        usable = n - n % p
        on_grid = diff[:, :usable].reshape(diff.shape[0], -1, p).sum(dim=1)  # (B, p) per phase
        best = torch.maximum(best, on_grid.amax(dim=1) / total * p)
    return best


def integrity_descriptor(image: torch.Tensor, placement: torch.Tensor) -> torch.Tensor:
    """Measurements of whether the picture itself is broken: ``(B, INTEGRITY_DESCRIPTOR_SIZE)``.

    The Unsuitable class covers images that are unusable whatever the product does: glitched,
    collaged, over-compressed, posterised, blown out, smeared or tilted. These are standard,
    generic readings of an image's integrity (no learned part; invariant to a horizontal flip, the
    block-grid readings to within the boundaries a grid period leaves over), taken outside the
    located product (``placement``, dilated) where they count pixels, since the
    pasted product is intact by construction:

    - bands moved sideways (4): :func:`_shift_gain` for rows and for columns, the largest and the
      mean of the three largest (log);
    - split colour channels (1): :func:`_channel_misregistration`;
    - block artefacts (2): :func:`_grid_energy` of the column and row boundaries' colour change;
    - flat and quantised colour (4): share of background pixels equal to both their right and
      lower neighbour (8-bit), share of the background in its 8 commonest colours (16 levels per
      channel), share of the 256 luma levels between the 2nd and 98th percentile that occur at
      all, and the number of occupied 32-level luma bins;
    - exposure (2): share of background pixels at the top (any channel >= 0.99) or the bottom
      (all channels <= 0.01) of the range;
    - noise (1): the noise level of the luma by Immerkaer's Laplacian-difference estimate (log);
    - texture (4): share of background pixels on an edge (clutter), colourfulness (Hasler and
      Suesstrunk), fine-detail energy in the top third against the bottom third (log ratio: a ground
      plane in perspective has finer texture higher up), and the strongest long vertical line
      (column mean of the horizontal luma gradient) against the mean.
    """
    s = image.shape[-1]
    img = image.float().clamp(0, 1)
    bsz = img.shape[0]
    background = 1.0 - _dilate((placement.float() > 0.5).float(), 5)  # (B, 1, S, S)
    bg_area = background.sum(dim=(1, 2, 3)) + 1.0
    feats: list[torch.Tensor] = []

    # Bands moved sideways.
    for gains in (_shift_gain(img, _SLICE_SHIFTS), _shift_gain(img.transpose(-1, -2), _SLICE_SHIFTS)):
        top = gains.topk(3, dim=1).values.clamp(min=0)
        feats += [top[:, 0].log1p(), top.mean(dim=1).log1p()]

    # Split channels.
    feats.append(_channel_misregistration(img, _CHANNEL_SHIFTS))

    # Block artefacts.
    col_diff = (img[..., :, 1:] - img[..., :, :-1]).abs().sum(dim=(1, 2))  # (B, S - 1)
    row_diff = (img[..., 1:, :] - img[..., :-1, :]).abs().sum(dim=(1, 3))
    feats += [_grid_energy(col_diff, _BLOCK_PERIODS).log(), _grid_energy(row_diff, _BLOCK_PERIODS).log()]

    # Flat and quantised colour.
    q = (img * 255.0).round()
    same = (
        (q[..., :-1, :-1] == q[..., :-1, 1:]).all(dim=1) & (q[..., :-1, :-1] == q[..., 1:, :-1]).all(dim=1)
    ).float()
    feats.append((same.unsqueeze(1) * background[..., :-1, :-1]).sum(dim=(1, 2, 3)) / bg_area)
    weight = background.flatten(1)
    weight = torch.where(weight.sum(dim=1, keepdim=True) > 16, weight, torch.ones_like(weight))
    bins = q.long().clamp(0, 255) // 16  # 16 levels per channel
    codes = (bins[:, 0] * 256 + bins[:, 1] * 16 + bins[:, 2]).flatten(1)
    colours = torch.zeros(bsz, 4096, device=img.device).scatter_add_(1, codes, weight)
    feats.append(colours.topk(8, dim=1).values.sum(dim=1) / weight.sum(dim=1))
    luma_q = to_gray(q).round().long().clamp(0, 255).flatten(1)
    hist = torch.zeros(bsz, 256, device=img.device).scatter_add_(1, luma_q, weight)
    cdf = hist.cumsum(dim=1) / weight.sum(dim=1, keepdim=True)
    levels = torch.arange(256, device=img.device).view(1, -1)
    lo = (cdf < 0.02).sum(dim=1, keepdim=True)
    hi = torch.maximum(lo, (cdf < 0.98).sum(dim=1, keepdim=True))
    in_range = ((levels >= lo) & (levels <= hi)).float()
    feats.append(((hist > 0).float() * in_range).sum(dim=1) / in_range.sum(dim=1))
    feats.append((hist.view(bsz, 8, 32).sum(dim=2) > 0).float().sum(dim=1) / 8.0)

    # Exposure.
    bright = (img >= 0.99).any(dim=1, keepdim=True).float()
    dark = (img <= 0.01).all(dim=1, keepdim=True).float()
    feats += [
        (bright * background).sum(dim=(1, 2, 3)) / bg_area,
        (dark * background).sum(dim=(1, 2, 3)) / bg_area,
    ]

    # Noise (Immerkaer 1996: the difference of two Laplacians cancels edges to first order).
    luma = to_gray(img)
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=img.device)
    response = F.conv2d(luma, kernel.view(1, 1, 3, 3)).abs()
    sigma = response.mean(dim=(1, 2, 3)) * math.sqrt(math.pi / 2) / 6.0
    feats.append((sigma * 255.0).log1p())

    # Texture: clutter, colourfulness, detail by height, long vertical lines.
    gx, gy = _differences(luma)
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-12)
    feats.append(((magnitude > 0.08).float() * background).sum(dim=(1, 2, 3)) / bg_area)
    rg = img[:, 0] - img[:, 1]
    yb = 0.5 * (img[:, 0] + img[:, 1]) - img[:, 2]
    feats.append(
        torch.sqrt(rg.var(dim=(1, 2)) + yb.var(dim=(1, 2)))
        + 0.3 * torch.sqrt(rg.mean(dim=(1, 2)) ** 2 + yb.mean(dim=(1, 2)) ** 2)
    )
    detail = (luma - gaussian_blur(luma, 1.0)).abs()
    third = s // 3
    feats.append(
        (
            (detail[..., :third, :].mean(dim=(1, 2, 3)) + 1e-4)
            / (detail[..., -third:, :].mean(dim=(1, 2, 3)) + 1e-4)
        ).log()
    )
    columns = gx.mean(dim=(1, 2)).abs()  # (B, S): signed gradient averaged down each column
    feats.append((columns.amax(dim=1) + 1e-4) / (gx.abs().mean(dim=(1, 2, 3)) + 1e-4))

    out = torch.stack(feats, dim=1)
    assert out.shape[1] == INTEGRITY_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# The surface the product stands on (an extension of the descriptor).

SUPPORT_DEPTHS = (0.04, 0.12, 0.25)  # rows below the base, in box heights
SUPPORT_TOLERANCES = (0.06, 0.15)  # Lab distance (L/100, a/128, b/128) that still counts as the same surface
SUPPORT_DESCRIPTOR_SIZE = 5 * len(SUPPORT_DEPTHS) * len(SUPPORT_TOLERANCES)


def support_descriptor(
    image: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """How far the surface under the product reaches, in product widths: ``(B, SUPPORT_DESCRIPTOR_SIZE)``.

    A product stands on something: a table, a podium, a shelf, a floor. How wide that surface is
    against the product says whether the two are at one scale (a vase wider than the plinth it
    stands on, a bottle as wide as the table is Size Mismatch) and whether the product stands on it
    at all (a base at the very end of a shelf, over its edge, or on nothing is Space Mismatch).
    For each row at ``SUPPORT_DEPTHS`` box heights below the base, the reference colour is the
    median, across the box's width, of the Lab image blurred by one pixel; from the box's centre
    the surface runs left and right while pixels stay within each of ``SUPPORT_TOLERANCES`` of it.
    Per row and tolerance (5): the run's width in box widths (log1p, at most 8), whether it reaches
    both sides of the frame, the share of the row within the tolerance anywhere, and the shorter
    and longer of the run's two arms from the centre in box widths (log1p; pooled, so the numbers
    do not change under a horizontal flip). A row below the frame reads the bottom row.
    About 0.5 ms per 128 px image at batch 16 on two CPU threads. Inputs as for :func:`product_descriptor`.
    """
    b, _, s, _ = image.shape
    dev = image.device
    lab = gaussian_blur(unit_lab(image) if lab is None else lab, 1.0)
    x0, y0, x1, y1 = box.float().unbind(1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    pos = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s
    col = torch.arange(s, device=dev).view(1, -1)
    under = (pos.view(1, -1) >= x0.view(-1, 1)) & (pos.view(1, -1) < x1.view(-1, 1))  # (B, S)
    centre = ((x0 + x1) / 2 * s).long().clamp(0, s - 1).view(-1, 1)
    feats: list[torch.Tensor] = []
    for depth in SUPPORT_DEPTHS:
        y = ((y1 + depth * h) * s).long().clamp(0, s - 1)
        row = lab.gather(2, y.view(b, 1, 1, 1).expand(b, 3, 1, s)).squeeze(2)  # (B, 3, S)
        masked = torch.where(under.unsqueeze(1), row, torch.full_like(row, float("nan")))
        reference = masked.nanmedian(dim=2).values
        reference = torch.where(torch.isfinite(reference), reference, row.mean(dim=2))
        distance = (row - reference.unsqueeze(2)).norm(dim=1)  # (B, S)
        for tolerance in SUPPORT_TOLERANCES:
            same = distance < tolerance
            right = torch.where(~same & (col > centre), col, s).amin(dim=1).float()  # first break
            left = torch.where(~same & (col < centre), col, -1).amax(dim=1).float()
            arm_left = (centre[:, 0].float() - left) / s / w
            arm_right = (right - centre[:, 0].float()) / s / w
            feats += [
                ((right - left - 1) / s / w).clamp(0, 8).log1p(),
                ((right >= s) & (left < 0)).float(),
                same.float().mean(dim=1),
                torch.minimum(arm_left, arm_right).clamp(0, 8).log1p(),
                torch.maximum(arm_left, arm_right).clamp(0, 8).log1p(),
            ]
    out = torch.stack(feats, dim=1)
    assert out.shape[1] == SUPPORT_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# Scene matter attached to the product's outline (an extension of the descriptor).

ATTACHED_TOLERANCES = (0.12, 0.2)  # Lab distance from the row's median colour that makes a pixel "matter"
ATTACHED_DESCRIPTOR_SIZE = 5 * len(ATTACHED_TOLERANCES)


def attached_descriptor(
    image: torch.Tensor, placement: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """Scene matter grown onto the product's outline above its base: ``(B, ATTACHED_DESCRIPTOR_SIZE)``.

    Shape Hallucination is the scene continuing the product's silhouette, and what it grows there
    need not share the product's colours: a second shade on a lamp, leaves or ears sprouting from a
    can, a wider copy behind it. The scene's own parts are, in a layered picture (wall, floor,
    table), pixels near their row's median colour; anything else is matter. From the product's
    mask, grow geodesically (at half resolution, up to a quarter of the frame) through matter that
    lies above the base (more than 0.04 box heights above it, so the table or podium the product
    stands on does not count), for a matter threshold of each of ``ATTACHED_TOLERANCES`` (Lab
    distance from the row's median, blurred by one pixel over the scene alone, so the product's own
    contrast does not spill onto its surroundings). Per threshold (5): the grown
    area in product areas (log1p), how far it reaches above the box's top in box heights, the
    farther and the nearer of its reach beyond the left and right sides in box widths (pooled, so
    the numbers do not change under a horizontal flip), and the share of the ring just outside the
    outline (about 4 px, above the base) that is matter. About 0.7 ms per 128 px image at batch 16 on
    two CPU threads. Inputs as for :func:`product_descriptor`.
    """
    s = image.shape[-1]
    dev = image.device
    lab = unit_lab(image) if lab is None else lab
    full = (placement.float() > 0.5).float()
    # Blurred over the scene only, so the product's own contrast does not spill onto its surroundings.
    distance = gaussian_blur(_norm(lab - lab.median(dim=3, keepdim=True).values) * (1 - full), 1.0) / (
        gaussian_blur(1 - full, 1.0) + 1e-4
    )
    x0, y0, x1, y1 = box.float().unbind(1)
    w, h = (x1 - x0).clamp(min=1e-3), (y1 - y0).clamp(min=1e-3)
    half = max(16, s // 2)
    pos = (torch.arange(half, device=dev, dtype=torch.float32) + 0.5) / half
    mask = (F.interpolate(full, size=(half, half), mode="bilinear", align_corners=False) > 0.5).float()
    distance = F.interpolate(distance, size=(half, half), mode="bilinear", align_corners=False)
    area = mask.sum(dim=(1, 2, 3)).clamp(min=1.0)
    above = (pos.view(1, 1, -1, 1) < (y1 - 0.04 * h).view(-1, 1, 1, 1)).float()
    ring = (_max3(_max3(mask)) - mask) * above
    feats: list[torch.Tensor] = []
    for tolerance in ATTACHED_TOLERANCES:
        matter = (distance > tolerance).float() * (1 - mask) * above
        _, extra, top, left, right = _grow(mask, matter, half // 4, pos)
        beyond_left, beyond_right = ((x0 - left) / w).clamp(-1, 3), ((right - x1) / w).clamp(-1, 3)
        feats += [
            (extra.sum(dim=(1, 2, 3)) / area).clamp(max=20).log1p(),
            ((y0 - top) / h).clamp(-1, 3),
            torch.maximum(beyond_left, beyond_right),
            torch.minimum(beyond_left, beyond_right),
            _masked_mean(matter, ring)[:, 0],
        ]
    out = torch.stack(feats, dim=1)
    assert out.shape[1] == ATTACHED_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# The scene's grain against the product's size (an extension of the descriptor).

GRAIN_SIGMAS = (2.0, 4.0, 8.0, 16.0)  # px at 128 px: the blurs whose residue is the scene's "detail"
GRAIN_DESCRIPTOR_SIZE = 9


def grain_descriptor(
    image: torch.Tensor, placement: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """How fine the scene's texture is, in product heights: ``(B, GRAIN_DESCRIPTOR_SIZE)``.

    Wood grain, planks, tiles, bricks, fabric weave and grass have sizes in the world, so their
    period in the picture, over the product's height, is one more reading of whether the product
    and its scene share a scale (Size Mismatch: a bottle as tall as forty floor tiles, a shoe on
    boards wider than itself). The detail is the luma (blurred by 0.7 px against noise) minus the
    same blurred by about a quarter of the box height (the nearest of ``GRAIN_SIGMAS``), so shading
    and the scene's large parts do not count; the texture's RMS spatial frequency along x and along
    y is read as ``sqrt(E[grad^2] / E[detail^2])`` with the central-difference gradient of the
    blurred luma, here in radians per box height (log): close for a sine finer than the blur (3 %
    low at a 16 px period, 10 % at 8 px), too high for a texture coarse enough that the blur takes
    part of it away. Over three regions of the scene, outside the product's outline grown by 4 px:
    the band under the base (0.03 to 0.35 box heights below it, the surface it stands on), the band
    at the product's own height (0.15 to 0.85 of it, wall or surface behind and beside it) and the
    band above its top (up to 0.6 box heights): per region the x and y frequencies and the detail's energy (log; a plain region has
    little, and its frequencies mean little). Regions are whole rows, so a horizontal flip changes
    nothing; a region with under 20 pixels reads 0. No learned part and no threshold fitted to a
    set. About 1 ms per 128 px image at batch 16 on two CPU threads. Inputs as for
    :func:`product_descriptor`.
    """
    s = image.shape[-1]
    dev = image.device
    luma = gaussian_blur((unit_lab(image) if lab is None else lab)[:, :1], 0.7)
    keep = 1 - _dilate((placement.float() > 0.5).float(), 9)
    _, y0, _, y1 = box.float().unbind(1)
    h = (y1 - y0).clamp(min=1e-3)
    sigmas = torch.tensor(GRAIN_SIGMAS, device=dev) * s / 128
    pick = ((0.25 * h * s).view(-1, 1) - sigmas.view(1, -1)).abs().argmin(1)
    detail = luma.clone()
    for k in pick.unique().tolist():
        chosen = pick == k
        detail[chosen] -= gaussian_blur(luma[chosen], float(sigmas[k]))
    gx, gy = (g / 2 for g in _differences(luma))
    rows = ((torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s).view(1, 1, s, 1)
    feats: list[torch.Tensor] = []
    for top, bottom in (
        (y1 + 0.03 * h, y1 + 0.35 * h),
        (y0 + 0.15 * h, y1 - 0.15 * h),
        (y0 - 0.6 * h, y0 - 0.05 * h),
    ):
        region = ((rows >= top.view(-1, 1, 1, 1)) & (rows < bottom.view(-1, 1, 1, 1))).float() * keep
        count = region.sum(dim=(1, 2, 3)) + 1e-3
        energy = (detail**2 * region).sum(dim=(1, 2, 3)) / count
        some = (count > 20).float()
        for grad in (gx, gy):
            frequency = ((grad**2 * region).sum(dim=(1, 2, 3)) / count / (energy + 1e-6)).sqrt() * h * s
            feats.append(some * frequency.clamp(1e-2, 1e3).log())
        feats.append(some * (energy + 1e-6).log())
    out = torch.stack(feats, dim=1)
    assert out.shape[1] == GRAIN_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)


# ----------------------------------------------------------------------------------------------------
# The product's colour continuing across its outline (an extension of the descriptor).

CONTINUITY_QUANTILES = (0.05, 0.15, 0.3)
CONTINUITY_TOLERANCES = (0.05, 0.1)
CONTINUITY_DESCRIPTOR_SIZE = 3 * (len(CONTINUITY_QUANTILES) + len(CONTINUITY_TOLERANCES))


def continuity_descriptor(
    image: torch.Tensor, placement: torch.Tensor, box: torch.Tensor, *, lab: torch.Tensor | None = None
) -> torch.Tensor:
    """Where the scene just outside the outline has the product's colour: ``(B, CONTINUITY_DESCRIPTOR_SIZE)``.

    Shape Hallucination continues the product across its outline (an extruded top or side, a knob,
    a plinth in its colour); a product that stands out from its scene does not. Per pixel 2-3 px
    outside the outline and above the base, the Lab distance to the product's own colour just inside
    (the product's Lab blurred over its mask); over that ring, its top part (above 0.15 box heights
    below the top) and the rest (the sides): the 5/15/30% quantiles of the distance and the share
    of the ring under each of ``CONTINUITY_TOLERANCES`` (5 numbers each). Invariant to a horizontal
    flip. Inputs as for :func:`product_descriptor`.
    """
    s = image.shape[-1]
    dev = image.device
    lab = unit_lab(image) if lab is None else lab
    mask = (placement.float() > 0.5).float()
    weight = gaussian_blur(mask, 2.0)
    inside = gaussian_blur(lab * mask, 2.0) / (weight + 1e-4)
    distance = _norm(lab - inside)
    ring = (_dilate(mask, 7) - _dilate(mask, 3)) * (weight > 0.02).float()
    _, y0, _, y1 = box.float().unbind(1)
    h = (y1 - y0).clamp(min=1e-3)
    rows = ((torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s).view(1, 1, s, 1)
    ring = ring * (rows < (y1 - 0.06 * h).view(-1, 1, 1, 1)).float()
    top = (rows < (y0 + 0.15 * h).view(-1, 1, 1, 1)).float()
    q = torch.tensor(CONTINUITY_QUANTILES, device=dev)
    feats: list[torch.Tensor] = []
    for region in (ring, ring * top, ring * (1 - top)):
        values = torch.where(region > 0, distance, torch.full_like(distance, float("nan"))).flatten(1)
        feats.append(torch.nan_to_num(torch.nanquantile(values, q, dim=1).T, nan=1.0))
        area = region.sum(dim=(1, 2, 3)) + 1.0
        for tolerance in CONTINUITY_TOLERANCES:
            feats.append((((distance < tolerance).float() * region).sum(dim=(1, 2, 3)) / area).unsqueeze(1))
    out = torch.cat(feats, dim=1)
    assert out.shape[1] == CONTINUITY_DESCRIPTOR_SIZE, out.shape
    return out.to(image.dtype)
