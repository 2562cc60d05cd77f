"""transformers vision models as RFNet backbones: ResNet, ConvNeXt, CLIP, DINOv2 and SigLIP.

Three ways to build one (:func:`build_hf_backbone`):

- ``source`` (``backbone_source``: a directory, ``s3://`` prefix or hub id holding a
  ``save_pretrained`` model with safetensors weights): the pretrained model. For a number of input
  channels other than 3 the model is rebuilt from the pretrained config with ``num_channels`` set
  (so every module's channel count and check agree) and the pretrained weights are loaded into it,
  the first layer adapted by :func:`rfnet.backbones.stem.adapt_stem_weight`. BatchNorm statistics
  are frozen (:func:`rfnet.backbones.stem.freeze_batchnorm`).
- ``config_dir`` (the ``backbone/`` folder of a saved RFNet checkpoint): the same architecture as
  the pretrained source had, without reading the source (the checkpoint holds the weights).
- neither: the architecture's default config at RFNet's input size, random weights. Vision
  transformers are then built at the input size, so no position-embedding interpolation is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from pipelines import models as pipeline_models
from rfnet.backbones.stem import adapt_stem_weight, freeze_batchnorm
from rfnet.config import Backbone


@dataclass(frozen=True)
class Spec:
    """How to build one transformers backbone: model class name, default config, kind, first layer."""

    model: str  # transformers class name
    config: Callable[[int], object]  # image size -> default config (random init)
    kind: str  # "cnn" (feature map) or "vit" (token sequence)
    stem: str  # state-dict name of the first layer's weight (O, C, k, k)


def _specs() -> dict[str, Spec]:
    import transformers as tf

    return {
        "resnet18": Spec(
            "ResNetModel",
            lambda _: tf.ResNetConfig(
                depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic"
            ),
            "cnn",
            "embedder.embedder.convolution.weight",
        ),
        "resnet50": Spec(
            "ResNetModel", lambda _: tf.ResNetConfig(), "cnn", "embedder.embedder.convolution.weight"
        ),
        "convnext_tiny": Spec(
            "ConvNextModel", lambda _: tf.ConvNextConfig(), "cnn", "embeddings.patch_embeddings.weight"
        ),
        "convnext_base": Spec(
            "ConvNextModel",
            lambda _: tf.ConvNextConfig(depths=[3, 3, 27, 3], hidden_sizes=[128, 256, 512, 1024]),
            "cnn",
            "embeddings.patch_embeddings.weight",
        ),
        "clip_vit_b16": Spec(
            "CLIPVisionModel",
            lambda size: tf.CLIPVisionConfig(image_size=size, patch_size=16),
            "vit",
            "embeddings.patch_embedding.weight",
        ),
        "dinov2_small": Spec(
            "Dinov2Model",
            lambda size: tf.Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=size // 14 * 14),
            "vit",
            "embeddings.patch_embeddings.projection.weight",
        ),
        "dinov2_base": Spec(
            "Dinov2Model",
            lambda size: tf.Dinov2Config(image_size=size // 14 * 14),
            "vit",
            "embeddings.patch_embeddings.projection.weight",
        ),
        "siglip_base": Spec(
            "SiglipVisionModel",
            lambda size: tf.SiglipVisionConfig(image_size=size, patch_size=16),
            "vit",
            "embeddings.patch_embedding.weight",
        ),
    }


# The config's backbone names that are transformers models (every one has a Spec).
HF_BACKBONES = tuple(
    n for n in get_args(Backbone) if n != "compact" and not n.startswith("efficientnet_lite")
)


class HFVisionBackbone(nn.Module):
    """A transformers vision model as a feature-map extractor ``(B, C, H, W) -> (B, D, h, w)``."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        out_channels: int,
        kind: str,
        patch: int = 0,
        prefix_tokens: int = 0,
    ):
        super().__init__()
        self.name = name
        self.model = model
        self.out_channels = out_channels
        self.kind = kind  # "cnn" (feature map) or "vit" (token sequence)
        self.patch = patch
        self.prefix_tokens = prefix_tokens  # CLS / register tokens dropped before reshaping

    @property
    def in_channels(self) -> int:
        return int(self.model.config.num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "cnn":
            return self.model(pixel_values=x).last_hidden_state
        size = x.shape[-1] // self.patch * self.patch
        if size != x.shape[-1] or x.shape[-2] != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        kwargs = {} if self.name.startswith("dinov2") else {"interpolate_pos_encoding": True}
        tokens = self.model(pixel_values=x, **kwargs).last_hidden_state[:, self.prefix_tokens :]
        g = size // self.patch
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, g, g)


def _pretrained(cls, spec: Spec, source: str, in_channels: int) -> nn.Module:
    path, revision = pipeline_models.materialize(pipeline_models.parse_source(source))
    model = cls.from_pretrained(path, revision=revision, use_safetensors=True)
    if in_channels == 3:
        return model
    state = model.state_dict()
    if spec.stem not in state or state[spec.stem].shape[1] != 3:
        found = tuple(state[spec.stem].shape) if spec.stem in state else "absent"
        raise ValueError(
            f"backbone_source={source!r}: expected an RGB first layer {spec.stem!r} (O, 3, k, k), found {found}"
        )
    state[spec.stem] = adapt_stem_weight(state[spec.stem], in_channels)
    config = model.config
    config.num_channels = in_channels
    adapted = cls(config)
    adapted.load_state_dict(state)  # strict: every pretrained tensor lands
    return adapted


def build_hf_backbone(
    name: str,
    *,
    in_channels: int,
    image_size: int,
    source: str | None = None,
    config_dir: str | None = None,
) -> HFVisionBackbone:
    """A transformers backbone by name (:data:`HF_BACKBONES`); see the module docstring."""
    import transformers as tf

    spec = _specs()[name]
    cls = getattr(tf, spec.model)
    if source is not None:
        model = _pretrained(cls, spec, source, in_channels)
    else:
        if config_dir is not None:
            config = cls.config_class.from_pretrained(config_dir)
        else:
            config = spec.config(image_size)
        config.num_channels = in_channels
        model = cls(config)
    if source is not None or config_dir is not None:
        freeze_batchnorm(model)
    config = model.config
    if spec.kind == "cnn":
        return HFVisionBackbone(name, model, config.hidden_sizes[-1], "cnn")
    prefix = 0 if name.startswith("siglip") else 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    return HFVisionBackbone(
        name, model, config.hidden_size, "vit", patch=config.patch_size, prefix_tokens=prefix
    )
