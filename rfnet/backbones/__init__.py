"""RFNet's image backbones by name. Each maps ``(B, C, H, W)`` (normalised) to ``(B, D, h, w)``.

- ``compact`` (:mod:`rfnet.backbones.compact`): the project's small residual CNN, trained from
  scratch; it has no pretrained weights.
- ``efficientnet_lite0`` .. ``efficientnet_lite4`` (:mod:`rfnet.backbones.efficientnet_lite`):
  written here; ImageNet weights for lite0 ship in the package (``builtin:efficientnet_lite0``).
- ``resnet18`` / ``resnet50`` (the paper), ``convnext_tiny`` / ``convnext_base``,
  ``clip_vit_b16``, ``dinov2_small`` / ``dinov2_base``, ``siglip_base``
  (:mod:`rfnet.backbones.hf`): transformers models.

Every backbone but ``compact`` loads pretrained weights from ``source`` (``model.backbone_source``)
whatever its number of input channels (:mod:`rfnet.backbones.stem`: how the first layer is adapted,
and why pretrained BatchNorm statistics stay frozen). Without a source the weights are random.
Inputs are normalised as each architecture was pretrained (:func:`input_normalization`).
"""

from __future__ import annotations

import json
import os

from torch import nn

from rfnet.aux import IMAGENET_MEAN, IMAGENET_STD
from rfnet.backbones import efficientnet_lite
from rfnet.backbones.compact import CompactCNN
from rfnet.backbones.hf import HF_BACKBONES, HFVisionBackbone, build_hf_backbone
from rfnet.backbones.sources import builtin_backbones, load_efficientnet_lite

EFFICIENTNET_LITE = tuple(efficientnet_lite.VARIANTS)
BACKBONES = ("compact", *EFFICIENTNET_LITE, *HF_BACKBONES)

# RGB mean / std each architecture's pretrained weights expect (inputs in [0, 1]).
_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def input_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per RGB channel the backbone ``name`` is fed with (compact: ImageNet's)."""
    if name in EFFICIENTNET_LITE:
        return efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD
    if name.startswith("clip"):
        return _CLIP
    if name.startswith("siglip"):
        return _HALF
    return IMAGENET_MEAN, IMAGENET_STD


def build_backbone(
    name: str,
    *,
    in_channels: int,
    image_size: int,
    widths: tuple[int, ...] = (32, 64, 128, 192),
    blocks: int = 1,
    source: str | None = None,
    config_dir: str | None = None,
) -> nn.Module:
    """An image backbone by name (:data:`BACKBONES`) with ``.out_channels``.

    ``source`` (directory / ``s3://`` / hub id / ``builtin:<name>``): pretrained weights.
    ``config_dir``: a saved RFNet checkpoint's ``backbone/`` folder (the architecture of the
    pretrained source it was built from, for loading the checkpoint without the source). A
    backbone built from either has frozen BatchNorm statistics.
    """
    if name == "compact":
        if source is not None:
            raise ValueError(
                f"backbone 'compact' is trained from scratch and has no pretrained weights, but "
                f"backbone_source={source!r}; leave backbone_source empty or choose a pretrained "
                f"backbone ({', '.join(BACKBONES[1:])})"
            )
        return CompactCNN(in_channels, widths, blocks)
    if name in EFFICIENTNET_LITE:
        if source is not None:
            return load_efficientnet_lite(name, source, in_channels=in_channels)
        return efficientnet_lite.EfficientNetLite(
            name, in_channels=in_channels, frozen_bn=config_dir is not None
        )
    if name in HF_BACKBONES:
        return build_hf_backbone(
            name, in_channels=in_channels, image_size=image_size, source=source, config_dir=config_dir
        )
    raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")


def save_backbone_config(backbone: nn.Module, directory: str) -> None:
    """Write into ``directory`` what ``build_backbone(..., config_dir=directory)`` needs to rebuild
    ``backbone``'s architecture without its pretrained source (a checkpoint's ``backbone/``)."""
    if isinstance(backbone, HFVisionBackbone):
        backbone.model.config.save_pretrained(directory)
    elif isinstance(backbone, efficientnet_lite.EfficientNetLite):  # the architecture is its variant
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"architecture": "efficientnet_lite", "variant": backbone.variant}, f)
    else:
        raise ValueError(f"{type(backbone).__name__} has no pretrained architecture to save")


__all__ = [
    "BACKBONES",
    "EFFICIENTNET_LITE",
    "CompactCNN",
    "HFVisionBackbone",
    "build_backbone",
    "builtin_backbones",
    "input_normalization",
    "save_backbone_config",
]
