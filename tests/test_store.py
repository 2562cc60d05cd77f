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
