"""The output store: the layout under ``--out`` and how a run's state is recovered from it.

Layout (local or ``s3://``)::

    OUT/images/<sku>/<attempt>.png     every generated image (sku = naming.encode_sku(sku_id))
    OUT/products/<sku>.png             the product as placed on the canvas (RGBA), for reports/labelling
    OUT/attempts/<run>-w<wave>-<session>-<part>.parquet   one row per attempt       (ATTEMPT_SCHEMA)
    OUT/results/<run>-w<wave>-<session>-<part>.parquet    one row per catalog item per run (RESULT_SCHEMA)
    OUT/results/<run>-catalog-errors-<chunk>.parquet      the catalog's bad rows, per catalog chunk
    OUT/manifest.parquet               latest state per sku_id (content hash, status, removed flag)
    OUT/state.json                     the current run: id, mode, config hash, status
    OUT/lease.json                     held while a refresh runs (one refresh per store at a time)
    OUT/run.json, OUT/report.html      the latest run's summary and the page for people
    OUT/runs/<run>/run.json, report.html   every run's own copy (the history)

Every table file is written once, atomically, under a fresh name; nothing is appended in place, so a
killed run leaves only whole files behind. The state of a run is *derived* from ``attempts/`` and
``results/`` (never from memory): a rerun with the same ``--out`` reads them back and continues.
Readers of large runs take the tables a part file at a time (:meth:`OutputStore.iter_parts`).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.labels import LABELS

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
    ]
)

STATUSES = ("accepted", "exhausted", "generated", "error")


def now() -> datetime:
    return datetime.now(UTC)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types (missing columns null)."""
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(len(table), f.type))
    return table.select(schema.names).cast(schema)


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> table with exactly ``schema``'s columns (missing values null, extra keys dropped)."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


class LeaseHeld(RuntimeError):
    """Another process holds the store's lease."""


@dataclass
class OutputStore:
    root: str
    policy: storage.RetryPolicy = storage.DEFAULT_RETRY

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
        return storage.read_parquet(uri).select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)

    def write_manifest(self, table: pa.Table) -> None:
        storage.write_parquet(self.path("manifest.parquet"), table, policy=self.policy)

    # --- lease -------------------------------------------------------------------------------------
    def acquire_lease(self, ttl_s: float, *, owner: str | None = None) -> str:
        """Take the store's lease for ``ttl_s`` seconds or raise :class:`LeaseHeld`.

        Local stores create the lease file exclusively (atomic). On S3 the lease is written and read
        back; two writers racing within the same second can both believe they won, which the refresh
        job narrows further by re-checking ownership before every table write (:meth:`check_lease`).
        """
        owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        uri = self.path("lease.json")
        current = self._read_lease()
        if current and current["expires_at"] > time.time() and current["owner"] != owner:
            raise LeaseHeld(
                f"another refresh holds the lease on {self.root} (owner {current['owner']}, "
                f"expires in {current['expires_at'] - time.time():.0f} s); wait for it to finish, or delete "
                f"{uri} if that process is gone"
            )
        lease = {"owner": owner, "acquired_at": time.time(), "expires_at": time.time() + ttl_s}
        if not storage.is_remote(uri) and current is None:
            os.makedirs(os.path.dirname(uri), exist_ok=True)
            try:
                fd = os.open(uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return self.acquire_lease(ttl_s, owner=owner)
            with os.fdopen(fd, "w") as f:
                json.dump(lease, f)
        else:
            storage.write_text(uri, json.dumps(lease))
        self.check_lease(owner)
        return owner

    def check_lease(self, owner: str) -> None:
        current = self._read_lease()
        if not current or current["owner"] != owner:
            raise LeaseHeld(f"the lease on {self.root} was taken over by {current and current['owner']}")

    def renew_lease(self, owner: str, ttl_s: float) -> None:
        self.check_lease(owner)
        lease = {"owner": owner, "acquired_at": time.time(), "expires_at": time.time() + ttl_s}
        storage.write_text(self.path("lease.json"), json.dumps(lease))

    def release_lease(self, owner: str) -> None:
        current = self._read_lease()
        if current and current["owner"] == owner:
            fs, path = storage.filesystem(self.path("lease.json"))
            fs.rm(path)

    def _read_lease(self) -> dict[str, Any] | None:
        uri = self.path("lease.json")
        try:
            return json.loads(storage.read_bytes(uri, policy=storage.NO_RETRY))
        except FileNotFoundError:
            return None
        except (storage.StorageError, json.JSONDecodeError):
            return None
