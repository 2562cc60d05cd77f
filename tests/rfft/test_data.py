"""RFFT data: deterministic examples, worker slices that add up, stable held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import PrepareConfig, PromptConfig
from rfft.config import DataConfig
from rfft.data import load_products, procedural_product, split_products, training_examples

PREPARE = PrepareConfig(resolution=128, mask_dilation=5)
PROMPTS = PromptConfig()


def _slice(products, rank: int, local: int, world: int):
    return training_examples(
        products, seed=3, step=7, micro=1, global_size=local * world, rank=rank, local_size=local,
        prepare=PREPARE, prompts=PROMPTS,
    )  # fmt: skip


def _key(example):
    return (
        example.sku_id,
        example.seed,
        example.prompt,
        example.image_scale,
        example.prepared.mask_image.tobytes(),
    )


def test_two_workers_see_the_images_one_worker_sees():
    products = [procedural_product(i, seed=0) for i in range(6)]
    single = _slice(products, rank=0, local=4, world=1)
    split = _slice(products, rank=0, local=2, world=2) + _slice(products, rank=1, local=2, world=2)
    assert [_key(e) for e in single] == [_key(e) for e in split]
    assert len({e.seed for e in single}) == 4


def test_examples_are_a_pure_function_of_seed_and_step():
    products = [procedural_product(i, seed=0) for i in range(6)]
    assert [_key(e) for e in _slice(products, 0, 3, 1)] == [_key(e) for e in _slice(products, 0, 3, 1)]
    other = training_examples(
        products,
        seed=3,
        step=8,
        micro=1,
        global_size=3,
        rank=0,
        local_size=3,
        prepare=PREPARE,
        prompts=PROMPTS,
    )
    assert [e.seed for e in other] != [e.seed for e in _slice(products, 0, 3, 1)]


def test_held_out_split_is_stable_under_reordering_and_disjoint():
    products = [procedural_product(i, seed=0) for i in range(10)]
    train, held = split_products(products, 3, seed=0)
    _, held2 = split_products(products[::-1], 3, seed=0)
    assert {p.sku_id for p in held} == {p.sku_id for p in held2}
    assert len(held) == 3 and not {p.sku_id for p in held} & {p.sku_id for p in train}
    with pytest.raises(ValueError, match="num_eval_products"):
        split_products(products, 10, seed=0)


def test_procedural_products_are_soft_edged_cutouts():
    product = procedural_product(4, seed=0)
    alpha = product.rgba[..., 3]
    assert product.rgba.dtype == np.uint8 and product.caption
    assert (alpha == 255).any() and (alpha == 0).any()
    assert ((alpha > 0) & (alpha < 255)).any()  # anti-aliased outline
    assert np.array_equal(product.rgba, procedural_product(4, seed=0).rgba)


def test_catalog_folder_products_are_loaded_and_shrunk(products_dir):
    cfg = DataConfig(catalog=str(products_dir))
    products = load_products(cfg, PREPARE, seed=0)
    assert len(products) == len(list(products_dir.glob("*.png")))
    assert all(max(p.rgba.shape[:2]) <= PREPARE.resolution for p in products)
    assert all(p.rgba[..., 3].any() for p in products)


def test_a_catalog_with_too_few_products_is_an_error(tmp_path):
    (tmp_path / "catalog.jsonl").write_text('{"sku_id": "a", "image": "missing.png"}\n')
    cfg = DataConfig(catalog=str(tmp_path / "catalog.jsonl"))
    with pytest.raises(ValueError, match="at least 2"):
        load_products(cfg, PREPARE, seed=0)
