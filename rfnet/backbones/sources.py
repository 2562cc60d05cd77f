"""Pretrained EfficientNet-Lite weights: where they come from and how they load.

Format (what ``python -m rfnet.backbones.convert`` writes, and what ships in the package under
``rfnet/backbones/weights/<variant>/``): a directory with

- ``model.safetensors``: the :class:`rfnet.backbones.efficientnet_lite.EfficientNetLite` state dict
  with its ImageNet classifier (parameters may be fp16; they load as fp32);
- ``config.json``: ``{"architecture": "efficientnet_lite", "variant": ..., "num_classes": 1000,
  "input_mean": [...], "input_std": [...], "source": {...}}``;
- ``README.md``: provenance and licence.

``backbone_source`` may name it as ``builtin:<variant>`` (shipped), a directory, an ``s3://``
prefix (mirrored once into the local cache) or a hub id (a repository in this format). Nothing is
unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from pipelines import models as pipeline_models
from rfnet.backbones.efficientnet_lite import VARIANTS, EfficientNetLite
from rfnet.backbones.stem import adapt_stem_weight

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ARCHITECTURE = "efficientnet_lite"
BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent / "weights"  # builtin:<name> -> BUILTIN_DIR / <name>
STEM = "stem.conv.weight"


def builtin_backbones() -> list[str]:
    """Names of the backbone weights shipped with the package (``builtin:<name>``)."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / WEIGHTS).is_file())


def weights_dir(source: str) -> str:
    """Local directory holding the weights of ``source`` (fetched first for s3:// and hub ids)."""
    if source.startswith(BUILTIN_PREFIX):
        name = source.removeprefix(BUILTIN_PREFIX)
        if name not in builtin_backbones():
            raise FileNotFoundError(
                f"backbone_source={source!r}: no built-in backbone weights {name!r}; shipped: "
                f"{builtin_backbones() or 'none'} (under {BUILTIN_DIR})"
            )
        return str(BUILTIN_DIR / name)
    parsed = pipeline_models.parse_source(source)
    if parsed.kind == "random":
        raise ValueError(
            f"backbone_source={source!r}: give a weights directory, an s3:// prefix, a hub id or 'builtin:<name>'"
        )
    if parsed.kind == "hub":
        from huggingface_hub import snapshot_download

        return snapshot_download(parsed.location, revision=parsed.revision, allow_patterns=[WEIGHTS, CONFIG])
    path, _ = pipeline_models.materialize(parsed)
    return path


def read_config(directory: str) -> dict:
    """The ``config.json`` of an EfficientNet-Lite weights directory, checked."""
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(directory, WEIGHTS)):
        raise FileNotFoundError(
            f"{directory!r} is not EfficientNet-Lite weights: it needs {WEIGHTS} and {CONFIG} "
            "(write them with `python -m rfnet.backbones.convert`)"
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("architecture") != ARCHITECTURE or config.get("variant") not in VARIANTS:
        raise ValueError(
            f"{path}: expected architecture {ARCHITECTURE!r} and a variant in {sorted(VARIANTS)}, got "
            f"architecture={config.get('architecture')!r}, variant={config.get('variant')!r}"
        )
    return config


def load_state(source: str, variant: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``(fp32 state dict with classifier, config)`` of the ``variant`` weights at ``source``."""
    directory = weights_dir(source)
    config = read_config(directory)
    if config["variant"] != variant:
        raise ValueError(
            f"backbone_source={source!r} holds {config['variant']} weights, but the backbone is {variant}; "
            f"set model.backbone={config['variant']} or give {variant} weights"
        )
    state = load_file(os.path.join(directory, WEIGHTS))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, config


def load_efficientnet_lite(
    variant: str, source: str, *, in_channels: int = 3, classifier: bool = False
) -> EfficientNetLite:
    """Pretrained EfficientNet-Lite from ``source``, its stem adapted to ``in_channels``
    (:func:`rfnet.backbones.stem.adapt_stem_weight`), BatchNorm statistics frozen; with
    ``classifier`` the ImageNet classifier too."""
    state, config = load_state(source, variant)
    num_classes = int(config.get("num_classes") or 0) if classifier else None
    model = EfficientNetLite(variant, in_channels=in_channels, num_classes=num_classes, frozen_bn=True)
    if not classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    state[STEM] = adapt_stem_weight(state[STEM], in_channels)
    model.load_state_dict(state)  # strict: every tensor of the file lands, nothing stays random
    return model
