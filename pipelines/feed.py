"""The catalog as a run's stream of work: items to attempt, chunk by chunk, in catalog order.

:class:`CatalogFeed` reads the catalog through :class:`pipelines.catalog.CatalogReader` (one chunk in
memory) and hands the run the items that need work, ``n`` at a time:

- bad rows are written to ``results/`` as the chunk is read (one part per chunk, named after the
  chunk, so a resumed run rewrites the same part instead of adding a second copy);
- items this run already finished (a resumed run: :class:`Finished`) are skipped, their manifest
  entries kept;
- items with attempts but no result (a resumed run) come back with their attempt history, to be
  decided or continued at their next attempt;
- every chunk goes through the run's :class:`pipelines.refresh.ChangeDetector`: in ``refresh`` mode
  items whose content is unchanged since the manifest are skipped; in both modes each item to process
  carries its image identity (listed before its bytes are read) for its manifest row.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.catalog import CatalogItem, CatalogReader
from pipelines.config import GenerateConfig
from pipelines.items import STATE_FIELDS, ItemState, compact
from pipelines.refresh import ChangeDetector, ManifestUpdates
from pipelines.seen import sku_key
from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA, OutputStore, now, to_table

logger = logging.getLogger(__name__)

FINISHED_COLUMNS = ("sku_id", "row", "status", "image", "content_hash", "attempts")


def item_key(sku_id: str, row: int) -> int:
    """A result belongs to an item only if both its ``sku_id`` and its catalog row match."""
    return sku_key(f"{sku_id}\x1f{row}")


class Finished:
    """The result rows this run wrote before the current driver started (a resumed run), looked up by
    ``(sku_id, row)``: the Arrow columns the manifest needs, sorted by a 64-bit key."""

    def __init__(self, table: pa.Table):
        table = table.filter(pc.greater(pc.fill_null(table["attempts"], 0), 0))  # not bad rows
        keys = np.fromiter(
            (
                item_key(s, r)
                for s, r in zip(table["sku_id"].to_pylist(), table["row"].to_pylist(), strict=True)
            ),
            np.uint64,
            len(table),
        )
        order = np.argsort(keys, kind="stable")
        self.keys, self.table = keys[order], table.take(pa.array(order))

    def __len__(self) -> int:
        return len(self.keys)

    def _find(self, skus: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(index into the table, hit)`` per item."""
        keys = np.fromiter((item_key(s, r) for s, r in zip(skus, rows, strict=True)), np.uint64, len(skus))
        if not len(self.keys):
            return np.zeros(len(skus), np.int64), np.zeros(len(skus), bool)
        i = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return i, self.keys[i] == keys

    def contains(self, skus: list[str], rows: list[int]) -> np.ndarray:
        return self._find(skus, rows)[1]

    def lookup(self, items: list[CatalogItem]) -> list[dict[str, Any] | None]:
        """The result row of each item, ``None`` for an unfinished one."""
        i, hit = self._find([it.sku_id for it in items], [it.row for it in items])
        rows = self.table.take(pa.array(i[hit])).to_pylist() if hit.any() else []
        out: list[dict[str, Any] | None] = [None] * len(items)
        for j, row in zip(np.flatnonzero(hit).tolist(), rows, strict=True):
            out[j] = row
        return out


def load_resume(store: OutputStore, run_id: str) -> tuple[Finished, dict[str, dict[int, dict[str, Any]]]]:
    """What an earlier driver of ``run_id`` left: its finished items, and the attempt history of the
    items it had attempted without finishing. Reads the tables a part at a time; only the unfinished
    items' attempts become Python objects."""
    parts = store.iter_parts("results", RESULT_SCHEMA, FINISHED_COLUMNS, run_id=run_id)
    finished = Finished(pa.concat_tables([RESULT_SCHEMA.empty_table().select(FINISHED_COLUMNS), *parts]))
    histories: dict[str, dict[int, dict[str, Any]]] = {}
    for part in store.iter_parts("attempts", ATTEMPT_SCHEMA, ("sku_id", "row", *STATE_FIELDS), run_id=run_id):
        rows = pc.fill_null(part["row"], 0).to_pylist()
        done = finished.contains(part["sku_id"].to_pylist(), rows)
        if done.all():
            continue
        for r in part.filter(pa.array(~done)).to_pylist():
            histories.setdefault(r["sku_id"], {})[int(r["attempt"])] = compact(r)
    return finished, histories


class CatalogFeed:
    """Items needing work, in catalog order, ``n`` at a time (see the module docstring)."""

    def __init__(
        self,
        reader: CatalogReader,
        store: OutputStore,
        cfg: GenerateConfig,
        *,
        run_id: str,
        mode: str,
        config_hash: str,
        finished: Finished,
        histories: dict[str, dict[int, dict[str, Any]]],
        manifest: ManifestUpdates,
        on_bad_rows: Callable[[int], None],
        on_skipped: Callable[[int], None],
    ):
        self.reader, self.store, self.cfg = reader, store, cfg
        self.run_id, self.mode, self.config_hash = run_id, mode, config_hash
        self.finished, self.histories, self.manifest = finished, histories, manifest
        self.on_bad_rows, self.on_skipped = on_bad_rows, on_skipped
        # generate processes every item, but records the image identities the next refresh compares
        self.detector = ChangeDetector(store, cfg, config_hash, process_all=mode == "generate")
        self._chunks = iter(reader)
        self._ready: deque[ItemState] = deque()
        self.exhausted = False
        self.skipped = 0  # refresh: unchanged items
        self.images_read = self.bytes_read = 0  # refresh: images read to decide whether they changed
        self.finished_before = 0  # items of this run finished by an earlier driver

    def take(self, n: int) -> list[ItemState]:
        """Up to ``n`` items needing work (fewer only at the end of the catalog)."""
        while len(self._ready) < n and not self.exhausted:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.exhausted = True
                if self.histories:
                    logger.warning("%d items with attempts are no longer in the catalog", len(self.histories))
            else:
                self._admit(chunk)
        return [self._ready.popleft() for _ in range(min(n, len(self._ready)))]

    def removed(self) -> list[str]:
        """Live manifest items the catalog no longer has (once the whole catalog was read)."""
        return self.detector.removed()

    def _admit(self, chunk) -> None:
        self._write_bad_rows(chunk)
        todo, done = [], []
        for item, result in zip(chunk.items, self.finished.lookup(chunk.items), strict=True):
            (todo if result is None else done).append((item, result))
        if done:  # finished by an earlier session: its manifest row, with the identity known before
            self.finished_before += len(done)
            known = self.detector.known([item for item, _ in done])
            for (item, result), identity in zip(done, known, strict=True):
                self.manifest.add(item, result, identity, earlier_session=True)
        attempted = {
            it.sku_id: self.histories.pop(it.sku_id) for it, _ in todo if it.sku_id in self.histories
        }
        sel = self.detector.select(item for item, _ in todo)
        self.manifest.refreshed.update(sel.refreshed)
        self.images_read += sel.images_read
        self.bytes_read += sel.bytes_read
        if sel.skipped:
            self.skipped += len(sel.skipped)
            self.on_skipped(len(sel.skipped))
        earlier = [it for it in sel.todo if it.sku_id in attempted]
        known = dict(zip((it.sku_id for it in earlier), self.detector.known(earlier), strict=True))
        for item in sel.todo:
            state = ItemState(item)
            state.attempts = attempted.get(item.sku_id, {})
            if item.sku_id in known:  # attempted by an earlier session: its bytes may predate the listing
                state.identity, state.earlier_session = known[item.sku_id], True
            else:
                state.identity = sel.identities.get(item.sku_id)
            self._ready.append(state)

    def _write_bad_rows(self, chunk) -> None:
        if not chunk.errors:
            return
        rows = [
            {
                "run_id": self.run_id,
                "sku_id": e.sku_id,
                "row": e.row,
                "status": "error",
                "error": e.reason,
                "attempts": 0,
                "image": "",
                "p_available": None,
                "label": "",
                "content_hash": "",
                "updated_at": now(),
            }
            for e in chunk.errors
        ]
        name = f"{self.run_id}-catalog-errors-{chunk.index:06d}"
        self.store.write_part("results", name, to_table(rows, RESULT_SCHEMA))
        self.on_bad_rows(len(rows))
