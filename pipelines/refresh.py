"""Incremental refresh: process only new or changed catalog items, mark removed ones.

An item is **unchanged** when its last result is usable (``accepted``, ``exhausted``,
``generated``; items whose last status was ``error`` are always retried), its row hash matches (the
row's fields: image path, prompt, caption, scale, seed; and the output-relevant config,
``GenerateConfig.config_hash``), and its image is the same bytes. The image is compared without
reading it wherever possible, in this order:

1. the catalog's ``image_sha256`` column, if the row has one, against the digest stored last time;
2. the listing metadata: size and version (S3 ETag, local inode + mtime) from ONE listing per image
   directory (:func:`pipelines.storage.list_versions`), against the ones stored last time. The
   same size and version: unchanged, nothing read. Another size: changed, nothing read;
3. otherwise (same size, another version: a re-upload or a touched file; a directory that cannot be
   listed; a manifest written before these columns existed) the image's bytes are read and hashed,
   and the SHA-256 decides. An image whose bytes turn out unchanged is skipped, and its new listing
   metadata is stored, so the next refresh does not read it again.

So a refresh reads the bytes of new and changed images only (in the prepare stage, as any run does),
plus images whose metadata changed with the same size. Changed images of the same size are read
twice (here, then by prepare).

**Why the stored metadata can be trusted.** The identity stored for an item is the listing made
*before* its bytes were read in the run that processed it, so a file that changes after the listing
shows a new version next time, never an old one; stale metadata can only cost a read, not hide a
change. A resumed run does not know when an earlier session read an item's bytes: an item with
attempts from an earlier session keeps the listing metadata its manifest row had for the same
digest, or gets none (the next refresh hashes it once).

:class:`ChangeDetector` works chunk by chunk as the catalog streams (:mod:`pipelines.feed`): it holds
the manifest (Arrow), a ``sku_id -> row`` index, a seen-flag per manifest row and the listings of the
image directories met so far (about 150 bytes per listed file); nothing per catalog item beyond that.
:func:`select_changed` runs it over a whole catalog. The run adds each finished item's manifest row to
:class:`ManifestUpdates` (Arrow every 8,192 rows) and :func:`update_manifest` writes the outcome.
``manifest.parquet`` (``MANIFEST_SCHEMA``) keeps the latest state per ``sku_id``; items that left the
catalog are marked ``removed=True`` (nothing is deleted). The lease that keeps two refreshes off one
store is in :mod:`pipelines.lease`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.catalog import Catalog, CatalogItem
from pipelines.config import GenerateConfig
from pipelines.store import MANIFEST_SCHEMA, OutputStore, now, to_table

logger = logging.getLogger(__name__)

REUSABLE = ("accepted", "exhausted", "generated")
DIGEST_CHARS = 16  # content hashes are compared on the first 16 hex digits of the SHA-256 (64 bits)
HASH_THREADS = 16  # concurrent image reads when bytes must be hashed (I/O bound)


def item_hash(bytes_hash: str, item: CatalogItem, config_hash: str) -> str:
    """Image bytes + row + config: the one hash manifests written before ``row_hash`` existed hold."""
    return hashlib.sha256(f"{bytes_hash}|{item.fields_hash()}|{config_hash}".encode()).hexdigest()[:16]


def row_hash(item: CatalogItem, config_hash: str) -> str:
    """Row fields + output-relevant config, without the image."""
    return hashlib.sha256(f"{item.fields_hash()}|{config_hash}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ImageIdentity:
    """What identifies an item's image: listing metadata (``size``, ``version``) and/or ``sha256``
    (the first :data:`DIGEST_CHARS` hex digits of the bytes' SHA-256). ``None``: unknown."""

    size: int | None = None
    version: str | None = None
    sha256: str | None = None


@dataclass
class Selection:
    """What a refresh does with a set of catalog items.

    ``identities``: the image identity of every item to process, as listed *before* its bytes are
    read (stored in the manifest once it is processed). ``refreshed``: skipped items whose stored
    comparison columns are out of date (new metadata but the same bytes, or a manifest row written
    before ``row_hash`` existed): ``sku_id -> {manifest column: value}``, written with the manifest
    so the next refresh does not read them again. ``removed``: manifest items missing from the
    catalog (set once the whole catalog was seen: :meth:`ChangeDetector.removed`).
    """

    todo: list[CatalogItem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    identities: dict[str, ImageIdentity] = field(default_factory=dict)
    refreshed: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    images_read: int = 0  # images whose bytes were read to decide
    bytes_read: int = 0

    def extend(self, other: Selection) -> None:
        """Add the selection of a later chunk of the same catalog."""
        self.todo += other.todo
        self.skipped += other.skipped
        self.identities.update(other.identities)
        self.refreshed.update(other.refreshed)
        self.removed += other.removed
        self.images_read += other.images_read
        self.bytes_read += other.bytes_read


class ChangeDetector:
    """Decides which catalog items a refresh must process, one chunk of items at a time.

    ``select(chunk)`` for every chunk, in any order, then ``removed()``. ``process_all=True``
    (a ``generate`` run) selects every item but still records its listing identity, so the first
    refresh after a catalog run reads nothing that did not change.
    """

    def __init__(
        self, store: OutputStore, cfg: GenerateConfig, config_hash: str, *, process_all: bool = False
    ):
        self.cfg, self.config_hash, self.process_all = cfg, config_hash, process_all
        manifest = store.manifest()
        live = pc.invert(manifest["removed"].fill_null(False))
        self.manifest = manifest.filter(live)  # removed rows: treated as new if they come back
        self.index = {sku: i for i, sku in enumerate(self.manifest["sku_id"].to_pylist())}
        self.seen = np.zeros(len(self.manifest), bool)
        self.listings: dict[str, dict[str, storage.FileVersion] | None] = {}

    def select(self, items: Iterable[CatalogItem]) -> Selection:
        sel = Selection()
        items = list(items)
        rows = self._previous(items)
        to_hash: list[tuple[CatalogItem, dict[str, Any], storage.FileVersion | None]] = []
        for item, prev in zip(items, rows, strict=True):
            listed = self._listed(item.image)
            given = item.image_sha256[:DIGEST_CHARS] if item.image_sha256 else None
            identity = (
                ImageIdentity(listed.size, listed.version, given) if listed else ImageIdentity(sha256=given)
            )
            verdict = "changed" if self.process_all else self._compare(item, prev, listed, given)
            if verdict == "read":
                to_hash.append((item, prev, listed))
            elif verdict in ("same", "same-refresh"):
                sel.skipped.append(item.sku_id)
                if verdict == "same-refresh":
                    sel.refreshed[item.sku_id] = self._columns(item, identity)
            else:
                sel.todo.append(item)
                sel.identities[item.sku_id] = identity
        for (item, prev, listed), digest, n in zip(
            to_hash, *self._hash([it for it, _, _ in to_hash]), strict=True
        ):
            sel.images_read += digest is not None
            sel.bytes_read += n
            identity = (
                ImageIdentity(listed.size, listed.version, digest) if listed else ImageIdentity(sha256=digest)
            )
            if digest is not None and self._same_bytes(item, prev, digest):
                sel.skipped.append(item.sku_id)
                sel.refreshed[item.sku_id] = self._columns(item, identity)
            else:  # changed, or unreadable now (the run records the precise error)
                sel.todo.append(item)
                sel.identities[item.sku_id] = ImageIdentity(identity.size, identity.version)
        return sel

    def known(self, items: list[CatalogItem]) -> list[ImageIdentity]:
        """The image identity the manifest holds for each item (empty for a new one), marking it as
        seen: for items a resumed run does not select again (finished, or attempted, by an earlier
        session of the run)."""
        return [
            ImageIdentity(p["image_size"], p["image_version"], p["image_sha256"]) if p else ImageIdentity()
            for p in self._previous(items)
        ]

    def removed(self) -> list[str]:
        """``sku_id`` of live manifest items that no chunk contained."""
        return self.manifest["sku_id"].filter(pa.array(~self.seen)).to_pylist()

    # --- pieces ------------------------------------------------------------------------------------
    def _previous(self, items: list[CatalogItem]) -> list[dict[str, Any] | None]:
        """The manifest row of each item (``None`` if new), marking the rows as seen."""
        positions = [self.index.get(it.sku_id) for it in items]
        found = [p for p in positions if p is not None]
        self.seen[found] = True
        taken = iter(self.manifest.take(pa.array(found, pa.int64())).to_pylist())
        return [next(taken) if p is not None else None for p in positions]

    def _listed(self, uri: str) -> storage.FileVersion | None:
        directory, _, name = uri.rpartition("/")
        if directory not in self.listings:
            self.listings[directory] = storage.list_versions(directory)
        listing = self.listings[directory]
        return listing.get(name) if listing is not None else None

    def _compare(
        self,
        item: CatalogItem,
        prev: dict[str, Any] | None,
        listed: storage.FileVersion | None,
        given: str | None,
    ) -> str:
        """``changed``, ``same``, ``same-refresh`` (same, but store the new identity) or ``read``."""
        if prev is None or prev["status"] not in REUSABLE:
            return "changed"
        current_row = row_hash(item, self.config_hash)
        if prev["row_hash"] and prev["row_hash"] != current_row:
            return "changed"
        up_to_date = prev["row_hash"] == current_row
        if given is not None:
            if not self._same_bytes(item, prev, given):
                return "changed"
            stored = (prev["image_size"], prev["image_version"], prev["image_sha256"])
            fresh = listed is None or stored == (listed.size, listed.version, given)
            return "same" if up_to_date and fresh else "same-refresh"
        if listed is None:
            # Not in the listing: gone (prepare records "image not found"), or unlistable: read it.
            return "read" if self.listings.get(item.image.rpartition("/")[0]) is None else "changed"
        if prev["image_size"] is not None and prev["image_version"]:
            if listed.size != prev["image_size"]:
                return "changed"
            if listed.version == prev["image_version"]:
                return "same" if up_to_date else "same-refresh"
        return "read"

    def _columns(self, item: CatalogItem, identity: ImageIdentity) -> dict[str, Any]:
        return {
            "row_hash": row_hash(item, self.config_hash),
            "image_size": identity.size,
            "image_version": identity.version,
            "image_sha256": identity.sha256,
        }

    def _same_bytes(self, item: CatalogItem, prev: dict[str, Any], digest: str) -> bool:
        if prev["image_sha256"]:
            return prev["image_sha256"] == digest
        return bool(prev["item_hash"]) and prev["item_hash"] == item_hash(digest, item, self.config_hash)

    def _hash(self, items: list[CatalogItem]) -> tuple[list[str | None], list[int]]:
        """Digest (``None`` if unreadable or over ``prepare.max_file_bytes``) and bytes read, per item."""
        policy, limit = self.cfg.storage.policy(), self.cfg.prepare.max_file_bytes

        def one(item: CatalogItem) -> tuple[str | None, int]:
            listed = self._listed(item.image)
            if listed is not None and listed.size > limit:
                return None, 0
            try:
                digest, n = storage.sha256_file(item.image, policy=policy)
            except (OSError, ValueError):
                return None, 0
            return digest[:DIGEST_CHARS], n

        if not items:
            return [], []
        with ThreadPoolExecutor(min(HASH_THREADS, len(items))) as pool:
            out = list(pool.map(one, items))
        return [d for d, _ in out], [n for _, n in out]


def select_changed(
    catalog: Catalog, store: OutputStore, cfg: GenerateConfig, config_hash: str, *, process_all: bool = False
) -> Selection:
    """The :class:`Selection` for a whole catalog (``removed`` included); see :class:`ChangeDetector`."""
    detector = ChangeDetector(store, cfg, config_hash, process_all=process_all)
    sel = detector.select(catalog.items)
    if not process_all:
        sel.removed = detector.removed()
        logger.info(
            "refresh: %d new or changed, %d unchanged, %d removed; %d images read to decide (%d bytes), "
            "%d image directories listed",
            len(sel.todo),
            len(sel.skipped),
            len(sel.removed),
            sel.images_read,
            sel.bytes_read,
            len(detector.listings),
        )
    return sel


MANIFEST_UPDATE_SCHEMA = pa.schema(
    [f for f in MANIFEST_SCHEMA if f.name not in ("run_id", "removed", "updated_at")]
)


def manifest_entry(
    item: CatalogItem,
    result: Mapping[str, Any],
    config_hash: str,
    identity: ImageIdentity | None = None,
    *,
    earlier_session: bool = False,
) -> dict[str, Any]:
    """The manifest row (:data:`MANIFEST_UPDATE_SCHEMA`) of an item the run finished.

    ``identity``: the image's identity as listed before this session read its bytes (the
    :class:`Selection`'s), or, for an item with attempts from an ``earlier_session`` of a resumed run,
    the identity its manifest row had (:meth:`ChangeDetector.known`): kept only if it is of the same
    digest, since this session's listing may be newer than the bytes the item was made from.
    """
    identity = identity or ImageIdentity()
    read = result.get("content_hash") or ""
    given = item.image_sha256[:DIGEST_CHARS] if item.image_sha256 else None
    digest = given or read  # the catalog's word is what the next refresh compares against
    if earlier_session and not (digest and identity.sha256 == digest):
        identity = ImageIdentity()
    return {
        "sku_id": item.sku_id,
        "item_hash": item_hash(digest, item, config_hash) if digest else "",
        "status": result["status"],
        "image": result.get("image") or "",
        "row_hash": row_hash(item, config_hash),
        "image_size": identity.size,
        "image_version": identity.version,
        "image_sha256": digest or None,
    }


class ManifestUpdates:
    """What a run changes in the manifest: a row per finished item (:func:`manifest_entry`, turned
    into Arrow every ``flush_rows`` rows), the new comparison columns of skipped items
    (``refreshed``, from :class:`Selection`) and the items gone from the catalog (``removed``)."""

    def __init__(self, config_hash: str, flush_rows: int = 8192):
        self.config_hash, self.flush_rows = config_hash, flush_rows
        self.rows: list[dict[str, Any]] = []
        self.tables: list[pa.Table] = []
        self.refreshed: dict[str, dict[str, Any]] = {}
        self.removed: list[str] = []
        self.mismatched = 0  # items whose catalog image_sha256 is not the digest of the bytes read

    def add(
        self,
        item: CatalogItem,
        result: Mapping[str, Any],
        identity: ImageIdentity | None = None,
        *,
        earlier_session: bool = False,
    ) -> None:
        read = result.get("content_hash") or ""
        self.mismatched += bool(item.image_sha256 and read and read != item.image_sha256[:DIGEST_CHARS])
        entry = manifest_entry(item, result, self.config_hash, identity, earlier_session=earlier_session)
        self.rows.append(entry)
        if len(self.rows) >= self.flush_rows:
            self.tables.append(to_table(self.rows, MANIFEST_UPDATE_SCHEMA))
            self.rows = []

    def table(self) -> pa.Table:
        return pa.concat_tables([*self.tables, to_table(self.rows, MANIFEST_UPDATE_SCHEMA)])


def update_manifest(store: OutputStore, updates: ManifestUpdates, run_id: str) -> None:
    """Upsert the finished items' rows, refresh the comparison columns of skipped ones, mark removed
    ones; written atomically. Rows of untouched items are carried over as Arrow data."""
    manifest = store.manifest()
    stamp = now()
    if updates.mismatched:
        logger.warning(
            "%d items' image_sha256 in the catalog does not match the image bytes read; refresh trusts "
            "the catalog's value (fix the column, or drop it to compare listing metadata)",
            updates.mismatched,
        )
    entries = updates.table()
    n = len(entries)
    stamp_type = MANIFEST_SCHEMA.field("updated_at").type
    updated = entries.append_column("run_id", pa.array([run_id] * n, pa.string()))
    updated = updated.append_column("removed", pa.array([False] * n, pa.bool_()))
    updated = updated.append_column("updated_at", pa.array([stamp] * n, stamp_type))
    updated = updated.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    kept = manifest.filter(
        pc.invert(pc.is_in(manifest["sku_id"], value_set=updated["sku_id"].combine_chunks()))
    )
    kept = _refresh_columns(kept, updates.refreshed)
    gone = pc.is_in(kept["sku_id"], value_set=pa.array(updates.removed, pa.string()))
    stamped = pc.if_else(gone, pa.scalar(stamp, stamp_type), kept["updated_at"])
    kept = kept.set_column(kept.schema.get_field_index("removed"), "removed", pc.or_(kept["removed"], gone))
    kept = kept.set_column(kept.schema.get_field_index("updated_at"), "updated_at", stamped)
    store.write_manifest(pa.concat_tables([kept, updated]))


def _refresh_columns(kept: pa.Table, refreshed: Mapping[str, dict[str, Any]]) -> pa.Table:
    """``kept`` with the comparison columns of ``refreshed`` items replaced (status and run kept)."""
    positions = [i for i, s in enumerate(kept["sku_id"].to_pylist()) if s in refreshed] if refreshed else []
    if not positions:
        return kept
    rows = kept.take(pa.array(positions, pa.int64())).to_pylist()
    for row in rows:
        row.update(refreshed[row["sku_id"]])
    mask = np.ones(len(kept), bool)
    mask[positions] = False
    return pa.concat_tables([kept.filter(pa.array(mask)), pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)])
