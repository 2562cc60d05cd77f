"""Incremental refresh: process only new or changed catalog items, mark removed ones.

An item's content hash is ``sha256(image-bytes hash | row-fields hash | config hash)``: it changes
when the product image's bytes change, when any of the row's fields change (prompt, caption, scale,
seed, image path), or when an output-relevant setting changes (``GenerateConfig.config_hash``:
models, sampler, prompts, inspection threshold...; not batch sizes or pool sizes).

``manifest.parquet`` keeps the latest hash, status and image per ``sku_id``. A refresh

- hashes every catalog image (a Ray Data pass; bytes are read, not decoded),
- skips items whose hash matches the manifest and whose last status was final and usable
  (``accepted``, ``exhausted``, ``generated``); items whose last status was ``error`` are retried,
- processes new and changed items as a normal run (with its own ``run_id``),
- marks items that left the catalog ``removed=True`` in the manifest (nothing is deleted).

Two refreshes in a row therefore do no work the second time. A lease (``lease.json``) keeps two
refreshes off one output store at the same time.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.catalog import Catalog, CatalogItem
from pipelines.config import GenerateConfig
from pipelines.seen import SeenSkus
from pipelines.store import MANIFEST_SCHEMA, OutputStore, now

logger = logging.getLogger(__name__)

REUSABLE = ("accepted", "exhausted", "generated")


def item_hash(bytes_hash: str, item: CatalogItem, config_hash: str) -> str:
    return hashlib.sha256(f"{bytes_hash}|{item.fields_hash()}|{config_hash}".encode()).hexdigest()[:16]


def _hash_batch(batch: dict[str, Any], policy: storage.RetryPolicy) -> dict[str, Any]:
    hashes = []
    for uri in batch["image"]:
        try:
            hashes.append(hashlib.sha256(storage.read_bytes(str(uri), policy=policy)).hexdigest()[:16])
        except (OSError, ValueError):
            hashes.append("")  # unreadable now: the item is processed and gets a precise error row
    batch["bytes_hash"] = hashes
    return batch


def hash_images(items: list[CatalogItem], cfg: GenerateConfig) -> dict[str, str]:
    """``sku_id -> sha256 of the image file`` ("" if unreadable), computed on Ray workers."""
    import ray

    if not items:
        return {}
    from pipelines.runner import ensure_ray

    ensure_ray(cfg)
    rows = [{"sku_id": it.sku_id, "image": it.image} for it in items]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // 64, 256)))
    ds = ds.map_batches(_hash_batch, fn_kwargs={"policy": cfg.storage.policy()}, batch_size=64, num_cpus=0.25)
    out: dict[str, str] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        out.update(zip(batch["sku_id"].to_pylist(), batch["bytes_hash"].to_pylist(), strict=True))
    return out


def select_changed(
    catalog: Catalog, store: OutputStore, cfg: GenerateConfig, config_hash: str
) -> tuple[list[CatalogItem], list[str], list[str]]:
    """``(items to process, skus skipped as unchanged, skus removed from the catalog)``.

    The manifest is read in Arrow: only the hashes of reusable items become Python strings (a
    1M-item manifest as row dicts would hold about a gigabyte on the driver)."""
    manifest = store.manifest()
    live = pc.invert(manifest["removed"].fill_null(False))
    reusable = manifest.filter(pc.and_(live, pc.is_in(manifest["status"], value_set=pa.array(REUSABLE))))
    previous = dict(zip(reusable["sku_id"].to_pylist(), reusable["item_hash"].to_pylist(), strict=True))
    bytes_hashes = hash_images(catalog.items, cfg)
    todo, skipped = [], []
    for it in catalog.items:
        prev = previous.get(it.sku_id)
        h = bytes_hashes.get(it.sku_id, "")
        if prev is not None and h and prev == item_hash(h, it, config_hash):
            skipped.append(it.sku_id)
        else:
            todo.append(it)
    present = pa.array([it.sku_id for it in catalog.items], pa.string())
    gone = pc.and_(live, pc.invert(pc.is_in(manifest["sku_id"], value_set=present)))
    removed = manifest["sku_id"].filter(gone).to_pylist()
    logger.info("refresh: %d new or changed, %d unchanged, %d removed", len(todo), len(skipped), len(removed))
    return todo, skipped, removed


def manifest_entry(item: CatalogItem, result: dict[str, Any], config_hash: str) -> dict[str, Any]:
    """The manifest row of an item the run finished: its content hash (when its image was read), status
    and image."""
    bytes_hash = result.get("content_hash") or ""
    return {
        "sku_id": item.sku_id,
        "item_hash": item_hash(bytes_hash, item, config_hash) if bytes_hash else "",
        "status": result["status"],
        "image": result.get("image") or "",
    }


def removed_items(store: OutputStore, present: SeenSkus) -> list[str]:
    """Live manifest items that are not in the catalog any more (``present``: the catalog's ids)."""
    manifest = store.manifest()
    live = manifest.filter(pc.invert(manifest["removed"].fill_null(False)))
    skus = live["sku_id"].to_pylist()
    return [s for s, seen in zip(skus, present.contains(skus).tolist(), strict=True) if not seen]


def update_manifest(store: OutputStore, updates: pa.Table, removed: list[str], run_id: str) -> None:
    """Upsert the processed items' latest state (``updates``: ``sku_id``, ``item_hash``, ``status``,
    ``image``, one row per item, from :func:`manifest_entry`) and mark removed ones; written atomically.

    Rows of untouched items are carried over as Arrow data."""
    manifest = store.manifest()
    stamp = now()
    n = len(updates)
    updated = pa.table(
        {
            "sku_id": updates["sku_id"],
            "item_hash": updates["item_hash"],
            "status": updates["status"],
            "image": updates["image"],
            "run_id": pa.array([run_id] * n, pa.string()),
            "removed": pa.array([False] * n, pa.bool_()),
            "updated_at": pa.array([stamp] * n, MANIFEST_SCHEMA.field("updated_at").type),
        }
    ).cast(MANIFEST_SCHEMA)
    kept = manifest.filter(
        pc.invert(pc.is_in(manifest["sku_id"], value_set=updated["sku_id"].combine_chunks()))
    )
    gone = pc.is_in(kept["sku_id"], value_set=pa.array(removed, pa.string()))
    stamped = pc.if_else(gone, pa.scalar(stamp, MANIFEST_SCHEMA.field("updated_at").type), kept["updated_at"])
    kept = kept.set_column(kept.schema.get_field_index("removed"), "removed", pc.or_(kept["removed"], gone))
    kept = kept.set_column(kept.schema.get_field_index("updated_at"), "updated_at", stamped)
    table = pa.concat_tables([kept, updated])
    store.write_manifest(table)
