"""RFNet's encoders: image backbones by name, the caption encoder, and a byte-level tokenizer.

Image backbones map ``(B, C, H, W)`` (normalised) to a feature map ``(B, D, h, w)``:

- ``compact``: the project's small residual CNN (stride-4 stem, then one stride-2 stage per
  listed width, GroupNorm so that results do not depend on the per-worker batch under DDP).
- ``resnet18`` / ``resnet50`` (the paper), ``convnext_tiny`` / ``convnext_base``,
  ``clip_vit_b16``, ``dinov2_small`` / ``dinov2_base``, ``siglip_base``: transformers models built
  from their configs (random init), or loaded from ``backbone_source`` (safetensors only). Vision
  transformers' patch tokens are reshaped to a grid; their configs are built at the RFNet input
  size so no position-embedding interpolation is needed with random weights.

Caption encoders map token ids ``(B, L)`` to ``(B, L, D)``: ``bert_tiny`` / ``bert_small`` (random
BERTs over :class:`ByteTokenizer`, no vocabulary download) and ``roberta_base`` (the paper; with
``caption_source`` its pretrained weights and tokenizer, otherwise random weights over bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipelines import models as pipeline_models


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


class ResidualBlock(nn.Module):
    """conv3x3-GN-SiLU-conv3x3-GN + identity, SiLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        nn.init.zeros_(self.norm2.weight)  # start as identity: stable from-scratch training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm1(self.conv1(x)))
        return F.silu(x + self.norm2(self.conv2(y)))


class CompactCNN(nn.Module):
    """Small residual CNN. ``(B, C, H, W)`` -> ``(B, widths[-1], H / 2**(len(widths)+1), ...)``.

    Stem: 3x3 stride-2 conv + 3x3 stride-2 conv (stride 4, keeps thin structures that a 4x4 patchify
    stem would average away), then per width: a stride-2 3x3 conv (not for the first) and ``blocks``
    residual blocks.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: int = 1):
        super().__init__()
        w0 = widths[0]
        half = max(8, w0 // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(_groups(half), half),
            nn.SiLU(),
            nn.Conv2d(half, w0, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(_groups(w0), w0),
            nn.SiLU(),
        )
        stages = []
        prev = w0
        for i, w in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [
                    nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False),
                    nn.GroupNorm(_groups(w), w),
                    nn.SiLU(),
                ]
            layers += [ResidualBlock(w) for _ in range(blocks)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.Sequential(*stages)
        self.out_channels = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


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


def _inflate_stem(model: nn.Module, in_channels: int) -> None:
    """Widen a pretrained model's first conv from 3 to ``in_channels`` inputs (extra ones start at 0)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            w = module.weight.data
            new = torch.zeros(w.shape[0], in_channels, *w.shape[2:], dtype=w.dtype)
            new[:, :3] = w
            module.weight = nn.Parameter(new)
            module.in_channels = in_channels
            return
    raise ValueError("could not find a 3-channel input convolution to widen")


def build_backbone(
    name: str,
    *,
    in_channels: int,
    image_size: int,
    widths: tuple[int, ...] = (32, 64, 128, 192),
    blocks: int = 1,
    source: str | None = None,
) -> nn.Module:
    """An image backbone by name; ``source`` (dir / s3:// / hub id) loads pretrained safetensors."""
    if name == "compact":
        if source is not None:
            raise ValueError("backbone 'compact' has no pretrained weights; leave backbone_source empty")
        return CompactCNN(in_channels, widths, blocks)
    import transformers as tf

    specs = {
        "resnet18": (
            tf.ResNetModel,
            lambda: tf.ResNetConfig(
                depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic"
            ),
            "cnn",
        ),
        "resnet50": (tf.ResNetModel, lambda: tf.ResNetConfig(), "cnn"),
        "convnext_tiny": (tf.ConvNextModel, lambda: tf.ConvNextConfig(), "cnn"),
        "convnext_base": (
            tf.ConvNextModel,
            lambda: tf.ConvNextConfig(depths=[3, 3, 27, 3], hidden_sizes=[128, 256, 512, 1024]),
            "cnn",
        ),
        "clip_vit_b16": (
            tf.CLIPVisionModel,
            lambda: tf.CLIPVisionConfig(image_size=image_size, patch_size=16),
            "vit",
        ),
        "dinov2_small": (
            tf.Dinov2Model,
            lambda: tf.Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=image_size // 14 * 14),
            "vit",
        ),
        "dinov2_base": (tf.Dinov2Model, lambda: tf.Dinov2Config(image_size=image_size // 14 * 14), "vit"),
        "siglip_base": (
            tf.SiglipVisionModel,
            lambda: tf.SiglipVisionConfig(image_size=image_size, patch_size=16),
            "vit",
        ),
    }
    if name not in specs:
        raise ValueError(f"unknown backbone {name!r}; choose one of {['compact', *specs]}")
    cls, make_config, kind = specs[name]
    if source is not None:
        path, revision = pipeline_models.materialize(pipeline_models.parse_source(source))
        model = cls.from_pretrained(path, revision=revision, use_safetensors=True)
        if in_channels != 3:
            _inflate_stem(model, in_channels)
            model.config.num_channels = in_channels
    else:
        config = make_config()
        config.num_channels = in_channels
        model = cls(config)
    config = model.config
    if kind == "cnn":
        out = config.hidden_sizes[-1]
        return HFVisionBackbone(name, model, out, "cnn")
    prefix = 0 if name.startswith("siglip") else 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    return HFVisionBackbone(
        name, model, config.hidden_size, "vit", patch=config.patch_size, prefix_tokens=prefix
    )


# ----------------------------------------------------------------------------------------------------
# Captions.


@dataclass
class CaptionBatch:
    """Tokenised captions: ``input_ids (B, L)`` long, ``attention_mask (B, L)`` long, 1 = token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device) -> CaptionBatch:
        return CaptionBatch(self.input_ids.to(device), self.attention_mask.to(device))


class ByteTokenizer:
    """UTF-8 bytes as tokens: ``[BOS] b+3 ... [EOS]`` padded with 0; any language tokenises.

    Ids: 0 pad, 1 BOS, 2 EOS, 3-258 bytes (vocabulary 259). Built in code, so random-weight caption
    encoders need no vocabulary files; captions longer than ``max_length - 2`` bytes are cut.
    """

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
    VOCAB_SIZE = 259

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, captions: list[str]) -> CaptionBatch:
        rows = []
        for text in captions:
            data = text.encode("utf-8")[: self.max_length - 2]
            rows.append([self.BOS, *(b + self.OFFSET for b in data), self.EOS])
        length = max(len(r) for r in rows) if rows else 2
        ids = torch.full((len(rows), length), self.PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return CaptionBatch(ids, mask)


class HFTokenizer:
    """A pretrained transformers tokenizer with the same call signature as :class:`ByteTokenizer`."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, captions: list[str]) -> CaptionBatch:
        enc = self.tokenizer(
            list(captions), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return CaptionBatch(enc["input_ids"], enc["attention_mask"])


def _caption_config(name: str, max_length: int, dropout: float):
    import transformers as tf

    common = {
        "vocab_size": ByteTokenizer.VOCAB_SIZE,
        "pad_token_id": ByteTokenizer.PAD,
        "bos_token_id": ByteTokenizer.BOS,
        "eos_token_id": ByteTokenizer.EOS,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
    }
    if name == "bert_tiny":
        return tf.BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=max_length, **common,
        )  # fmt: skip
    if name == "bert_small":
        return tf.BertConfig(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            max_position_embeddings=max_length, **common,
        )  # fmt: skip
    if name == "roberta_base":
        # RoBERTa-base's shape; over bytes its 50k-entry vocabulary is unused beyond id 258.
        # RoBERTa positions start after padding_idx, hence max_length + 2 positions.
        return tf.RobertaConfig(
            max_position_embeddings=max(514, max_length + 2), **{**common, "vocab_size": 50265}
        )
    raise ValueError(
        f"unknown caption_encoder {name!r}; choose one of ('bert_tiny', 'bert_small', 'roberta_base')"
    )


class CaptionEncoder(nn.Module):
    """Caption text -> token features ``(B, L, D)``, with its tokenizer (``.tokenize``).

    Without ``source``: a random-init encoder over :class:`ByteTokenizer`. With ``source``: the
    pretrained tokenizer, and the pretrained weights if ``pretrained``. ``assets_dir`` (a saved
    RFNet checkpoint's ``caption/`` folder) replaces ``source`` for the tokenizer and the model
    config when a checkpoint is loaded, so loading needs no access to the original source.
    """

    def __init__(
        self,
        name: str,
        *,
        max_length: int,
        source: str | None = None,
        pretrained: bool = True,
        assets_dir: str | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        import transformers as tf

        self.name = name
        self.uses_pretrained_tokenizer = source is not None
        cls = tf.RobertaModel if name == "roberta_base" else tf.BertModel
        if source is None:
            self.tokenizer: ByteTokenizer | HFTokenizer = ByteTokenizer(max_length)
            self.model = cls(_caption_config(name, max_length, dropout), add_pooling_layer=False)
        else:
            if assets_dir is not None:
                path, revision = assets_dir, None
            else:
                path, revision = pipeline_models.materialize(pipeline_models.parse_source(source))
            self.tokenizer = HFTokenizer(
                tf.AutoTokenizer.from_pretrained(path, revision=revision), max_length
            )
            overrides = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
            if pretrained and assets_dir is None:
                self.model = cls.from_pretrained(
                    path, revision=revision, use_safetensors=True, add_pooling_layer=False, **overrides
                )
            else:
                config = tf.AutoConfig.from_pretrained(path, revision=revision, **overrides)
                self.model = cls(config, add_pooling_layer=False)
        self.out_channels = int(self.model.config.hidden_size)

    def save_assets(self, directory: str) -> bool:
        """Write the tokenizer files and model config a checkpoint needs; False if there are none."""
        if not isinstance(self.tokenizer, HFTokenizer):
            return False
        self.tokenizer.tokenizer.save_pretrained(directory)
        self.model.config.save_pretrained(directory)
        return True

    def tokenize(self, captions: list[str]) -> CaptionBatch:
        return self.tokenizer(captions)

    def forward(self, captions: CaptionBatch) -> torch.Tensor:
        return self.model(
            input_ids=captions.input_ids, attention_mask=captions.attention_mask
        ).last_hidden_state
