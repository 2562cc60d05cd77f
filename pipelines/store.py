"""The output store: the layout under ``--out`` and how a run's state is recovered from it.

Layout (local or ``s3://``)::

    OUT/images/<sku>/<attempt>.png     every generated image (sku = naming.encode_sku(sku_id))
    OUT/products/<sku>.png             the product as placed on the canvas (RGBA), for reports/labelling
    OUT/attempts/<run>-w<wave>-<session>-<part>.parquet   one row per attempt       (ATTEMPT_SCHEMA)
    OUT/results/<run>-w<wave>-<session>-<part>.parquet    one row per catalog item per run (RESULT_SCHEMA)
    OUT/results/<run>-catalog-errors-<chunk>.parquet      the catalog's bad rows, per catalog chunk
    OUT/manifest.parquet               latest state per sku_id: status, removed flag, and what refresh
                                       compares (row hash, image size/version/content hash)
    OUT/state.json                     the current run: id, mode, config hash, status
    OUT/lease.json                     held while a refresh runs (one refresh per store at a time;
                                       pipelines.lease)
    OUT/run.json, OUT/report.html      the latest run's summary and the page for people
    OUT/runs/<run>/run.json, report.html   every run's own copy (the history)

Every table file is written once, atomically, under a fresh name; nothing is appended in place, so a
killed run leaves only whole files behind. The state of a run is *derived* from ``attempts/`` and
``results/`` (never from memory): a rerun with the same ``--out`` reads them back and continues.
Readers of large runs take the tables a part file at a time (:meth:`OutputStore.iter_parts`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import lease, storage
from pipelines.labels import LABELS
from pipelines.lease import LeaseHeld

PROB_COLUMNS = tuple(f"prob_{name}" for name in LABELS)

ATTEMPT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("sku_id", pa.string()),
        ("row", pa.int64()),
        ("attempt", pa.int32()),
        ("seed", pa.int64()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("template", pa.int32()),
        ("color", pa.string()),
        ("image_scale", pa.float32()),
        ("steer", pa.string()),
        ("caption", pa.string()),
        ("source_image", pa.string()),
        ("content_hash", pa.string()),
        ("base_model", pa.string()),
        ("base_revision", pa.string()),
        ("controlnet_model", pa.string()),
        ("controlnet_revision", pa.string()),
        ("lora", pa.string()),
        ("rfnet_model", pa.string()),
        ("config_hash", pa.string()),
        *[(c, pa.float32()) for c in PROB_COLUMNS],
        ("label", pa.string()),
        ("p_available", pa.float32()),
        ("threshold", pa.float32()),
        ("accepted", pa.bool_()),
        ("error", pa.string()),
        ("prepare_s", pa.float32()),
        ("generate_s", pa.float32()),
        ("inspect_s", pa.float32()),
        ("write_s", pa.float32()),
        ("image", pa.string()),
        ("product", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
    ]
)

RESULT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("sku_id", pa.string()),
        ("row", pa.int64()),
        ("status", pa.string()),  # accepted | exhausted | generated | error
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("image", pa.string()),
        ("p_available", pa.float32()),
        ("label", pa.string()),
        ("content_hash", pa.string()),
        ("updated_at", pa.timestamp("ms", tz="UTC")),
    ]
)

MANIFEST_SCHEMA = pa.schema(
    [
        ("sku_id", pa.string()),
        ("item_hash", pa.string()),  # content hash: image bytes + row fields + output-relevant config
        ("status", pa.string()),
        ("image", pa.string()),
        ("run_id", pa.string()),
        ("removed", pa.bool_()),
        ("updated_at", pa.timestamp("ms", tz="UTC")),
        # What the next refresh compares (pipelines.refresh); null in manifests written before they existed.
        ("row_hash", pa.string()),  # row fields + output-relevant config, without the image
        ("image_size", pa.int64()),  # the image's size in bytes, as listed before it was read
        ("image_version", pa.string()),  # S3 ETag or local "<inode>-<mtime ns>", listed before the read
        ("image_sha256", pa.string()),  # first 16 hex digits of the SHA-256 of the image's bytes
    ]
)

STATUSES = ("accepted", "exhausted", "generated", "error")


def now() -> datetime:
    return datetime.now(UTC)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types: columns it lacks (files written before
    they existed) are added as nulls."""
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(len(table), f.type))
    return table.select(schema.names).cast(schema)


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> table with exactly ``schema``'s columns (missing values null, extra keys dropped)."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


@dataclass
class OutputStore:
    root: str
    policy: storage.RetryPolicy = storage.DEFAULT_RETRY
    _lease: lease.Lease | None = field(default=None, init=False, repr=False)

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    # --- run state -------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        uri = self.path("state.json")
        if not storage.exists(uri):
            return None
        return json.loads(storage.read_bytes(uri))

    def write_state(self, state: dict[str, Any]) -> None:
        storage.write_text(self.path("state.json"), json.dumps(state, indent=2), policy=self.policy)

    # --- tables ----------------------------------------------------------------------------------
    def write_part(self, table_dir: str, name: str, table: pa.Table) -> str:
        uri = self.path(table_dir, f"{name}.parquet")
        storage.write_parquet(uri, table, policy=self.policy)
        return uri

    def read_table(self, table_dir: str, schema: pa.Schema) -> pa.Table:
        table = storage.read_parquet_dir(self.path(table_dir))
        if table is None:
            return schema.empty_table()
        return conform(table, schema)

    def iter_parts(
        self,
        table_dir: str,
        schema: pa.Schema,
        columns: tuple[str, ...] | list[str] | None = None,
        run_id: str | None = None,
    ) -> Iterator[pa.Table]:
        """The table's part files one at a time, as ``schema`` (only ``columns``; only the rows of
        ``run_id``): what a reader of a million-item run holds is one part, not the table."""
        names = list(columns) if columns is not None else schema.names
        wanted = pa.schema([schema.field(c) for c in names])
        read = names if run_id is None or "run_id" in names else [*names, "run_id"]
        for uri in storage.list_files(self.path(table_dir), ".parquet"):
            part = storage.read_parquet(uri, read)
            if run_id is not None:
                part = part.filter(pc.equal(part["run_id"], run_id))
            yield conform(part, wanted)

    def attempts(self) -> pa.Table:
        return self.read_table("attempts", ATTEMPT_SCHEMA)

    def results(self) -> pa.Table:
        return self.read_table("results", RESULT_SCHEMA)

    def manifest(self) -> pa.Table:
        uri = self.path("manifest.parquet")
        if not storage.exists(uri):
            return MANIFEST_SCHEMA.empty_table()
        return conform(storage.read_parquet(uri), MANIFEST_SCHEMA)

    def write_manifest(self, table: pa.Table) -> None:
        storage.write_parquet(self.path("manifest.parquet"), table, policy=self.policy)

    # --- lease (pipelines.lease) ------------------------------------------------------------------
    def acquire_lease(self, ttl_s: float, *, owner: str | None = None) -> str:
        """Take the store's lease for ``ttl_s`` seconds (returns the owner id) or raise :class:`LeaseHeld`."""
        self._lease = lease.acquire(self.path("lease.json"), ttl_s, owner=owner)
        return self._lease.owner

    def renew_lease(self, owner: str, ttl_s: float) -> None:
        """Extend the lease this store object took, or raise :class:`LeaseHeld` if it was taken over."""
        if self._lease is None or self._lease.owner != owner:
            raise LeaseHeld(f"{owner} does not hold the lease on {self.root} through this store")
        lease.renew(self._lease, ttl_s)

    def release_lease(self, owner: str) -> None:
        if self._lease is not None and self._lease.owner == owner:
            lease.release(self._lease)
            self._lease = None
