"""The toy generator: the shipped ``toy`` source loads offline, is deterministic per seed, paints
smooth scenes whose wall follows the prompt's colour word, and its training command runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.toy import neighbour_difference
from pipelines.attempts import plan_attempt
from pipelines.catalog import CatalogItem
from pipelines.config import GenerateConfig, load_config
from pipelines.generate import GenerateStage
from pipelines.models import identity, load_components, parse_source
from pipelines.prepare import prepare_batch, prepare_product
from rfft.toy.train import main as train_main
from rfnet.data.sample import write_sample_catalog
from rfnet.data.scenes import draw_product

SHARED_PRODUCTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "products"


@pytest.fixture(scope="module")
def toy_stage():
    cfg = load_config(GenerateConfig, preset="toy", assignments={"generation.torch_threads": 2})
    return GenerateStage(cfg)


def products(n: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    return [draw_product(rng, 200) for _ in range(n)]


def generate(stage, drawn, prompts, seeds, scale=0.72):
    prepared = [prepare_product(d.rgba, stage.cfg.prepare, scale) for d in drawn]
    images = stage._generate(
        [p.product for p in prepared],
        [p.mask_image for p in prepared],
        [p.control_image for p in prepared],
        prompts,
        [stage.cfg.prompts.templates[0].negative_prompt] * len(prompts),
        seeds,
    )
    return images, prepared


def test_toy_source_is_the_shipped_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = parse_source("toy")
    assert source.kind == "toy" and (source.location.endswith("assets/toy"))
    model, revision = identity("toy")
    assert model == "toy" and revision.startswith("sha-") and identity("toy") == (model, revision)
    components = load_components("toy", "toy", dtype=torch.float32)
    assert components["unet"].dtype == torch.float32  # float16 files, loaded in the compute dtype
    assert components["vae"].config.scaling_factor != 0.18215  # measured on its own latents
    assert (
        components["controlnet"].config.cross_attention_dim == components["text_encoder"].config.hidden_size
    )


def run_first_attempts(stage, items):
    """First attempts of catalog ``items``, planned and prepared as `generate` does, through ``stage``."""
    plans = [plan_attempt(item, 1, stage.cfg) for item in items]
    batch = {
        "sku_id": np.array([p.sku_id for p in plans], dtype=object),
        "attempt": np.ones(len(plans), np.int64),
        "seed": np.array([p.seed for p in plans], np.int64),
        "prompt": np.array([p.prompt for p in plans], dtype=object),
        "negative_prompt": np.array([p.negative_prompt for p in plans], dtype=object),
        "image_scale": np.array([p.image_scale for p in plans], np.float64),
        "caption": np.array([item.caption for item in items], dtype=object),
        "source_image": np.array([item.image for item in items], dtype=object),
        "error": np.array([""] * len(items), dtype=object),
    }
    batch = prepare_batch(batch, stage.cfg)
    assert not any(batch["error"]), batch["error"]
    products = batch["product"].copy()
    out = stage(batch)
    assert out["image"].shape == (len(items), 96, 96, 3) and not any(out["error"])
    for img, product in zip(out["image"], products, strict=True):
        opaque = product[..., 3] == 255
        assert np.array_equal(img[opaque], product[..., :3][opaque])
        assert img[product[..., 3] == 0].std() > 5  # a background was painted, not left blank
    return out["image"], products


def test_sample_catalog_through_the_generate_stage_gives_scenes(tmp_path, toy_stage):
    """The sample catalog (cut-outs and one photo on white), planned and prepared as `generate` does,
    through the same GenerateStage as sd15: product pixels unchanged, smooth painted backgrounds."""
    catalog = write_sample_catalog(tmp_path, items=4)
    rows = [json.loads(line) for line in catalog.read_text().splitlines()][:4]
    items = [
        CatalogItem(row=i + 1, sku_id=r["sku_id"], image=str(tmp_path / r["image"]), caption=r["caption"])
        for i, r in enumerate(rows)
    ]
    images, _ = run_first_attempts(toy_stage, items)
    # The random tiny preset's noise measures ~16 grey levels; painted scenes ~2.6.
    assert neighbour_difference(images) < 16 / 3


def test_real_product_photos_on_white_get_scenes(tmp_path, toy_stage):
    """Real product photos (../shared/data/products) flattened onto white and saved as JPEG, as a
    catalog of photos on white holds them: the toy generator cuts them out and paints around them."""
    from PIL import Image

    photos = sorted(SHARED_PRODUCTS.glob("*.png")) if SHARED_PRODUCTS.is_dir() else []
    if not photos:
        pytest.skip("../shared/data/products is not present")
    items = []
    for i, path in enumerate(photos[:4]):
        rgba = Image.open(path).convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.save(tmp_path / f"{i}.jpg", quality=92)
        items.append(CatalogItem(row=i + 1, sku_id=f"photo-{i}", image=str(tmp_path / f"{i}.jpg")))
    images, products = run_first_attempts(toy_stage, items)
    # Smooth backgrounds: neighbouring background pixels (the photos' own detail left out) differ by
    # far less than the random tiny preset's ~16 grey levels.
    for img, product in zip(images.astype(np.float32), products, strict=True):
        bg = product[..., 3] == 0
        pairs = bg[:, 1:] & bg[:, :-1]
        assert np.abs(np.diff(img, axis=1))[pairs].mean() < 16 / 3


def test_same_seed_same_image_other_seed_other_image(toy_stage):
    drawn = products(1)
    prompt = ["a product on a wooden table against a pale blue wall"]
    a, prepared = generate(toy_stage, drawn, prompt, [5])
    b, _ = generate(toy_stage, drawn, prompt, [5])
    c, _ = generate(toy_stage, drawn, prompt, [6])
    assert np.array_equal(a, b)
    background = prepared[0].mask_image > 0
    assert np.abs(a[0][background].astype(int) - c[0][background].astype(int)).mean() > 2
    opaque = prepared[0].product[..., 3] == 255
    assert np.array_equal(a[0][opaque], prepared[0].product[opaque][:, :3])


def test_toy_images_are_smooth_and_follow_the_wall_colour(toy_stage):
    drawn = products(4)
    seeds = [1, 2, 3, 4]
    red, prepared = generate(toy_stage, drawn, ["a product in front of a red wall"] * 4, seeds)
    blue, _ = generate(toy_stage, drawn, ["a product in front of a blue wall"] * 4, seeds)
    # Noise (the random tiny preset) measures ~16 grey levels; painted scenes ~2.5.
    assert neighbour_difference(np.concatenate([red, blue])) < 6.0

    def red_minus_blue(images):
        return [
            float(img[p.mask_image > 0][:, 0].mean()) - float(img[p.mask_image > 0][:, 2].mean())
            for img, p in zip(images, prepared, strict=True)
        ]

    assert all(r > b + 20 for r, b in zip(red_minus_blue(red), red_minus_blue(blue), strict=True))


def test_training_command_runs_end_to_end_and_is_reproducible(tmp_path):
    for name in ("a", "b"):
        train_main(["--out", str(tmp_path / name), "--preset", "smoke", "--seed", "3"])
    for part in (
        "unet/diffusion_pytorch_model.safetensors",
        "controlnet/diffusion_pytorch_model.safetensors",
    ):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes()
    provenance = json.loads((tmp_path / "a" / "provenance.json").read_text())
    assert provenance["seed"] == 3 and provenance["seconds"]["total"] > 0
    # What it wrote is a generator the pipeline loads and runs.
    cfg = load_config(
        GenerateConfig,
        preset="toy",
        assignments={
            "models.base": str(tmp_path / "a"),
            "models.controlnet": str(tmp_path / "a" / "controlnet"),
            "generation.num_inference_steps": 2,
        },
    )
    images, _ = generate(GenerateStage(cfg), products(1), ["a product on a wooden table"], [0])
    assert images.shape == (1, 96, 96, 3)
