"""Decoded examples as a Ray Data dataset, for training and evaluation at scale.

Why this shape: the sample index (paths, labels, captions: a few hundred bytes per row) is built
on the driver as Arrow tables and handed to Ray in ``num_blocks`` slices (``ray.data.from_arrow``),
so no pickled Python objects and no per-row driver work; decoding (the expensive part: file reads
from local disk or S3, PNG/JPEG decode, resize, product canonicalisation) runs in parallel Ray tasks
(``map_batches`` with a plain function: decoding has no state worth an actor). The dataset streams:
blocks are decoded as consumers pull them, so a million-image RF1M never sits in memory.
``ray.data.read_images`` was not used because each example joins two files (image and product) with
a label and caption, and because its decoding would differ from :func:`load_example`, which the
scorer and the non-Ray paths use; one decoder means training and serving see identical pixels.

Ray Train: pass the dataset in ``TorchTrainer(datasets={"train": ds})`` and read
``ray.train.get_dataset_shard("train").iter_batches(batch_format="numpy")`` in each worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from rfnet.data.samples import UNLABELLED, ExampleError, Sample, load_example

if TYPE_CHECKING:
    import ray.data

logger = logging.getLogger(__name__)

ON_ERROR = ("skip", "keep", "raise")


def samples_table(samples: Sequence[Sample]) -> pa.Table:
    """The index as an Arrow table: ``image``, ``product`` ("" when none), ``caption``, ``label``, ``source``."""
    return pa.table(
        {
            "image": pa.array([s.image for s in samples], pa.string()),
            "product": pa.array([s.product or "" for s in samples], pa.string()),
            "caption": pa.array([s.caption for s in samples], pa.string()),
            "label": pa.array([int(s.label) for s in samples], pa.int64()),
            "source": pa.array([s.source for s in samples], pa.string()),
        }
    )


def decode_batch(batch: dict[str, np.ndarray], *, image_size: int, product_size: int, on_error: str) -> dict:
    """Map a batch of index rows to decoded examples (see :func:`to_ray_dataset` for the columns)."""
    n = len(batch["image"])
    images = np.zeros((n, image_size, image_size, 3), np.uint8)
    products = np.zeros((n, product_size, product_size, 4), np.uint8)
    has_product = np.zeros(n, bool)
    labels = np.asarray(batch["label"], np.int64).copy()
    errors = [""] * n
    for i in range(n):
        product = str(batch["product"][i])
        sample = Sample(
            image=str(batch["image"][i]),
            label=int(labels[i]),
            product=product or None,
            caption=str(batch["caption"][i]),
            source=str(batch["source"][i]),
        )
        try:
            example = load_example(sample, image_size=image_size, product_size=product_size)
        except ExampleError as exc:
            if on_error == "raise":
                raise
            logger.warning("%s", exc)
            errors[i] = str(exc)
            labels[i] = UNLABELLED
            continue
        images[i] = example["image"]
        products[i] = example["product"]
        has_product[i] = example["has_product"]
    out = {
        "image": images,
        "product": products,
        "has_product": has_product,
        "caption": np.asarray([str(c) for c in batch["caption"]], dtype=object),
        "label": labels,
        "path": np.asarray([str(p) for p in batch["image"]], dtype=object),
        "error": np.asarray(errors, dtype=object),
    }
    if on_error == "skip":
        keep = np.asarray([not e for e in errors])
        if not keep.all():
            out = {k: v[keep] for k, v in out.items()}
    return out


def to_ray_dataset(
    samples: Sequence[Sample],
    *,
    image_size: int,
    product_size: int,
    on_error: str = "skip",
    num_blocks: int | None = None,
    batch_size: int = 32,
) -> ray.data.Dataset:
    """A Ray Data dataset of decoded examples, one row per sample.

    Columns: ``image`` ``(image_size, image_size, 3)`` uint8, ``product`` ``(product_size,
    product_size, 4)`` uint8 (canonicalised, zeros when absent), ``has_product`` bool, ``caption``
    str, ``label`` int64 (0-5, -1 unlabelled), ``path`` str (the image URI, for reports), ``error``
    str ("" when decoded). Pixels are identical to :func:`load_example`'s.

    ``on_error``: what an unreadable file does. ``"skip"`` (default) drops the row and logs a warning
    naming the file in the decoding task's log; ``"keep"`` keeps it with zero pixels, ``label`` -1
    and the reason in ``error`` (count or report them; a loss with ``ignore_index=-1`` skips them);
    ``"raise"`` fails the dataset with :class:`ExampleError`. ``num_blocks``: how many slices the
    index is cut into (parallelism; default about one per 256 samples, at least 1 and at most 2000).
    ``batch_size``: rows per decoding task call. Ray must be initialised (or is started locally).
    """
    import ray.data

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not samples:
        raise ValueError("to_ray_dataset needs at least one sample, got none")
    for name, value in (
        ("image_size", image_size),
        ("product_size", product_size),
        ("batch_size", batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    table = samples_table(samples)
    blocks = num_blocks or min(2000, max(1, len(samples) // 256))
    step = -(-len(samples) // blocks)
    slices = [table.slice(start, step) for start in range(0, len(samples), step)]
    return ray.data.from_arrow(slices).map_batches(
        decode_batch,
        fn_kwargs={"image_size": image_size, "product_size": product_size, "on_error": on_error},
        batch_format="numpy",
        batch_size=batch_size,
        zero_copy_batch=True,
    )
