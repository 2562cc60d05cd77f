"""EfficientNet-Lite (Tan & Le 2019; the "Lite" variants of TensorFlow's model garden, 2020).

EfficientNet-B0's mobile inverted-residual network with what the Lite variants change for small
devices: ReLU6 instead of swish, no squeeze-and-excitation, and a stem (32 channels) and head
(1280 channels) that do not scale with the width coefficient. Lite0 has 4.7 M parameters and costs
0.4 GFLOP at 224 px: ImageNet features a CPU can fine-tune.

Layout (names as in the shipped weights, ``rfnet/backbones/weights/efficientnet_lite0``)::

    stem      3x3 conv stride 2 -> 32 ch, BN, ReLU6
    blocks.i  inverted residual: [expand 1x1 conv, BN, ReLU6] (not for expand ratio 1)
              -> depthwise kxk conv (stride 1 or 2), BN, ReLU6 -> project 1x1 conv, BN
              (+ input, when stride 1 and the width does not change)
    head      1x1 conv -> 1280 ch, BN, ReLU6                      -> (B, 1280, H/32, W/32)
    classifier  global mean -> linear 1280 -> 1000 (ImageNet; only with ``num_classes``)

Convolutions pad like TensorFlow's "SAME" (the weights were trained in TensorFlow): a stride-2
layer pads one pixel more at the bottom / right than at the top / left, for any input size.
BatchNorm: eps 1e-3 (TensorFlow's); frozen statistics when fine-tuning pretrained weights
(:mod:`rfnet.backbones.stem`). Not kept from training: drop-connect (stochastic depth, 0.2) and
the dropout before the classifier, which change nothing at inference.

Input: RGB normalised with :data:`INPUT_MEAN` / :data:`INPUT_STD`, TensorFlow's
``(x * 255 - 127) / 128``, i.e. about ``2x - 1`` (not the torchvision ImageNet mean/std).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rfnet.backbones.stem import FrozenBatchNorm2d

INPUT_MEAN = (127.0 / 255.0,) * 3
INPUT_STD = (128.0 / 255.0,) * 3
BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# (width coefficient, depth coefficient, training resolution in px) per variant.
VARIANTS: dict[str, tuple[float, float, int]] = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
    "efficientnet_lite3": (1.2, 1.4, 280),
    "efficientnet_lite4": (1.4, 1.8, 300),
}

# EfficientNet-B0's stages: (expand ratio, kernel, stride of the first block, output channels, blocks).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor``, never more than 10 % below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's "SAME": output side ``ceil(input / stride)``,
    the odd pixel of padding at the bottom / right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


class ConvBN(nn.Module):
    """conv -> BatchNorm -> ReLU6 (no activation after a projection)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        act: bool = True,
        frozen_bn: bool = False,
    ):
        super().__init__()
        self.conv = SameConv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False)
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.bn = norm(out_channels, eps=BN_EPS, momentum=0.01)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """Mobile inverted bottleneck (MBConv) without squeeze-and-excitation."""

    def __init__(
        self, in_channels: int, out_channels: int, expand: int, kernel: int, stride: int, frozen_bn: bool
    ):
        super().__init__()
        mid = in_channels * expand
        self.expand = ConvBN(in_channels, mid, 1, frozen_bn=frozen_bn) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid, frozen_bn=frozen_bn)
        self.project = ConvBN(mid, out_channels, 1, act=False, frozen_bn=frozen_bn)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite as a feature extractor: ``(B, in_channels, H, W)`` normalised ->
    ``(B, 1280, ceil(H / 32), ceil(W / 32))``; :meth:`classify` gives ImageNet logits when built
    with ``num_classes``. ``frozen_bn``: BatchNorm with frozen statistics (pretrained weights)."""

    def __init__(
        self,
        variant: str = "efficientnet_lite0",
        *,
        in_channels: int = 3,
        num_classes: int | None = None,
        frozen_bn: bool = False,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(VARIANTS)}"
            )
        width, depth, _ = VARIANTS[variant]
        self.variant = variant
        self.in_channels = in_channels
        self.stem = ConvBN(in_channels, STEM_CHANNELS, 3, 2, frozen_bn=frozen_bn)
        blocks: list[nn.Module] = []
        channels = STEM_CHANNELS
        for i, (expand, kernel, stride, out, repeats) in enumerate(STAGES):
            out = scale_channels(out, width)
            # Lite: the first and last stages keep their depth (as stem and head keep their width).
            n = repeats if i in (0, len(STAGES) - 1) else math.ceil(depth * repeats)
            for j in range(n):
                blocks.append(
                    InvertedResidual(channels, out, expand, kernel, stride if j == 0 else 1, frozen_bn)
                )
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(channels, HEAD_CHANNELS, 1, frozen_bn=frozen_bn)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes else None
        self.out_channels = HEAD_CHANNELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.variant} expects (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}"
            )
        return self.head(self.blocks(self.stem(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``: the feature map's spatial mean through the classifier."""
        if self.classifier is None:
            raise ValueError(f"this {self.variant} was built without a classifier (num_classes=None)")
        return self.classifier(self(x).mean(dim=(2, 3)))
