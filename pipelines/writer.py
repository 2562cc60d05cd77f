"""The write stage (CPU tasks): PNGs to the output store, pixel columns replaced by their URIs.

Writes ``images/<sku>/<attempt>.png`` for every generated image and ``products/<sku>.png`` (the
product as placed on the canvas) on an item's first attempt, with the storage retry policy; a write
that still fails becomes the row's ``error`` (``write failed: ...``). Deliberately free of torch and
diffusers, so write workers start fast and small.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from PIL import Image

from pipelines import storage
from pipelines.batch import Batch, num_rows, row_errors
from pipelines.config import GenerateConfig
from pipelines.naming import encode_sku


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def image_uri(out: str, sku_id: str, attempt: int) -> str:
    return storage.join(out, "images", encode_sku(sku_id), f"{attempt}.png")


def product_uri(out: str, sku_id: str) -> str:
    return storage.join(out, "products", f"{encode_sku(sku_id)}.png")


def write_batch(batch: Batch, cfg: GenerateConfig, out: str, faults: Any = None) -> Batch:
    """Write each generated image (and the product, on first sight) and replace pixels by URIs."""
    faults = faults or storage.FaultInjector(*(cfg.storage.inject_write_failures or (None, 0)))
    n = num_rows(batch)
    errors = row_errors(batch)
    image_uris = np.array([""] * n, dtype=object)
    product_uris = np.array([""] * n, dtype=object)
    seconds = np.zeros(n, np.float32)
    kw = {"policy": cfg.storage.policy(), "faults": faults}
    for i in range(n):
        if errors[i]:
            continue
        t0 = time.perf_counter()
        sku, attempt = str(batch["sku_id"][i]), int(batch["attempt"][i])
        img_uri, prod_uri = image_uri(out, sku, attempt), product_uri(out, sku)
        try:
            storage.write_bytes(img_uri, encode_png(batch["image"][i]), **kw)
            if attempt == 1 or not storage.exists(prod_uri):
                storage.write_bytes(prod_uri, encode_png(batch["product"][i]), **kw)
        except storage.StorageError as exc:
            errors[i] = f"write failed: {exc}"
        else:
            image_uris[i], product_uris[i] = img_uri, prod_uri
        seconds[i] = time.perf_counter() - t0
    batch["image"] = image_uris
    batch["product"] = product_uris
    batch["write_s"] = seconds
    batch["error"] = np.array(errors, dtype=object)
    return batch
