"""Failure injection on a local Ray: a crash costs retries, never items (DESIGN.md section 5).

- a generation actor SIGKILLed mid-wave: Ray restarts it and retries its batch; the run completes
  with every item once in ``results/`` and no ``(sku_id, attempt)`` twice in ``attempts/``;
- the driver SIGKILLed mid-run and the same command run again: it resumes the same run, keeps the
  attempts written before the kill and regenerates none of them;
- transient write errors (``storage.inject_write_failures``): within ``storage.retries`` nothing shows;
  beyond them the attempt becomes an error row "write failed: ...", the item is retried within
  ``max_attempts`` and ends ``error`` with the reason, never missing;
- a head and two worker nodes, each worker with one unit of a custom resource standing in for a GPU:
  the generation pool asks one unit per actor and lands one actor on each worker.

Runs use the tiny preset without inspection (the generation pool is what fails here) and batches of
one, so a wave has many batches and a kill lands mid-wave.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
from ray.util.state import get_actor, list_actors

from pipelines.config import ConfigError, GenerateConfig, load_config
from pipelines.runner import run_catalog
from rfnet.data.sample import write_sample_catalog
from rfnet.scorer import ScoreStage

pytestmark = [pytest.mark.ray]

BIN = Path(sys.executable).parent
GENERATION_ACTOR = (
    "GenerateStage"  # Ray Data names the pool's actors MapWorker(...->MapBatches(GenerateStage))
)


def read_dir(path: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(path.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def catalog_skus(catalog: Path) -> set[str]:
    return {json.loads(line)["sku_id"] for line in catalog.read_text().splitlines() if line.strip()}


def tiny_config(catalog: Path, out: Path, **overrides: Any) -> GenerateConfig:
    values = {
        "catalog": str(catalog),
        "out": str(out),
        "inspect.enabled": False,
        "retry.max_attempts": 1,
        "generation.batch_size": 1,
        "run.prepare_batch_size": 1,  # also the write batch: rows reach the driver one by one
        "run.flush_interval_s": 1.0,
        "run.progress_interval_s": 5.0,
        **overrides,
    }
    return load_config(GenerateConfig, preset="tiny", overrides=values)


def assert_complete(out: Path, skus: set[str]) -> tuple[list[dict], list[dict]]:
    """Every catalog item exactly once in results/, every (sku_id, attempt) once in attempts/."""
    results, attempts = read_dir(out / "results"), read_dir(out / "attempts")
    assert Counter(r["sku_id"] for r in results) == Counter(skus)
    keys = Counter((a["sku_id"], a["attempt"]) for a in attempts)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    for r in results:
        assert r["attempts"] == sum(1 for a in attempts if a["sku_id"] == r["sku_id"])
    return results, attempts


def generation_actors(**filters: str) -> list:
    # The connected cluster's address, explicitly: the default looks up the last `ray start`ed one.
    address = ray.get_runtime_context().gcs_address
    found = list_actors(
        address=address, filters=[(k, "=", v) for k, v in filters.items()], detail=True, limit=1000
    )
    return [a for a in found if GENERATION_ACTOR in (a.class_name or "")]


# ----------------------------------------------------------------------------------------------------
# A generation actor killed mid-wave.


@pytest.mark.slow
def test_generation_actor_killed_mid_run(ray_cluster, tmp_path):
    catalog = write_sample_catalog(tmp_path / "catalog", items=6)
    skus = catalog_skus(catalog)
    out = tmp_path / "out"
    cfg = tiny_config(catalog, out)
    killed: dict[str, Any] = {}
    done = threading.Event()

    def kill_once_busy() -> None:
        # Wait until the actor has written at least one image (it is mid-wave), then SIGKILL it.
        while not done.is_set():
            images = list(out.glob("images/*/*.png"))
            if images:
                alive = generation_actors(state="ALIVE")
                if alive:
                    actor = alive[0]
                    killed.update(actor_id=actor.actor_id, pid=actor.pid, images_before=len(images))
                    os.kill(actor.pid, signal.SIGKILL)
                    return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_once_busy, daemon=True)
    killer.start()
    try:
        summary = run_catalog(cfg, inspect_stage=ScoreStage)
    finally:
        done.set()
        killer.join(timeout=30)

    assert killed, "the generation actor was never seen alive while the run wrote images"
    assert killed["images_before"] < len(skus), "the kill came after all work was done"
    assert (
        get_actor(killed["actor_id"], address=ray.get_runtime_context().gcs_address).num_restarts >= 1
    )  # Ray restarted it; its batch was retried
    results, attempts = assert_complete(out, skus)
    # max_attempts is 1: a lost batch would have become an error row, so every item generated means
    # the crash cost a retry of the batch, not an item.
    assert {r["status"] for r in results} == {"generated"}, results
    assert all(a["error"] == "" and Path(a["image"]).is_file() for a in attempts)
    assert summary.counts["generated"] == len(skus)


# ----------------------------------------------------------------------------------------------------
# The driver killed mid-run and the job submitted again.


def start_driver(catalog: Path, out: Path, gcs_address: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": gcs_address, "RAY_AUTH_MODE": "disabled"}
    cmd = [
        str(BIN / "reliable-ad"), "generate", "--preset", "tiny", "--no-inspect",
        "--catalog", str(catalog), "--out", str(out), "--max-attempts", "1", "--batch-size", "1",
        "--set", "run.prepare_batch_size=1", "--set", "run.flush_interval_s=1", "--set", "run.progress_interval_s=5",
    ]  # fmt: skip
    with log.open("a") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_driver_killed_and_resubmitted_resumes(ray_cluster, tmp_path):
    catalog = write_sample_catalog(tmp_path / "catalog", items=10)
    skus = catalog_skus(catalog)
    out, log = tmp_path / "out", tmp_path / "driver.log"

    driver = start_driver(catalog, out, ray_cluster.gcs_address, log)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("attempts/*.parquet")):
            assert driver.poll() is None, (
                f"the driver ended before writing attempts:\n{log.read_text()[-4000:]}"
            )
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    killed_at = time.time()
    before = {(a["sku_id"], a["attempt"]): a for a in read_dir(out / "attempts")}
    finished_before = {r["sku_id"] for r in read_dir(out / "results")}
    assert before and len(finished_before) < len(skus), "the kill came after all work was done"

    resumed = start_driver(catalog, out, ray_cluster.gcs_address, log)
    assert resumed.wait(timeout=540) == 0, log.read_text()[-4000:]

    results, attempts = assert_complete(out, skus)
    assert {r["status"] for r in results} == {"generated"}
    assert len({r["run_id"] for r in results} | {a["run_id"] for a in attempts}) == 1  # the same run
    after = {(a["sku_id"], a["attempt"]): a for a in attempts}
    for key, row in before.items():  # written before the kill: kept as they were, not regenerated
        assert after[key]["created_at"] == row["created_at"] and after[key]["image"] == row["image"]
    regenerated = [
        a for a in attempts if a["sku_id"] in finished_before and a["created_at"].timestamp() > killed_at
    ]
    assert not regenerated
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] is True and run["counts"]["generated"] == len(skus)


# ----------------------------------------------------------------------------------------------------
# Transient storage errors on write.


def test_write_failures_within_retries_are_invisible(ray_cluster, tmp_path):
    catalog = write_sample_catalog(tmp_path / "catalog", items=3)
    skus = catalog_skus(catalog)
    out = tmp_path / "out"
    # Every image path fails its first 2 writes; 2 retries absorb that.
    cfg = tiny_config(
        catalog,
        out,
        **{
            "generation.batch_size": 4,
            "generation.num_inference_steps": 2,
            "storage.retries": 2,
            "storage.inject_write_failures": ["*/images/*", 2],
        },
    )
    run_catalog(cfg, inspect_stage=ScoreStage)
    results, attempts = assert_complete(out, skus)
    assert {r["status"] for r in results} == {"generated"}
    for a in attempts:
        assert a["error"] == "" and Path(a["image"]).is_file()
        # Two failed tries cost the backoff before the third (0.2 s + 0.4 s): the faults did fire.
        assert a["write_s"] >= 0.6, a


def test_write_failures_beyond_retries_become_error_rows(ray_cluster, tmp_path):
    catalog = write_sample_catalog(tmp_path / "catalog", items=3)
    skus = catalog_skus(catalog)
    out = tmp_path / "out"
    # Every image of SKU-0000 fails 5 times in a row, more than 1 retry can absorb; the rest write fine.
    cfg = tiny_config(
        catalog,
        out,
        **{
            "generation.batch_size": 4,
            "generation.num_inference_steps": 2,
            "retry.max_attempts": 2,
            "storage.retries": 1,
            "storage.inject_write_failures": ["*/images/SKU-0000/*", 5],
        },
    )
    summary = run_catalog(cfg, inspect_stage=ScoreStage)
    results, attempts = assert_complete(out, skus)
    by_sku = {r["sku_id"]: r for r in results}
    failed = by_sku.pop("SKU-0000")
    assert failed["status"] == "error" and failed["attempts"] == 2, failed
    assert (
        failed["error"].startswith("all 2 attempts failed; last: write failed: ")
        and "SKU-0000" in failed["error"]
    )
    mine = sorted((a for a in attempts if a["sku_id"] == "SKU-0000"), key=lambda a: a["attempt"])
    assert [a["attempt"] for a in mine] == [1, 2]  # retried within max_attempts, with a new seed
    assert mine[0]["seed"] != mine[1]["seed"]
    for a in mine:
        assert a["error"].startswith("write failed: ") and "injected write failure" in a["error"]
        assert not a["image"]
    assert not list(out.glob("images/SKU-0000/*.png"))
    assert {r["status"] for r in by_sku.values()} == {"generated"}
    assert all(r["attempts"] == 1 for r in by_sku.values())
    assert summary.counts == {"accepted": 0, "exhausted": 0, "generated": len(skus) - 1, "error": 1}


# ----------------------------------------------------------------------------------------------------
# A multi-node cluster with a custom resource standing in for GPUs.


def test_custom_resources_are_placement_only():
    base = load_config(GenerateConfig, preset="tiny")
    pinned = load_config(GenerateConfig, preset="tiny", overrides={"generation.resources": {"fake_gpu": 1}})
    assert pinned.generation.resources == {"fake_gpu": 1.0}
    assert pinned.config_hash() == base.config_hash()  # a run may move to other nodes and still resume
    for bad in ({"GPU": 1}, {"fake_gpu": -1}):
        with pytest.raises(ConfigError, match=r"generation\.resources"):
            load_config(GenerateConfig, preset="tiny", overrides={"generation.resources": bad})


@pytest.mark.slow
def test_generation_pool_spreads_over_nodes(shared_ray, tmp_path):
    from ray.cluster_utils import Cluster

    shared_ray.stop()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    small = {"object_store_memory": 150 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, **small})
    try:
        workers = [cluster.add_node(num_cpus=2, resources={"fake_gpu": 1}, **small) for _ in range(2)]
        ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
        cluster.wait_for_nodes()
        worker_ids = {w.node_id for w in workers}

        catalog = write_sample_catalog(tmp_path / "catalog", items=6)
        skus = catalog_skus(catalog)
        out = tmp_path / "out"
        cfg = tiny_config(
            catalog,
            out,
            **{
                "generation.concurrency": 2,
                "generation.resources": {"fake_gpu": 1},
                "generation.num_inference_steps": 2,
            },
        )
        seen: dict[str, str | None] = {}  # actor id -> node id
        done = threading.Event()

        def record(actors: list) -> None:
            for a in actors:  # a dead actor may no longer say where it ran: keep what was seen
                seen[a.actor_id] = a.node_id or seen.get(a.actor_id)

        def watch() -> None:
            while not done.is_set():
                record(generation_actors(state="ALIVE"))
                time.sleep(0.5)

        # By default Ray Data starts on the first ready actor; six items may then all be done before
        # the second actor has started, and it is torn down unplaced. Wait for the whole pool.
        from ray.data import DataContext

        context = DataContext.get_current()
        wait_before = context.wait_for_min_actors_s
        context.wait_for_min_actors_s = 300
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            run_catalog(cfg, inspect_stage=ScoreStage)
        finally:
            context.wait_for_min_actors_s = wait_before
            done.set()
            watcher.join(timeout=30)
        record(generation_actors())  # dead ones too: the pool is gone once the wave ends

        assert len(seen) == 2, seen
        assert set(seen.values()) == worker_ids  # one actor on each fake-GPU node, none on the head
        results, _ = assert_complete(out, skus)
        assert {r["status"] for r in results} == {"generated"}
    finally:
        ray.shutdown()
        cluster.shutdown()
