"""The auxiliary extractors: depth and saliency maps of the generated image behind one interface
(:class:`AuxExtractor`), chosen by name with :func:`build_aux`. The methods and why they were
chosen: :mod:`rfnet.aux`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipelines import models as pipeline_models
from rfnet.aux.imageops import (
    _EPS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _check_image,
    _filter_axis,
    _srgb_to_lab,
    gaussian_blur,
    normalize_map,
    to_gray,
)


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
