"""Pretrained sources in the hub's format, at tiny sizes: what `backbone_source`, `caption_source` and
`depth_source` load in tests. Random weights (seeded, BatchNorm statistics set away from their
defaults so that "loaded" and "freshly initialised" differ everywhere), written by `save_pretrained`
as safetensors exactly as a hub download or a local mirror holds them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CAPTIONS = ["a red ceramic mug", "gold lipstick case", "wireless speaker", "white cleansing cream", "ps5"]


def tiny_backbone_config(name: str):
    """A tiny config of the architecture ``name`` (rfnet.backbones.hf), saved as that kind's weights."""
    import transformers as tf

    if name in ("resnet18", "resnet50"):
        layer = "basic" if name == "resnet18" else "bottleneck"
        return tf.ResNetConfig(
            embedding_size=8, hidden_sizes=[16, 16, 32, 32], depths=[1, 1, 1, 1], layer_type=layer
        )
    if name.startswith("convnext"):
        return tf.ConvNextConfig(hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1])
    vit = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    if name.startswith("dinov2"):
        return tf.Dinov2Config(image_size=56, patch_size=14, **vit)
    if name.startswith("clip"):
        return tf.CLIPVisionConfig(image_size=64, patch_size=16, **vit)
    return tf.SiglipVisionConfig(image_size=64, patch_size=16, **vit)


def _randomise_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def save_tiny_backbone(name: str, directory: Path, seed: int = 0) -> str:
    import transformers as tf

    from rfnet.backbones.hf import _specs

    torch.manual_seed(seed)
    model = getattr(tf, _specs()[name].model)(tiny_backbone_config(name))
    with torch.no_grad():
        _randomise_batchnorm(model, torch.Generator().manual_seed(seed))
    model.save_pretrained(directory)
    return str(directory)


def save_tiny_caption_encoder(directory: Path, max_length: int = 24) -> str:
    """A byte-level BPE RoBERTa tokenizer trained on a few captions and a tiny RoBERTa."""
    import transformers as tf
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CAPTIONS, vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    merges_file = bpe.save_model(str(directory))[1]
    merges = [tuple(line.split()) for line in Path(merges_file).read_text().splitlines()[1:] if line]
    tokenizer = tf.RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges)
    torch.manual_seed(1)
    config = tf.RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=max_length + 2, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    tf.RobertaModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def save_tiny_depth_network(directory: Path) -> str:
    """The Depth Anything architecture at a few thousand parameters, saved as Depth Anything weights."""
    from transformers import DepthAnythingForDepthEstimation

    from rfnet.aux.maps import _tiny_depth_anything_config

    torch.manual_seed(2)
    DepthAnythingForDepthEstimation(_tiny_depth_anything_config()).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def pretrained_sources(tmp_path_factory) -> dict[str, str]:
    """``{"resnet18": dir, "resnet50": dir, "caption": dir, "depth": dir}``, built once per session."""
    root = tmp_path_factory.mktemp("pretrained")
    return {
        "resnet18": save_tiny_backbone("resnet18", root / "resnet18", seed=3),
        "resnet50": save_tiny_backbone("resnet50", root / "resnet50", seed=4),
        "caption": save_tiny_caption_encoder(root / "caption"),
        "depth": save_tiny_depth_network(root / "depth"),
    }


@pytest.fixture(scope="session")
def save_backbone():
    """``save_backbone(name, directory, seed=0) -> directory``: a tiny pretrained source of kind ``name``."""
    return save_tiny_backbone
