"""Training and held-out examples for RFFT: products, prompts, layouts and noise seeds.

Products come from a catalog (``pipelines.catalog``: a jsonl/csv/parquet file or a folder of
cut-outs, local or ``s3://``) or, with no catalog, are drawn procedurally (the drawer the synthetic
RFNet data and the sample catalog use), so the ``tiny`` preset trains with nothing on disk.

Every example is a pure function of ``(seed, step, micro-step, index in the global micro-batch)``
(:func:`example_seed`): which product, which prompt and colour (``pipelines.prompts.choose_prompt``),
which ``image_scale`` and which noise. A worker takes its slice of the global micro-batch by rank, so
one worker with batch 4 sees exactly the images two workers with batch 2 see together.

Held-out products are chosen by a hash of their ``sku_id`` (stable when the catalog is reordered or
grows) and evaluated with fixed draws, so evaluations at different steps are paired comparisons.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pipelines.catalog import InvalidInput, load_product_rgba, read_catalog
from pipelines.config import PrepareConfig, PromptConfig
from pipelines.prepare import Prepared, alpha_bbox, prepare_product
from pipelines.prompts import choose_prompt
from rfft.config import DataConfig
from rfnet.data.scenes import draw_product

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Product:
    """A product cut-out and the catalog fields RFFT uses."""

    sku_id: str
    rgba: np.ndarray  # (H, W, 4) uint8, cropped to the alpha bounding box
    caption: str = ""  # product title, RFNet's caption input
    prompt: str | None = None  # catalog overrides; None = drawn from the prompt pool
    negative_prompt: str | None = None
    image_scale: float | None = None


@dataclass(frozen=True)
class Example:
    """One generation to grade: the prepared canvas plus its text and noise seed."""

    sku_id: str
    seed: int  # noise seed (the sampler's per-image generator)
    prompt: str
    negative_prompt: str
    caption: str
    image_scale: float
    prepared: Prepared


@dataclass
class Batch:
    """Examples stacked into tensors on one device (``R`` = canvas side)."""

    sku_ids: list[str]
    prompt: list[str]
    negative_prompt: list[str]
    caption: list[str]
    image: torch.Tensor  # (B, 3, R, R) in [0, 1]: product on white (the init image)
    mask_image: torch.Tensor  # (B, 1, R, R) in {0, 1}: 1 = regenerate
    control_image: torch.Tensor  # (B, 3, R, R) in [0, 1]: Canny edges of the product
    product: torch.Tensor  # (B, 4, R, R) RGBA in [0, 1], alpha 0 off the product
    product_mask: torch.Tensor  # (B, 1, R, R) in {0, 1}: 1 = product (undilated)
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.prompt)

    def generators(self) -> list[torch.Generator]:
        """Fresh CPU generators, one per image (noise independent of device and batch layout)."""
        return [torch.Generator().manual_seed(s) for s in self.seeds]


# ----------------------------------------------------------------------------------------------------
# Products.


def load_products(cfg: DataConfig, prepare: PrepareConfig, seed: int) -> list[Product]:
    """All products for a run: the catalog's usable rows, or procedural ones.

    Catalog rows that cannot be used (error rows, unreadable or invalid images) are logged and
    skipped; fewer than two usable products is an error naming the catalog.
    """
    if cfg.catalog is None:
        return [procedural_product(i, seed) for i in range(cfg.num_procedural)]
    catalog = read_catalog(cfg.catalog)
    for err in catalog.errors:
        logger.warning("catalog %s row %d skipped: %s", cfg.catalog, err.row, err.reason)
    items = sorted(catalog.items, key=lambda it: _hash_unit(it.sku_id, seed))
    if cfg.max_products is not None:
        items = items[: cfg.max_products]
    products = []
    for item in items:
        try:
            rgba = load_product_rgba(item.image, prepare)
        except InvalidInput as exc:
            logger.warning("catalog %s row %d (%s) skipped: %s", cfg.catalog, item.row, item.sku_id, exc)
            continue
        products.append(
            Product(
                sku_id=item.sku_id,
                rgba=shrink_product(rgba, prepare.resolution),
                caption=item.caption,
                prompt=item.prompt,
                negative_prompt=item.negative_prompt,
                image_scale=item.image_scale,
            )
        )
    if len(products) < 2:
        raise ValueError(
            f"catalog {cfg.catalog!r} yielded {len(products)} usable product(s) ({len(catalog.errors)} error rows); "
            "RFFT needs at least 2 (training + held-out)"
        )
    return products


def shrink_product(rgba: np.ndarray, resolution: int) -> np.ndarray:
    """Crop to the alpha bounding box and shrink so the longer side is at most ``resolution``.

    Products are kept in memory for the whole run; ``prepare_product`` never scales a product above
    the canvas side, so this loses nothing but memory.
    """
    box = alpha_bbox(rgba[..., 3])
    if box is None:
        raise InvalidInput("the product's alpha channel is empty (fully transparent)")
    x0, y0, x1, y1 = box
    crop = rgba[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    if max(h, w) <= resolution:
        return np.ascontiguousarray(crop)
    s = resolution / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    alpha = crop[..., 3:4].astype(np.float32) / 255.0
    premult = np.concatenate([crop[..., :3].astype(np.float32) * alpha, alpha * 255.0], axis=-1)
    out = cv2.resize(premult, size, interpolation=cv2.INTER_AREA)
    a = np.clip(out[..., 3:4], 0.0, 255.0)
    rgb = np.where(a > 0, out[..., :3] * 255.0 / np.maximum(a, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0, 255), a], axis=-1).round().astype(np.uint8)


def split_products(products: list[Product], num_eval: int, seed: int) -> tuple[list[Product], list[Product]]:
    """``(train, held_out)``: the ``num_eval`` products with the smallest hash of ``sku_id`` are held out."""
    if num_eval >= len(products):
        raise ValueError(
            f"{len(products)} products cannot give {num_eval} held-out products and a training set; "
            "lower data.num_eval_products or add products"
        )
    ranked = sorted(products, key=lambda p: _hash_unit("eval:" + p.sku_id, seed))
    held = {p.sku_id for p in ranked[:num_eval]}
    return [p for p in products if p.sku_id not in held], [p for p in products if p.sku_id in held]


def procedural_product(index: int, seed: int, height: int = 256) -> Product:
    """A drawn product cut-out (``rfnet.data.scenes.draw_product``: bottles, jars, cans, mugs,
    boxes, shoes... with shading, labels and anti-aliased alpha), deterministic in ``(index, seed)``."""
    drawn = draw_product(np.random.default_rng([seed, index]), height=height)
    return Product(
        sku_id=f"procedural-{index:04d}", rgba=shrink_product(drawn.rgba, height), caption=drawn.caption
    )


# ----------------------------------------------------------------------------------------------------
# Examples.


def example_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed as a pure function of the run seed and ``parts`` (step, micro-step, index...)."""
    blob = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def make_example(product: Product, seed: int, prepare: PrepareConfig, prompts: PromptConfig) -> Example:
    """Draw prompt, colour and ``image_scale`` from ``seed`` (catalog values win) and prepare the canvas."""
    rng = np.random.default_rng(seed)
    lo, hi = prepare.image_scale_range
    scale = product.image_scale if product.image_scale is not None else float(rng.uniform(lo, hi))
    choice = choose_prompt(prompts, seed)
    return Example(
        sku_id=product.sku_id,
        seed=seed,
        prompt=product.prompt if product.prompt is not None else choice.prompt,
        negative_prompt=product.negative_prompt
        if product.negative_prompt is not None
        else choice.negative_prompt,
        caption=product.caption,
        image_scale=scale,
        prepared=prepare_product(product.rgba, prepare, scale),
    )


def training_examples(
    products: list[Product],
    *,
    seed: int,
    step: int,
    micro: int,
    global_size: int,
    rank: int,
    local_size: int,
    prepare: PrepareConfig,
    prompts: PromptConfig,
) -> list[Example]:
    """This worker's slice ``[rank * local_size, (rank + 1) * local_size)`` of a global micro-batch."""
    if (rank + 1) * local_size > global_size:
        raise ValueError(f"rank {rank} x batch {local_size} exceeds the global micro-batch of {global_size}")
    examples = []
    for k in range(rank * local_size, (rank + 1) * local_size):
        s = example_seed(seed, "train", step, micro, k)
        product = products[s % len(products)]
        examples.append(make_example(product, s, prepare, prompts))
    return examples


def eval_examples(
    products: list[Product], *, seed: int, repeats: int, prepare: PrepareConfig, prompts: PromptConfig
) -> list[Example]:
    """Fixed draws for the held-out products: the same images at every evaluation."""
    return [
        make_example(p, example_seed(seed, "eval", p.sku_id, r), prepare, prompts)
        for p in products
        for r in range(repeats)
    ]


def collate(examples: list[Example], device: torch.device) -> Batch:
    """Stack examples into a :class:`Batch` on ``device``."""

    def stack(key: str) -> torch.Tensor:
        arr = np.stack([getattr(e.prepared, key) for e in examples])
        if arr.ndim == 3:
            arr = arr[..., None]
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0).contiguous().to(device)

    return Batch(
        sku_ids=[e.sku_id for e in examples],
        prompt=[e.prompt for e in examples],
        negative_prompt=[e.negative_prompt for e in examples],
        caption=[e.caption for e in examples],
        image=stack("init_image"),
        mask_image=stack("mask_image"),
        control_image=stack("control_image"),
        product=stack("product"),
        product_mask=stack("product_mask"),
        seeds=[e.seed for e in examples],
    )


def _hash_unit(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
