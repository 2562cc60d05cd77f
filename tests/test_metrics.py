"""Operability: the periodic progress line and the run's metrics in the node's Prometheus export.

A Prometheus scrape of a Ray node (``http://<node>:<MetricsExportPort>/metrics``) must show the
project's counters and gauges, prefixed ``ray_`` by Ray and tagged with the run id, after a run.
Ray exports on an interval (about 10 s), so the test polls.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.request

import pytest
import ray

from pipelines.config import GenerateConfig, load_config
from pipelines.progress import Progress
from pipelines.runner import run_catalog
from rfnet.data.sample import write_sample_catalog
from rfnet.scorer import ScoreStage

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\}\s+(?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            samples.append((m["name"], dict(LABEL.findall(m["labels"])), float(m["value"])))
    return samples


def test_progress_line_counts_items_and_attempts():
    p = Progress("run-1", "generate", total_items=10, interval_s=60.0, metrics=False)
    p.item("accepted", 3)
    p.item("exhausted")
    p.item("error", 0)
    p.attempt("accepted", 3)
    p.attempt("rejected", 5)
    p.attempt("failed")
    line = p.line()
    assert "generate run-1 | items 4/10 (40.0%)" in line
    assert "accepted 3 exhausted 1 generated 0 errors 0" in line
    assert "attempts 9 (rejected 5, failed 1)" in line
    assert p.images == 8 and "img/s" in line and "ETA 0:" in line


def test_eta_counts_only_this_drivers_work(monkeypatch):
    """A resumed run: 900 of 1,000 items were finished by the killed driver. The ETA is what is left
    (100 - what this driver finished) at this driver's rate, not the whole catalog's."""
    from pipelines import progress

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    p = Progress("run-2", "generate", total_items=None, interval_s=60.0, done_before=900, metrics=False)
    p.item("accepted", 20)
    clock[0] += 100.0  # 20 items in 100 s: 5 s per item
    assert p.eta() is None and "items 920/? " in p.line() and "ETA -" in p.line()  # total not counted yet
    p.set_total(1000)
    assert p.eta().total_seconds() == 400.0  # 80 items left x 5 s
    assert "items 920/1000 (92.0%)" in p.line() and "ETA 0:06:40" in p.line()
    p.skip(30)  # refresh: unchanged items are settled without work
    assert p.eta().total_seconds() == 250.0


@pytest.mark.ray
def test_zero_counts_do_not_reach_ray_counters(ray_cluster):
    # A catalog without bad rows counts 0 errors up front; Ray counters reject inc(0).
    p = Progress("run-zero", "generate", total_items=1, interval_s=60.0)
    assert p._metrics is not None
    p.item("error", 0)
    p.attempt("failed", 0)
    assert p.items["error"] == 0 and p.done == 0


@pytest.mark.ray
@pytest.mark.slow
def test_run_metrics_reach_the_prometheus_export(ray_cluster, tmp_path, caplog):
    catalog = write_sample_catalog(tmp_path / "catalog", items=2)
    n_items = sum(1 for line in catalog.read_text().splitlines() if line.strip())
    cfg = load_config(
        GenerateConfig,
        preset="tiny",
        overrides={
            "catalog": str(catalog),
            "out": str(tmp_path / "out"),
            "inspect.enabled": False,
            "retry.max_attempts": 1,
            "generation.num_inference_steps": 2,
        },
    )
    caplog.set_level(logging.INFO, logger="reliable_ad.progress")
    summary = run_catalog(cfg, inspect_stage=ScoreStage)
    lines = [r.getMessage() for r in caplog.records if r.name == "reliable_ad.progress"]
    assert any(f"items {n_items}/{n_items} (100.0%)" in line for line in lines), lines

    me = ray.get_runtime_context().get_node_id()
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["NodeID"] == me)
    run_id = summary.run_id
    wanted = {
        ("ray_reliable_ad_items_total", "status", "generated"): float(n_items),
        ("ray_reliable_ad_attempts_total", "outcome", "generated"): float(n_items),
        ("ray_reliable_ad_items_pending", None, None): 0.0,
    }
    found: dict = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        samples = [s for s in scrape(port) if s[1].get("run_id") == run_id]
        found = {
            key: value
            for name, labels, value in samples
            for key in wanted
            if key[0] == name and (key[1] is None or labels.get(key[1]) == key[2])
        }
        names = {name for name, _, _ in samples}
        if found == wanted and {"ray_reliable_ad_images_per_second"} <= names:
            break
        time.sleep(2)
    assert found == wanted, f"metrics for run {run_id} at :{port}/metrics: {found}"
    rate = [v for name, _, v in samples if name == "ray_reliable_ad_images_per_second"]
    assert rate and rate[0] > 0
    busy = [v for name, _, v in samples if name == "ray_reliable_ad_generation_busy_fraction"]
    assert busy and 0 < busy[0] <= 1
