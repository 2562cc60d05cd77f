"""Every preset builds from pretrained sources (backbone, caption, depth), holds exactly their
weights (stems adapted as documented), trains a step with frozen BatchNorm statistics, and saves and
loads without the sources; `train-rfnet --preset paper` runs end to end to `evaluate` on a CPU."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pipelines.config import load_config
from rfnet.backbones.hf import _specs
from rfnet.backbones.sources import BUILTIN_DIR
from rfnet.backbones.stem import adapt_stem_weight
from rfnet.checkpoint import load_model, save_rfnet
from rfnet.config import RFNetConfig
from rfnet.model import build_rfnet

# The paper's structure at test sizes: every encoder and extractor a pretrained network.
PAPER_SMALL = {
    "image_size": 64,
    "product_size": 64,
    "depth_size": 56,
    "dim": 32,
    "fusion_heads": 2,
    "fusion_layers": 1,
    "caption_max_length": 24,
    "depth": "depth_anything",
}


def preset_config(preset: str, sources: dict[str, str]) -> RFNetConfig:
    overrides = {
        # tiny: RGB + 5 stacked maps into a (tiny, pretrained) ResNet-18.
        "tiny": {"backbone": "resnet18", "backbone_source": sources["resnet18"]},
        # small as it is: one real ImageNet EfficientNet-Lite0 per image input at 128 / 64 px.
        "small": {},
        "paper": {
            **PAPER_SMALL,
            "backbone_source": sources["resnet50"],
            "caption_source": sources["caption"],
            "depth_source": sources["depth"],
        },
    }[preset]
    return load_config(RFNetConfig, preset=preset, overrides=overrides)


def source_weights(config: RFNetConfig) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone source's tensors under the module's names, and the stem's name."""
    if config.backbone.startswith("efficientnet_lite"):
        tensors = load_file(str(BUILTIN_DIR / config.backbone / "model.safetensors"))
        return {
            k: v.float() for k, v in tensors.items() if not k.startswith("classifier.")
        }, "stem.conv.weight"
    import transformers

    spec = _specs()[config.backbone]
    return getattr(transformers, spec.model).from_pretrained(config.backbone_source).state_dict(), spec.stem


def encoders(model) -> dict[str, tuple[torch.nn.Module, int]]:
    """Every image encoder with its number of input channels."""
    c = model.config
    found = {"image": (model.image_encoder, c.image_channels), "product": (model.product_encoder, 4)}
    if model.local_encoder is not None:
        found["local"] = (model.local_encoder, c.image_channels)
    found.update({f"aux.{name}": (enc, 1) for name, enc in model.aux_encoders.items()})
    return found


def batch(config: RFNetConfig, n: int = 2):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(n, 3, config.image_size, config.image_size, generator=g)
    product = torch.zeros(n, 4, config.product_size, config.product_size)
    s = config.product_size
    product[:, :3, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = torch.rand(n, 3, s // 2, s // 2, generator=g)
    product[:, 3, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1.0
    return image, product, ["a red ceramic mug", "gold lipstick case"][:n], torch.tensor([0, 3])[:n]


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_every_preset_builds_from_pretrained_sources_and_trains_a_step(preset, pretrained_sources, tmp_path):
    sources = {k: shutil.copytree(v, tmp_path / "sources" / k) for k, v in pretrained_sources.items()}
    config = preset_config(preset, {k: str(v) for k, v in sources.items()})
    model = build_rfnet(config, seed=0)

    saved, stem = source_weights(config)
    expected_encoders = {"tiny": {"image", "product", "local"}, "small": {"image", "product", "local"}}
    assert set(encoders(model)) == expected_encoders.get(
        preset, {"image", "product", "aux.depth", "aux.saliency"}
    )
    for name, (encoder, channels) in encoders(model).items():
        net = encoder.model if hasattr(encoder, "model") else encoder
        ours = net.state_dict()
        assert set(ours) == set(saved), name
        for key, tensor in saved.items():
            want = adapt_stem_weight(tensor, channels) if key == stem else tensor
            torch.testing.assert_close(
                ours[key], want.to(ours[key].dtype), rtol=0, atol=0, msg=f"{name}: {key}"
            )
    if preset == "paper":  # the caption encoder and the depth network are the sources' too
        import transformers

        for module, cls, source in (
            (model.caption_encoder.model, transformers.RobertaModel, sources["caption"]),
            (model.depth.network, transformers.DepthAnythingForDepthEstimation, sources["depth"]),
        ):
            reference = cls.from_pretrained(source).state_dict()
            assert all(
                torch.equal(module.state_dict()[k], v)
                for k, v in reference.items()
                if k in module.state_dict()
            )
            assert set(reference) >= set(module.state_dict())

    # One training step: the encoders learn, their BatchNorm statistics and the depth network do not move.
    frozen = {
        k: v.clone() for k, v in model.state_dict().items() if "running_" in k or k.startswith("depth.")
    }
    before = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    image, product, captions, labels = batch(config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    logits = model(image, product, torch.ones(2, dtype=torch.bool), model.tokenize(captions))
    torch.nn.functional.cross_entropy(logits, labels).backward()
    optimizer.step()
    moved = {k for k, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[k])}
    assert any(k.startswith("image_encoder.") and stem.removesuffix(".weight") in k for k in moved)
    assert any(k.startswith("product_encoder.") for k in moved)
    assert frozen and all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())

    # Saved and loaded without the sources: the same network.
    save_rfnet(model, config, str(tmp_path / "checkpoint"))
    shutil.rmtree(tmp_path / "sources")
    loaded, loaded_config, _ = load_model(str(tmp_path / "checkpoint"))
    assert loaded_config == config
    model.eval()
    loaded.eval()
    with torch.no_grad():
        args = (image, product, torch.ones(2, dtype=torch.bool))
        torch.testing.assert_close(
            loaded(*args, loaded.tokenize(captions)),
            model(*args, model.tokenize(captions)),
            rtol=0,
            atol=1e-6,
        )


@pytest.mark.ray
def test_train_rfnet_paper_preset_from_pretrained_sources_to_evaluate(
    ray_cluster, pretrained_sources, tmp_path, capsys
):
    """The paper preset's structure at 64 px on a CPU: pretrained ResNet-50-kind encoders, RoBERTa
    captions and Depth Anything, through the CLI, then evaluated."""
    from jobs.cli import main
    from rfnet.data.scenes import make_set

    data = make_set("synthetic", str(tmp_path / "set"), n_per_class=3, image_size=64, seed=3)
    out, eval_out = str(tmp_path / "model"), str(tmp_path / "eval")
    overrides = {
        **{f"model.{k}": v for k, v in PAPER_SMALL.items()},
        "model.backbone_source": pretrained_sources["resnet50"],
        "model.caption_source": pretrained_sources["caption"],
        "model.depth_source": pretrained_sources["depth"],
        "workers.num_workers": 1,
        "workers.use_gpu": "false",
        "workers.cpus_per_worker": 1,
        "optim.batch_size": 4,
        "data.load_threads": 2,
        "data.val_fraction": 0.3,  # the stream loader needs a validation share of these 18 images
    }
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]
    assert (
        main(["train-rfnet", "--preset", "paper", "--data", data, "--out", out, "--epochs", "1", *sets]) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and min(summary["n_val"], summary["n_test"]) > 0
    args = ["evaluate", "--preset", "paper", "--rfnet", out, "--data", data, "--out", eval_out]
    assert main([*args, "--set", "batch_size=8", "--set", "load_threads=2"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["split"]["mode"] == "test" and report["n"] == summary["n_test"]
    _, config, meta = load_model(out)
    assert config.backbone == "resnet50" and config.backbone_source == pretrained_sources["resnet50"]
    assert meta["split"]["n_train"] == summary["n_train"]
