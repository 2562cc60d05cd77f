"""The two ways a worker gets its batches: :class:`MemoryData` (``loader="memory"``) and
:class:`StreamData` (``loader="stream"``), with the same members."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from rfnet.aux import search_report
from rfnet.config import TrainRFNetConfig
from rfnet.data import (
    Sample,
)
from rfnet.model import RFNet
from rfnet.train.examples import Examples, load_examples, log_search, precompute_maps
from rfnet.train.steps import augment, epoch_order

logger = logging.getLogger(__name__)


class MemoryData:
    """``loader="memory"``: the decoded train set (all of it, on every worker) and this worker's share
    of the validation set in RAM, with their maps precomputed. Each epoch's global batches come from
    one seeded permutation; each worker takes its slice, after augmenting the global batch with
    parameters drawn for the global batch, so the run does not depend on the number of workers."""

    def __init__(
        self, cfg: TrainRFNetConfig, config: dict[str, Any], session, model: RFNet, device: torch.device
    ):
        self.cfg, self.device, self.rank, self.world = cfg, device, session.rank, session.world
        mc, threads = cfg.model, cfg.data.load_threads
        chatty = self.rank == 0  # every worker prepares the same training set: one reports
        self.train = load_examples(
            [Sample(**s) for s in config["train"]],
            image_size=mc.image_size,
            product_size=mc.product_size,
            threads=threads,
            progress=chatty,
        )
        val = [Sample(**s) for s in config["val"]][self.rank :: self.world]
        self.val = load_examples(val, image_size=mc.image_size, product_size=mc.product_size, threads=threads)
        once = cfg.data.cache_descriptor
        precompute_maps(model, self.train, device, descriptor=once, progress=chatty)
        precompute_maps(model, self.val, device, descriptor=once)
        self.skipped = self.train.skipped + self.val.skipped
        # How well the product search matched on the training split (None without it).
        self.search = None
        if self.train.box is not None:
            self.search = search_report(self.train.box[:, 4], self.train.has_product)
            if chatty:
                log_search(self.search, "training split")
        if len(self.train) < cfg.optim.batch_size:
            raise ValueError(
                f"the training split has {len(self.train)} examples, fewer than one global batch "
                f"({cfg.optim.batch_size}); lower optim.batch_size or add data"
            )

    def describe(self) -> str:
        return f"memory: {len(self.train)} train, {len(self.val)} val examples on this worker"

    def steps_per_epoch(self) -> int:
        return len(self.train) // self.cfg.optim.batch_size

    def _batch(
        self, data: Examples, index, augment_with: torch.Generator | None, mine: slice | None
    ) -> dict[str, Any]:
        b = data.batch(index, self.device)
        image, product, maps, box = b["image"], b["product"], b["maps"], b["box"]
        if augment_with is not None:
            moved = None if box is None else box[:, :4]
            image, product, maps, moved = augment(image, product, self.cfg.augment, augment_with, maps, moved)
            box = None if box is None else torch.cat([moved, box[:, 4:]], dim=1)
        mine = mine or slice(None)
        split = data.split_maps(None if maps is None else maps[mine], None if box is None else box[mine])
        if b["desc"] is not None and split is not None:
            # Cached descriptor of the unaugmented image: its first four entries are the box, which
            # moved with the flip and shift; the other measurements do not change with them.
            desc = b["desc"][mine].clone()
            desc[:, :4] = split["box"].to(desc.dtype)
            split["descriptor"] = desc
        if b["tree_logits"] is not None and split is not None:
            split["tree_logits"] = b["tree_logits"][mine]
        return {
            "image": image[mine],
            "product": product[mine],
            "has_product": b["has_product"][mine],
            "caption": b["caption"][mine],
            "label": b["label"][mine],
            "maps": split,
        }

    def train_batches(self, epoch: int):
        oc = self.cfg.optim
        local = oc.batch_size // self.world
        mine = slice(self.rank * local, (self.rank + 1) * local)
        order = epoch_order(len(self.train), self.train.label.numpy(), epoch, oc.seed, oc.balance)
        for s in range(self.steps_per_epoch()):
            gen = torch.Generator().manual_seed(oc.seed * 1_000_003 + epoch * 10_007 + s)
            yield self._batch(
                self.train,
                order[s * oc.batch_size : (s + 1) * oc.batch_size],
                gen if self.cfg.augment.enabled else None,
                mine,
            )

    def stat_batches(self):
        """Unaugmented batches of the train set (for input statistics)."""
        for start in range(0, len(self.train), 64):
            yield self._batch(self.train, np.arange(start, min(start + 64, len(self.train))), None, None)

    def val_batches(self):
        size = max(32, self.cfg.optim.batch_size // self.world)
        for start in range(0, len(self.val), size):
            yield self._batch(self.val, np.arange(start, min(start + size, len(self.val))), None, None)


class StreamData:
    """``loader="stream"``: Ray Data shards (``rfnet.data.to_ray_dataset``, split equally across the
    workers by Ray Train) decoded as they are consumed, maps computed per batch. For sets that do not
    fit in memory; batches are shuffled within a local buffer, and the run is not bit-identical
    across worker counts (the memory loader is)."""

    SHUFFLE_BUFFER = 2048  # rows shuffled locally per worker

    def __init__(
        self, cfg: TrainRFNetConfig, config: dict[str, Any], session, model: RFNet, device: torch.device
    ):
        self.cfg, self.device, self.model, self.rank, self.world = (
            cfg,
            device,
            model,
            session.rank,
            session.world,
        )
        self.train = session.dataset_shard("train")
        self.val = session.dataset_shard("val")
        self.n_train = int(config["n_train"])
        self.skipped = 0
        self.search = None  # the maps are computed per batch: no set-wide product search report
        self.local = cfg.optim.batch_size // self.world
        if self.steps_per_epoch() == 0:
            raise ValueError(
                f"the training split has {self.n_train} examples, fewer than one global batch ({cfg.optim.batch_size})"
            )

    def describe(self) -> str:
        return f"stream: {self.n_train} train examples over {self.world} workers"

    def steps_per_epoch(self) -> int:
        # Ray Train splits each epoch equally (streaming_split(equal=True)); full batches only.
        return (self.n_train // self.world) // self.local

    def _convert(self, np_batch: dict[str, np.ndarray], gen: torch.Generator | None) -> dict[str, Any]:
        image = (
            torch.from_numpy(np.ascontiguousarray(np_batch["image"]))
            .to(self.device)
            .permute(0, 3, 1, 2)
            .float()
            / 255.0
        )
        product = (
            torch.from_numpy(np.ascontiguousarray(np_batch["product"]))
            .to(self.device)
            .permute(0, 3, 1, 2)
            .float()
            / 255.0
        )
        has_product = torch.from_numpy(np.asarray(np_batch["has_product"], bool)).to(self.device)
        with torch.no_grad():
            maps = self.model.aux_maps(image, product if self.cfg.model.use_product else None, has_product)
        if gen is not None:
            names = [k for k in maps if k not in ("box", "box_error")]
            stacked = torch.cat([maps[k] for k in names], dim=1) if names else None
            image, product, stacked, box = augment(
                image, product, self.cfg.augment, gen, stacked, maps.get("box")
            )
            if stacked is not None:
                sizes = [maps[k].shape[1] for k in names]
                maps.update(dict(zip(names, torch.split(stacked, sizes, dim=1), strict=True)))
            if box is not None:
                maps["box"] = box
        return {
            "image": image,
            "product": product,
            "has_product": has_product,
            "caption": [str(c) for c in np_batch["caption"]],
            "label": torch.from_numpy(np.asarray(np_batch["label"], np.int64)).to(self.device),
            "maps": maps or None,
        }

    def train_batches(self, epoch: int):
        oc = self.cfg.optim
        batches = self.train.iter_batches(
            batch_size=self.local,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=self.SHUFFLE_BUFFER,
            local_shuffle_seed=oc.seed * 1000 + epoch * 10 + self.rank,
        )
        for s, np_batch in enumerate(batches):
            if s >= self.steps_per_epoch():
                break
            gen = torch.Generator().manual_seed(oc.seed * 1_000_003 + epoch * 10_007 + s * 101 + self.rank)
            yield self._convert(np_batch, gen if self.cfg.augment.enabled else None)

    def stat_batches(self, limit: int = 32):
        """The first ``limit`` batches of this worker's train shard, unaugmented (input statistics)."""
        batches = self.train.iter_batches(batch_size=self.local, batch_format="numpy")
        for s, np_batch in enumerate(batches):
            if s >= limit:
                break
            yield self._convert(np_batch, None)

    def val_batches(self):
        for np_batch in self.val.iter_batches(batch_size=max(32, self.local), batch_format="numpy"):
            yield self._convert(np_batch, None)
