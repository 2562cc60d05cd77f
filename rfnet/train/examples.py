"""Examples held by a worker: decoding (:func:`load_examples`), the aux maps, boxes and descriptors
computed once (:func:`precompute_maps`), progress logging of both."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rfnet.aux import search_warning
from rfnet.data import (
    ExampleError,
    Sample,
    load_example,
)
from rfnet.model import RFNet

logger = logging.getLogger(__name__)

# Data preparation before the first epoch logs its progress at most this often (seconds).
PROGRESS_INTERVAL_S = 30.0


@dataclass
class Examples:
    """Decoded examples: ``image (N, S, S, 3)`` / ``product (N, P, P, 4)`` uint8, ``has_product``,
    ``label`` (N,) int64, ``caption`` list."""

    image: torch.Tensor
    product: torch.Tensor
    has_product: torch.Tensor
    label: torch.Tensor
    caption: list[str]
    skipped: int = 0
    index: torch.Tensor | None = None  # (N,) int64: each row's position in the samples it was decoded from
    maps: torch.Tensor | None = None  # (N, C, S, S) uint8: precomputed aux maps (see precompute_maps)
    map_names: tuple[str, ...] = ()  # which maps, in channel order, with their channel counts
    map_channels: tuple[int, ...] = ()
    box: torch.Tensor | None = (
        None  # (N, 5) float32: the located product (x0, y0, x1, y1) in [0, 1], search error
    )
    desc: torch.Tensor | None = None  # (N, D) float32: raw descriptors of the unaugmented examples
    tree_logits: torch.Tensor | None = None  # (N, K): out-of-fold descriptor-tree scores (training)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def batch(self, index: np.ndarray | torch.Tensor, device: torch.device) -> dict[str, Any]:
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return {
            "image": self.image[idx].to(device).permute(0, 3, 1, 2).float().div_(255.0),
            "product": self.product[idx].to(device).permute(0, 3, 1, 2).float().div_(255.0),
            "has_product": self.has_product[idx].to(device),
            "label": self.label[idx].to(device),
            "caption": [self.caption[i] for i in idx.tolist()],
            "maps": None if self.maps is None else self.maps[idx].to(device).float().div_(255.0),
            "box": None if self.box is None else self.box[idx].to(device),
            "desc": None if self.desc is None else self.desc[idx].to(device),
            "tree_logits": None if self.tree_logits is None else self.tree_logits[idx].to(device),
        }

    def split_maps(
        self, maps: torch.Tensor | None, box: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor] | None:
        """``(B, C, S, S)`` stacked maps (and boxes) -> the model's ``maps`` dict."""
        if maps is None:
            return None
        out = dict(zip(self.map_names, torch.split(maps, list(self.map_channels), dim=1), strict=True))
        if box is not None:
            out["box"], out["box_error"] = box[:, :4], box[:, 4]
        return out


class PrepProgress:
    """Logs ``done / total`` of a step over examples at most every :data:`PROGRESS_INTERVAL_S`
    (nothing for a step that ends sooner): decoding, the maps or scoring of 100k images take many
    minutes before anything else is logged."""

    def __init__(self, what: str, total: int, enabled: bool = True) -> None:
        self.what, self.total, self.enabled = what, total, enabled
        self.started = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < PROGRESS_INTERVAL_S or done >= self.total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        logger.info(
            "%s: %d/%d examples (%.0f%%), %.1f/s, about %.0f s left",
            self.what, done, self.total, 100.0 * done / max(self.total, 1), rate, eta,
        )  # fmt: skip


def precompute_maps(
    model: RFNet,
    data: Examples,
    device: torch.device,
    batch_size: int = 64,
    descriptor: bool = False,
    progress: bool = False,
) -> None:
    """Compute the depth / saliency / match maps of every example once and keep them as uint8.

    They are functions of the (unaugmented) image and product only, so computing them per epoch
    would repeat the same work; flips and shifts are applied to them like to the image.
    ``descriptor``: also the raw product descriptor of each example (``data.desc``), from the
    full-precision maps. ``progress``: log how far it got every :data:`PROGRESS_INTERVAL_S`.
    """
    report = PrepProgress("maps and measurements", len(data), enabled=progress)
    chunks, boxes, descs = [], [], []
    names: tuple[str, ...] = ()
    channels: tuple[int, ...] = ()
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            b = data.batch(np.arange(start, min(start + batch_size, len(data))), device)
            maps = model.aux_maps(
                b["image"], b["product"] if model.config.use_product else None, b["has_product"]
            )
            if descriptor and model.config.use_descriptor:
                descs.append(model.raw_descriptor(b["image"], maps).float().cpu())
            if "box" in maps:
                boxes.append(
                    torch.cat([maps.pop("box"), maps.pop("box_error").view(-1, 1)], dim=1).float().cpu()
                )
            if not maps:
                return
            names = tuple(maps)
            channels = tuple(int(m.shape[1]) for m in maps.values())
            stacked = torch.cat(list(maps.values()), dim=1)
            chunks.append((stacked.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu())
            report(start + len(b["label"]))
    if chunks:
        data.maps, data.map_names, data.map_channels = torch.cat(chunks), names, channels
    if boxes:
        data.box = torch.cat(boxes)
    if descs:
        data.desc = torch.cat(descs)


def log_search(report: dict[str, Any], where: str, log: logging.Logger = logger) -> None:
    """Log a :func:`rfnet.aux.search_report` in one line, and its warning if it has one."""
    if report.get("with_product"):
        log.info(
            "product search on the %s: median error %.4f over %d images with a product, %.0f%% over %.2f",
            where, report["median_error"], report["with_product"], 100 * report["poor_share"], report["poor_error"],
        )  # fmt: skip
    warning = search_warning(report)
    if warning:
        log.warning("%s: %s", where, warning)


def load_examples(
    samples: list[Sample], *, image_size: int, product_size: int, threads: int, progress: bool = False
) -> Examples:
    """Decode ``samples`` in a thread pool; unreadable ones are skipped, counted and logged.
    ``progress``: log how far it got every :data:`PROGRESS_INTERVAL_S`."""
    image = np.zeros((len(samples), image_size, image_size, 3), np.uint8)
    product = np.zeros((len(samples), product_size, product_size, 4), np.uint8)
    has_product = np.zeros(len(samples), bool)
    ok = np.zeros(len(samples), bool)
    captions = [""] * len(samples)

    def one(i: int) -> str | None:
        try:
            ex = load_example(samples[i], image_size=image_size, product_size=product_size)
        except ExampleError as exc:
            return str(exc)
        image[i], product[i], has_product[i] = ex["image"], ex["product"], ex["has_product"]
        captions[i] = ex["caption"]
        ok[i] = True
        return None

    report = PrepProgress("decoding", len(samples), enabled=progress)
    errors = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, error in enumerate(pool.map(one, range(len(samples)))):
            if error:
                errors.append(error)
            report(i + 1)
    for e in errors[:5]:
        logger.warning("skipped: %s", e)
    if errors:
        logger.warning("skipped %d of %d samples that could not be decoded", len(errors), len(samples))
    keep = np.flatnonzero(ok)
    return Examples(
        image=torch.from_numpy(image[keep]),
        product=torch.from_numpy(product[keep]),
        has_product=torch.from_numpy(has_product[keep]),
        label=torch.tensor([samples[i].label for i in keep], dtype=torch.long),
        caption=[captions[i] for i in keep],
        skipped=len(errors),
        index=torch.from_numpy(keep.astype(np.int64)),
    )


# ----------------------------------------------------------------------------------------------------
