"""RFNet itself: it learns, switched-off modalities are really gone, checkpoints round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.config import ConfigError, load_config
from rfnet.checkpoint import load_rfnet, save_rfnet
from rfnet.config import DESCRIPTOR_EXTENSIONS, RFNetConfig, TrainRFNetConfig
from rfnet.model import build_rfnet


def tiny(**overrides) -> RFNetConfig:
    return load_config(RFNetConfig, preset="tiny", overrides={"dropout": 0.0, **overrides})


def inputs(cfg: RFNetConfig, b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, cfg.image_size, cfg.image_size, generator=g)
    product = torch.rand(b, 4, cfg.product_size, cfg.product_size, generator=g)
    product[:, 3] = (product[:, 3] > 0.3).float()
    captions = [f"a {c} ceramic mug" for c in ("red", "blue", "green", "white", "black", "pink")[:b]]
    return image, product, captions


def logits(model, image, product, captions, **kw):
    model.eval()
    with torch.no_grad():
        return model(image, product, None, model.tokenize(captions), **kw)


def test_overfits_a_handful_of_samples_to_near_zero_loss():
    cfg = tiny()
    model = build_rfnet(cfg, seed=0)
    image, product, captions = inputs(cfg, b=6)
    labels = torch.arange(6)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    tokens = model.tokenize(captions)
    with torch.no_grad():  # the maps depend on the inputs only: compute them once, as the trainer does
        maps = model.aux_maps(image, product, torch.ones(6, dtype=torch.bool))
    first = None
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(image, product, None, tokens, maps=maps), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert first > 1.5  # chance level for 6 classes is ln 6 = 1.79
    assert loss.item() < 0.05
    assert (logits(model, image, product, captions).argmax(1) == labels).all()


@pytest.mark.parametrize("modality", ["product", "caption"])
def test_switched_off_input_cannot_change_the_output(modality):
    cfg_on = tiny()
    needs_product = {
        "use_product_match": False,
        "use_placement": False,
        "local_view": False,
        "use_descriptor": False,
    }
    cfg_off = tiny(**{f"use_{modality}": False, **(needs_product if modality == "product" else {})})
    image, product, captions = inputs(cfg_on)
    other_product = torch.rand_like(product)
    other_captions = ["completely different words"] * len(captions)
    changed = {"product": (image, other_product, captions), "caption": (image, product, other_captions)}[
        modality
    ]

    on = build_rfnet(cfg_on, seed=0)
    assert not torch.allclose(logits(on, image, product, captions), logits(on, *changed)), (
        "sanity: input matters when on"
    )
    off = build_rfnet(cfg_off, seed=0)
    torch.testing.assert_close(logits(off, image, product, captions), logits(off, *changed), rtol=0, atol=0)
    # Its encoder is not even built.
    assert getattr(off, f"{modality}_encoder") is None


@pytest.mark.parametrize("modality", ["depth", "saliency"])
@pytest.mark.parametrize("aux_fusion", ["channels", "tokens"])
def test_switched_off_aux_map_cannot_change_the_output(modality, aux_fusion):
    cfg_on = tiny(aux_fusion=aux_fusion)
    cfg_off = tiny(aux_fusion=aux_fusion, **{f"use_{modality}": False})
    image, product, captions = inputs(cfg_on)
    on, off = build_rfnet(cfg_on, seed=0), build_rfnet(cfg_off, seed=0)
    with torch.no_grad():
        maps_on = on.aux_maps(image, product, torch.ones(len(image), dtype=torch.bool))
        maps_off = off.aux_maps(image, product, torch.ones(len(image), dtype=torch.bool))
    assert modality in maps_on and modality not in maps_off
    # Replace the map by noise: the output moves when the modality is on, not when it is off.
    noisy_on = {**maps_on, modality: torch.rand_like(maps_on[modality])}
    assert not torch.allclose(
        logits(on, image, product, captions, maps=maps_on),
        logits(on, image, product, captions, maps=noisy_on),
    )
    noisy_off = {**maps_off, modality: torch.rand_like(maps_on[modality])}
    torch.testing.assert_close(
        logits(off, image, product, captions, maps=maps_off),
        logits(off, image, product, captions, maps=noisy_off),
        rtol=0,
        atol=0,
    )


def test_missing_product_is_treated_as_absent_whatever_its_pixels():
    cfg = tiny()
    model = build_rfnet(cfg, seed=0).eval()
    image, product, captions = inputs(cfg)
    absent = torch.zeros(len(image), dtype=torch.bool)
    tokens = model.tokenize(captions)
    with torch.no_grad():
        a = model(image, product, absent, tokens)
        b = model(image, torch.rand_like(product), absent, tokens)
        c = model(image, None, None, tokens)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-6)


def test_inputs_of_other_sizes_are_resized_and_bad_shapes_are_named():
    cfg = tiny()
    model = build_rfnet(cfg, seed=0).eval()
    image, product, captions = inputs(cfg)
    big = torch.nn.functional.interpolate(image, size=(2 * cfg.image_size, 2 * cfg.image_size))
    with torch.no_grad():
        out = model(big, product, None, model.tokenize(captions))
    assert out.shape == (len(image), 6) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"image must be \(B, 3, H, W\)"):
        model(image[:, :2], product, None, model.tokenize(captions))
    with pytest.raises(ValueError, match="product must be"):
        model(image, product[:, :3], None, model.tokenize(captions))
    with pytest.raises(ValueError, match="captions"):
        model(image, product, None, None)


def test_seeded_build_is_identical_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_rfnet(tiny(), seed=7)
    after = torch.rand(1)
    b = build_rfnet(tiny(), seed=7)
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    cfg = tiny(dropout=0.1)
    model = build_rfnet(cfg, seed=3)
    # Move the weights away from their init so the test cannot pass by re-initialising.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_rfnet(model, cfg, str(tmp_path), meta={"threshold": 0.37, "note": "round trip"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "meta.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["dim"] == cfg.dim
    loaded = load_rfnet(str(tmp_path), device="cpu")
    assert loaded.config == cfg
    assert loaded.threshold == pytest.approx(0.37)
    assert loaded.meta["labels"][0] == "available"
    image, product, captions = inputs(cfg)
    torch.testing.assert_close(
        logits(model, image, product, captions),
        logits(loaded.model, image, product, captions),
        rtol=0,
        atol=0,
    )
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_load_rejects_a_checkpoint_that_does_not_match_its_config(tmp_path):
    model = build_rfnet(tiny(), seed=0)
    save_rfnet(model, tiny(), str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["dim"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises((ValueError, RuntimeError)):
        load_rfnet(str(tmp_path), device="cpu")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_rfnet(str(tmp_path / "nope"), device="cpu")


def test_tiny_source_is_identical_in_every_load():
    a, b = load_rfnet("tiny", device="cpu"), load_rfnet("tiny", device="cpu")
    assert a.threshold == 0.5
    for va, vb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb)


def test_presets_derive_and_validate():
    small = load_config(RFNetConfig, preset="small")
    tiny_cfg = load_config(RFNetConfig, preset="tiny")
    paper = load_config(RFNetConfig, preset="paper")
    assert (paper.backbone, paper.image_size, paper.caption_encoder, paper.fusion_layers) == (
        "resnet50",
        384,
        "roberta_base",
        3,
    )
    # small: ImageNet EfficientNet-Lite0 encoders; tiny keeps the compact CNN (random, milliseconds).
    assert (small.backbone, small.backbone_source) == ("efficientnet_lite0", "builtin:efficientnet_lite0")
    assert tiny_cfg.backbone == "compact" and tiny_cfg.backbone_source is None and tiny_cfg.dim < small.dim
    train_small = load_config(TrainRFNetConfig, preset="small")
    assert train_small.model == small and train_small.optim.max_train_minutes
    with pytest.raises(ConfigError, match="needs use_product"):
        load_config(RFNetConfig, preset="small", overrides={"use_product": False})
    with pytest.raises(ConfigError, match="divisible"):
        load_config(RFNetConfig, preset="small", overrides={"fusion_heads": 3})
    # The descriptor's parts: product (46) + scene (38) + picture integrity (18) + support (30)
    # + attached matter (10) + grain (9) + continuity across the outline (15) numbers.
    assert small.descriptor_size == 46 + 38 + 18 + 30 + 10 + 9 + 15
    for part in DESCRIPTOR_EXTENSIONS:
        alone = {"use_descriptor": False, **{p: p == part for p in DESCRIPTOR_EXTENSIONS}}
        with pytest.raises(ConfigError, match=f"{part} extends the product descriptor"):
            load_config(RFNetConfig, preset="small", overrides=alone)


def test_compact_encoders_must_end_on_a_map_of_at_least_2x2():
    # The tiny preset does; its deepest maps are 2x2 (a 1x1 map leaves GroupNorm two numbers per group).
    cfg = load_config(RFNetConfig, preset="tiny")
    model = build_rfnet(cfg, pretrained=False)
    for encoder, size in (
        (model.image_encoder, cfg.global_size or cfg.image_size),
        (model.product_encoder, cfg.product_size),
        (model.local_encoder, cfg.local_size),
    ):
        channels = 4 if encoder is model.product_encoder else cfg.image_channels
        assert encoder(torch.zeros(1, channels, size, size)).shape[-1] == 2
    with pytest.raises(ConfigError, match=r"local_widths=\(8, 8, 16\) on 16 px input ends on a 1x1 map"):
        load_config(RFNetConfig, preset="tiny", overrides={"local_size": 16})
    with pytest.raises(ConfigError, match=r"product_widths.*use fewer stages or a larger product_size"):
        load_config(RFNetConfig, preset="tiny", overrides={"product_widths": [8, 8, 16, 16]})
    # Fewer stages make a small input valid again.
    load_config(RFNetConfig, preset="tiny", overrides={"local_size": 16, "local_widths": [8, 16]})


@pytest.mark.parametrize(
    "backbone", ["resnet18", "convnext_tiny", "dinov2_small", "clip_vit_b16", "siglip_base"]
)
def test_transformers_backbones_build_and_give_feature_maps(backbone):
    from rfnet.backbones import build_backbone

    net = build_backbone(backbone, in_channels=3, image_size=64)
    with torch.no_grad():
        feats = net(torch.rand(1, 3, 64, 64))
    assert feats.ndim == 4 and feats.shape[1] == net.out_channels and feats.shape[-1] >= 1


@pytest.mark.slow
def test_paper_preset_builds_and_scores_with_a_gradient():
    from rfnet.scorer import RFNetScorer

    scorer = RFNetScorer("random:paper", device="cpu")
    assert scorer.config.backbone == "resnet50" and scorer.config.image_size == 384
    image = torch.rand(1, 3, 512, 512, requires_grad=True)
    product = torch.zeros(1, 4, 512, 512)
    product[:, :, 100:400, 150:350] = 0.7
    probs = scorer.predict_proba(image, product, ["a red ceramic mug"])
    probs[:, 0].sum().backward()
    assert torch.isfinite(probs).all() and image.grad.abs().sum() > 0


def test_descriptor_standardisation_is_stored_and_the_direct_path_starts_at_zero(tmp_path):
    from rfnet.aux import DESCRIPTOR_SIZE

    cfg = tiny(descriptor_norm="data", descriptor_logits=True)
    model = build_rfnet(cfg, seed=0)
    image, product, captions = inputs(cfg)
    before = logits(model, image, product, captions)
    # The direct descriptor -> logits path is zero at init: the head alone decides at first.
    assert torch.count_nonzero(model.descriptor_logits.weight) == 0
    raw = torch.randn(50, DESCRIPTOR_SIZE, generator=torch.Generator().manual_seed(0)) * 3 + 2
    model.set_descriptor_stats(raw)
    torch.testing.assert_close(model.descriptor_mean, raw.mean(0))
    torch.testing.assert_close(model.descriptor_std, raw.std(0, unbiased=False))
    after = logits(model, image, product, captions)
    assert not torch.allclose(before, after)
    # The statistics are part of the checkpoint.
    save_rfnet(model, cfg, str(tmp_path))
    loaded = load_rfnet(str(tmp_path), device="cpu")
    torch.testing.assert_close(loaded.model.descriptor_std, model.descriptor_std, rtol=0, atol=0)
    torch.testing.assert_close(logits(loaded.model, image, product, captions), after, rtol=0, atol=0)
    # "layer" (older checkpoints) has no statistics to set.
    layer = build_rfnet(tiny(descriptor_norm="layer"), seed=0)
    layer.set_descriptor_stats(raw)
    assert not hasattr(layer, "descriptor_mean")
