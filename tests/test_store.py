"""The output store's lease (one refresh per store) and table round trips."""

from __future__ import annotations

import json
import time

import pytest

from pipelines.store import RESULT_SCHEMA, LeaseHeld, OutputStore, now, to_table


def test_lease_excludes_a_second_refresh(tmp_path):
    store = OutputStore(str(tmp_path))
    owner = store.acquire_lease(60)
    with pytest.raises(LeaseHeld, match="another refresh holds the lease"):
        OutputStore(str(tmp_path)).acquire_lease(60)
    store.renew_lease(owner, 60)
    store.release_lease(owner)
    assert not (tmp_path / "lease.json").exists()
    OutputStore(str(tmp_path)).acquire_lease(60)  # free again


def test_expired_lease_is_taken_over(tmp_path):
    (tmp_path / "lease.json").write_text(
        json.dumps({"owner": "dead:1", "acquired_at": 0, "expires_at": time.time() - 1})
    )
    store = OutputStore(str(tmp_path))
    owner = store.acquire_lease(60)
    assert json.loads((tmp_path / "lease.json").read_text())["owner"] == owner
    (tmp_path / "lease.json").write_text(
        json.dumps({"owner": "other", "acquired_at": 0, "expires_at": time.time() + 60})
    )
    with pytest.raises(LeaseHeld, match="taken over by other"):
        store.renew_lease(owner, 60)


def test_parts_round_trip_with_schema(tmp_path):
    store = OutputStore(str(tmp_path))
    assert len(store.results()) == 0
    rows = [
        {"run_id": "r", "sku_id": "a", "row": 1, "status": "accepted", "attempts": 2, "updated_at": now()}
    ]
    store.write_part("results", "r-w00001-0001", to_table(rows, RESULT_SCHEMA))
    store.write_part(
        "results", "r-w00002-0002", to_table([{**rows[0], "sku_id": "b", "row": 2}], RESULT_SCHEMA)
    )
    table = store.results()
    assert table.schema == RESULT_SCHEMA and sorted(table["sku_id"].to_pylist()) == ["a", "b"]
    assert not list((tmp_path / "results").glob(".*"))  # no temporary files left behind


def test_retry_policy_backoff_and_permanent_errors(monkeypatch):
    from pipelines import storage

    delays = []
    monkeypatch.setattr(storage.time, "sleep", delays.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("transient")
        return "ok"

    assert storage.with_retries(flaky, what="x", policy=storage.RetryPolicy(retries=3, backoff_s=0.5)) == "ok"
    assert delays == [0.5, 1.0]
    with pytest.raises(storage.StorageError, match="x failed after 2 tries: boom"):
        storage.with_retries(
            lambda: (_ for _ in ()).throw(OSError("boom")), what="x", policy=storage.RetryPolicy(1, 0)
        )
    delays.clear()
    with pytest.raises(FileNotFoundError):  # not retried: another try cannot fix it
        storage.with_retries(lambda: (_ for _ in ()).throw(FileNotFoundError("gone")), what="x")
    assert delays == []


def test_refresh_manifest_selection_and_upsert_without_row_dicts(tmp_path, monkeypatch):
    """select_changed / update_manifest work on the manifest as Arrow data: unchanged usable items
    are skipped, errors and items back from removal are redone, items gone from the catalog are
    marked, and the rows of untouched items are carried over as they were."""
    import pyarrow as pa

    from pipelines import refresh
    from pipelines.catalog import Catalog, CatalogItem
    from pipelines.config import GenerateConfig
    from pipelines.seen import SeenSkus
    from pipelines.store import MANIFEST_SCHEMA

    cfg = GenerateConfig()
    items = {s: CatalogItem(row=i + 1, sku_id=s, image=f"/img/{s}.png") for i, s in enumerate("ABCDE")}
    monkeypatch.setattr(
        refresh, "hash_images", lambda its, _cfg: {it.sku_id: f"bytes-{it.sku_id}" for it in its}
    )

    def h(s: str) -> str:
        return refresh.item_hash(f"bytes-{s}", items[s], "cfg")

    earlier = now()
    earlier = earlier.replace(microsecond=earlier.microsecond // 1000 * 1000)  # stored in ms
    store = OutputStore(str(tmp_path))
    previous = [
        ("A", h("A"), "accepted", False),  # unchanged and usable: skipped
        ("B", "stale", "accepted", False),  # changed: redone
        ("C", h("C"), "error", False),  # failed last time: retried
        ("D", h("D"), "exhausted", True),  # removed earlier, back in the catalog: redone
        ("X", "x", "accepted", False),  # no longer in the catalog: marked removed
        ("Y", "y", "accepted", True),  # removed earlier, still gone: untouched
    ]
    store.write_manifest(
        pa.Table.from_pylist(
            [
                {"sku_id": s, "item_hash": ih, "status": st, "image": f"{s}.png", "run_id": "r0"}
                | {"removed": rm, "updated_at": earlier}
                for s, ih, st, rm in previous
            ],
            schema=MANIFEST_SCHEMA,
        )
    )
    catalog = Catalog(source="c.jsonl", format="jsonl", items=[items[s] for s in "ABCDE"])
    todo, skipped, removed = refresh.select_changed(catalog, store, cfg, "cfg")
    assert [it.sku_id for it in todo] == ["B", "C", "D", "E"] and skipped == ["A"] and removed == ["X"]
    # A streamed catalog knows its ids by their keys (pipelines.seen): the same removals.
    present = SeenSkus()
    present.first_rows(list("ABCDE"), [1, 2, 3, 4, 5])
    assert refresh.removed_items(store, present) == ["X"]

    updates = pa.Table.from_pylist(
        [
            refresh.manifest_entry(
                items[s], {"status": "accepted", "content_hash": f"bytes-{s}", "image": f"new/{s}.png"}, "cfg"
            )
            for s in "BCD"  # E: no result yet
        ]
    )
    refresh.update_manifest(store, updates, removed, "r1")
    rows = {r["sku_id"]: r for r in store.manifest().to_pylist()}
    assert sorted(rows) == ["A", "B", "C", "D", "X", "Y"]
    for s in "BCD":
        assert (rows[s]["item_hash"], rows[s]["status"], rows[s]["run_id"], rows[s]["removed"]) == (
            h(s),
            "accepted",
            "r1",
            False,
        )
    assert rows["X"]["removed"] and rows["X"]["updated_at"] > earlier and rows["X"]["run_id"] == "r0"
    for s in "AY":  # untouched
        assert rows[s]["run_id"] == "r0" and rows[s]["updated_at"] == earlier
    assert rows["Y"]["removed"] and not rows["A"]["removed"]
    # A second selection now skips everything that was redone.
    _, skipped, removed = refresh.select_changed(catalog, store, cfg, "cfg")
    assert skipped == ["A", "B", "C", "D"] and removed == []
