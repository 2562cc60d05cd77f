"""The output store's lease (one refresh per store) and table round trips."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pipelines import lease
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


def test_expired_lease_is_taken_over_and_its_holder_stops(tmp_path):
    stalled = OutputStore(str(tmp_path))
    owner = stalled.acquire_lease(0.01)  # expires at once: its holder stalls past it
    time.sleep(0.05)
    store = OutputStore(str(tmp_path))
    new_owner = store.acquire_lease(60)
    assert json.loads((tmp_path / "lease.json").read_text())["owner"] == new_owner
    with pytest.raises(LeaseHeld, match=f"taken over by {new_owner}"):
        stalled.renew_lease(owner, 60)
    stalled.release_lease(owner)  # not its lease any more: left alone
    assert json.loads((tmp_path / "lease.json").read_text())["owner"] == new_owner
    (tmp_path / "lease.json").write_text("{not json")  # a torn or foreign file counts as expired
    OutputStore(str(tmp_path)).acquire_lease(60)


def race(stores: list[OutputStore]) -> list[OutputStore]:
    """Every store tries to take the lease (for a minute) at the same moment; the stores that got it
    (every other store must have been refused)."""
    barrier = threading.Barrier(len(stores))
    won: list[OutputStore] = []
    refused: list[str] = []

    def take(store: OutputStore) -> None:
        barrier.wait()
        try:
            store.acquire_lease(60)
            won.append(store)
        except LeaseHeld as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=take, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) + len(refused) == len(stores)
    assert all("another refresh holds the lease" in r for r in refused), refused
    return won


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_lease_races_have_exactly_one_winner(where, tmp_path, request):
    """Eight processes' worth of stores race for a free lease, then for an expired one: each time
    exactly one takes it (S3: conditional PUT with If-None-Match / If-Match; local: link + flock)."""
    if where == "s3":
        request.getfixturevalue("s3_server").bucket("lease-race")
        root = "s3://lease-race/out"
    else:
        root = str(tmp_path / "out")
    for _ in range(5):  # a free lease
        (winner,) = race([OutputStore(root) for _ in range(8)])
        winner.release_lease(winner._lease.owner)
        assert lease.read(winner.path("lease.json")) is None
    winner = OutputStore(root)
    winner.acquire_lease(60)
    for _ in range(5):  # an expired one: the holder's lease is made to have expired a second ago
        lease.renew(winner._lease, -1.0)
        (winner,) = race([OutputStore(root) for _ in range(8)])


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
