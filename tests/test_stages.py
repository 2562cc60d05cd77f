"""The stages without Ray: preparation of real cut-outs, generation with paste-back, the write stage."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines import storage
from pipelines.config import GenerateConfig, load_config
from pipelines.generate import GenerateStage
from pipelines.prepare import prepare_batch
from pipelines.writer import write_batch


@pytest.fixture(scope="module")
def cfg():
    return load_config(GenerateConfig, preset="tiny", overrides={"generation.num_inference_steps": 3})


@pytest.fixture(scope="module")
def stage(cfg):
    return GenerateStage(cfg)


def work_batch(paths, scales, seeds=None):
    n = len(paths)
    return {
        "sku_id": np.array([f"S{i}" for i in range(n)], dtype=object),
        "attempt": np.ones(n, np.int64),
        "seed": np.array(seeds or list(range(1, n + 1)), np.int64),
        "prompt": np.array(["a product on a table"] * n, dtype=object),
        "negative_prompt": np.array(["blurry"] * n, dtype=object),
        "image_scale": np.array(scales, np.float64),
        "caption": np.array(["a thing"] * n, dtype=object),
        "source_image": np.array([str(p) for p in paths], dtype=object),
        "error": np.array([""] * n, dtype=object),
    }


def test_prepare_gives_where_the_product_sits_on_the_canvas(cfg, tmp_path):
    """``product_box``: the canvas product's alpha bounding box over the canvas side (what the scorer
    takes instead of searching); NaN on a row that failed."""
    product = np.zeros((80, 60, 4), np.uint8)
    product[10:70, 10:50] = (40, 120, 200, 255)
    path = tmp_path / "p.png"
    Image.fromarray(product).save(path)
    batch = prepare_batch(work_batch([path, tmp_path / "missing.png"], [0.5, 0.5]), cfg)
    assert batch["error"][0] == "" and batch["error"][1]
    r = cfg.prepare.resolution
    ys, xs = np.nonzero(batch["product"][0][..., 3])
    expected = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) / r
    np.testing.assert_allclose(batch["product_box"][0], expected, rtol=0, atol=1e-7)
    assert 0.0 < expected[0] < expected[2] < 1.0 and 0.0 < expected[1] < expected[3] < 1.0
    assert np.isnan(batch["product_box"][1]).all()


def test_real_cutouts_generate_with_product_unchanged(products_dir, cfg, stage):
    paths = sorted(products_dir.glob("*.png"))
    batch = prepare_batch(work_batch(paths, [0.72] * len(paths)), cfg)
    assert not any(batch["error"]), batch["error"]
    products = batch["product"].copy()
    out = stage(batch)
    assert out["image"].shape == (len(paths), 128, 128, 3) and "mask_image" not in out
    for img, product in zip(out["image"], products, strict=True):
        opaque = product[..., 3] == 255
        assert opaque.sum() > 500
        assert np.array_equal(img[opaque], product[..., :3][opaque])  # byte-identical product pixels
        assert img[product[..., 3] == 0].std() > 1  # the background was generated


def test_seed_determines_the_image_not_the_batch(tmp_path, cfg, stage):
    a = np.zeros((80, 60, 4), np.uint8)
    a[10:70, 10:50] = (200, 30, 30, 255)
    path = tmp_path / "p.png"
    Image.fromarray(a).save(path)
    single = stage(prepare_batch(work_batch([path], [0.7], seeds=[5]), cfg))["image"][0]
    batched = stage(prepare_batch(work_batch([path] * 3, [0.7] * 3, seeds=[9, 5, 7]), cfg))["image"]
    assert np.abs(single.astype(int) - batched[1].astype(int)).max() <= 1  # same seed, other batch-mates
    assert not np.array_equal(batched[0], batched[1])


def test_bad_rows_pass_through_with_reasons(tmp_path, cfg, stage):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    good = tmp_path / "good.png"
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[5:35, 5:35] = (0, 0, 255, 255)
    Image.fromarray(rgba).save(good)
    batch = prepare_batch(work_batch([tmp_path / "bad.png", tmp_path / "none.png", good], [0.7] * 3), cfg)
    assert batch["error"][0].startswith("invalid input: not a recognised image")
    assert batch["error"][1].startswith("invalid input: image not found")
    out = stage(batch)
    assert not out["error"][2] and out["image"][2].any() and not out["image"][0].any()


def test_write_stage_retries_then_reports(tmp_path, cfg, stage):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[5:35, 5:35] = (0, 200, 0, 255)
    Image.fromarray(rgba).save(tmp_path / "g.png")
    batch = stage(prepare_batch(work_batch([tmp_path / "g.png"] * 2, [0.7, 0.7]), cfg))
    flaky = cfg.model_copy(
        update={
            "storage": cfg.storage.model_copy(
                update={"inject_write_failures": ("*/images/S0/*", 2), "backoff_s": 0.0}
            )
        }
    )
    out = write_batch(dict(batch), flaky, str(tmp_path / "out"))
    assert list(out["error"]) == ["", ""] and storage.exists(out["image"][0])  # 2 failures < 1 + 3 retries
    broken = cfg.model_copy(
        update={
            "storage": cfg.storage.model_copy(
                update={"inject_write_failures": ("*/images/S1/*", 9), "backoff_s": 0.0}
            )
        }
    )
    out = write_batch(dict(batch), broken, str(tmp_path / "out2"))
    assert out["error"][0] == "" and out["error"][1].startswith("write failed: write ")
    assert "after 4 tries: injected write failure" in out["error"][1] and out["image"][1] == ""


def product_png(tmp_path, rgb):
    """A 60x80 cut-out: an opaque rectangle of colour ``rgb`` on a transparent border."""
    a = np.zeros((80, 60, 4), np.uint8)
    a[10:70, 10:50] = (*rgb, 255)
    path = tmp_path / "p.png"
    Image.fromarray(a).save(path)
    return path


def test_conditioning_embedding_runs_once_per_batch_with_identical_images(tmp_path, cfg, stage):
    path = product_png(tmp_path, (30, 120, 200))
    prepared = prepare_batch(work_batch([path] * 2, [0.7, 0.6], seeds=[3, 4]), cfg)
    calls = []
    handle = stage.reuse_conditioning.embedding.register_forward_hook(lambda *_: calls.append(1))
    try:
        cached = stage({k: v.copy() for k, v in prepared.items()})["image"]
        assert len(calls) == 1  # one embedding for all denoising steps and both CFG branches
        stage.pipe.controlnet.controlnet_cond_embedding = stage.reuse_conditioning.embedding
        plain = stage({k: v.copy() for k, v in prepared.items()})["image"]
        assert len(calls) == 1 + cfg.generation.num_inference_steps
    finally:
        stage.pipe.controlnet.controlnet_cond_embedding = stage.reuse_conditioning
        handle.remove()
    assert np.array_equal(cached, plain)


def test_fused_attention_projections_give_the_same_images(tmp_path, cfg, stage):
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    path = product_png(tmp_path, (200, 60, 30))
    prepared = prepare_batch(work_batch([path] * 2, [0.7, 0.5], seeds=[5, 6]), cfg)
    plain = stage({k: v.copy() for k, v in prepared.items()})["image"]
    fused_cfg = cfg.model_copy(update={"generation": cfg.generation.model_copy(update={"fuse_qkv": True})})
    fused_stage = GenerateStage(fused_cfg)
    processors = [
        *fused_stage.pipe.unet.attn_processors.values(),
        *fused_stage.pipe.controlnet.attn_processors.values(),
    ]
    assert processors and all(isinstance(p, FusedAttnProcessor2_0) for p in processors)
    fused = fused_stage({k: v.copy() for k, v in prepared.items()})["image"]
    # One wider matmul instead of three: the same arithmetic up to rounding (uint8 images).
    assert np.abs(fused.astype(int) - plain.astype(int)).max() <= 1
    assert fused.std() > 0


def test_tiny_tokenizer_cuts_a_long_negative_prompt_without_a_false_warning(capfd):
    from pipelines.attempts import SHAPE_NEGATIVE
    from pipelines.config import DEFAULT_NEGATIVE
    from pipelines.models import build_byte_tokenizer

    tokenizer = build_byte_tokenizer(49406, 49407)
    negative = f"{DEFAULT_NEGATIVE}, {SHAPE_NEGATIVE}"
    assert len(tokenizer.tokenize(negative)) > 77  # what diffusers does before it cuts the prompt
    ids = tokenizer(negative, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[-1] == 49407
    assert "indexing errors" not in capfd.readouterr().err


def test_warm_up_compiles_what_real_batches_run(tmp_path, cfg):
    """A compiled actor's warm-up batch must leave nothing to compile for its first real batch."""
    import torch
    import torch._dynamo

    small = cfg.model_copy(update={"generation": cfg.generation.model_copy(update={"batch_size": 2})})
    stage = GenerateStage(small)
    # The graphs torch.compile would build, without inductor's code generation (fast on CPU).
    stage.pipe.unet = torch.compile(stage.pipe.unet, backend="eager", dynamic=False)
    stage.pipe.controlnet = torch.compile(stage.pipe.controlnet, backend="eager", dynamic=False)
    torch._dynamo.reset()
    try:
        stage._warm_up()
        path = product_png(tmp_path, (90, 160, 40))
        prepared = prepare_batch(work_batch([path] * 2, [0.6, 0.5], seeds=[7, 8]), small)
        with torch._dynamo.config.patch(error_on_recompile=True):
            out = stage(prepared)
    finally:
        torch._dynamo.reset()
    assert list(out["error"]) == ["", ""]
    assert out["image"].std() > 0
