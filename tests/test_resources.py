"""Jobs whose pools or Ray Train workers the cluster can never place fail within seconds, naming the
config fields; where an autoscaler may still add the nodes, they wait (one log line a minute) up to
``resource_wait_s``. The verdict logic is pure and tested first; then the CLI on real local Rays."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines import clusterview, resources
from pipelines.config import ConfigError, GenerateConfig, load_config
from pipelines.resources import Ask, ClusterView, NodeType, Probe, ResourceUnavailable, catalog_asks, judge
from rfnet.data.sample import write_sample_catalog

REPO = Path(__file__).resolve().parents[1]
GiB = float(2**30)
CPU_NODE = {"CPU": 2.0, "memory": 16 * GiB, "object_store_memory": 7 * GiB, "node:10.0.0.1": 1.0}
LOCAL = ClusterView((CPU_NODE,), (), "a local Ray started by this job")


def generate_config(preset: str | None = None, file: str | None = None, **assignments) -> GenerateConfig:
    return load_config(GenerateConfig, preset=preset, config_file=file, assignments=assignments)


def kuberay_node_types(cr: dict) -> tuple[NodeType, ...]:
    """The worker groups of a RayCluster spec, as Ray's KubeRay autoscaler derives them."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {**cr, "metadata": {"name": "reliable-ad", "namespace": "default"}}
    types = clusterview.node_types_from_config(_derive_autoscaling_config_from_ray_cr(cr))
    assert types is not None
    return types


# ----------------------------------------------------------------------------------------------------
# The verdict (pure).


def test_sd15_on_a_cpu_only_local_ray_can_never_run_and_the_message_names_the_fields():
    cfg = generate_config("sd15", **{"inspect.enabled": False})
    verdict = judge(catalog_asks(cfg), LOCAL)
    assert verdict.status == "never" and verdict.missing == {"GPU"}
    assert [a.what for a in verdict.unplaced] == ["the generation pool"]
    message = resources.refusal(catalog_asks(cfg), LOCAL, verdict, resources.catalog_fixes(cfg, verdict))
    assert "generation.num_gpus=0.9" in message and "generation.concurrency=1" in message
    assert "{CPU: 2, memory: 16.0 GiB}" in message and "node:" not in message
    assert "--preset tiny" in message and "--set generation.num_gpus=0 (these models" in message
    assert "\n" not in message


def test_the_tiny_preset_fits_the_same_machine_and_the_cpu_fix_really_removes_the_gpu_ask():
    assert judge(catalog_asks(generate_config("tiny")), LOCAL).status == "fits"
    # The fix the message names: the same models, no GPU asked for.
    fixed = generate_config(
        "sd15", **{"generation.num_gpus": 0, "inspect.num_gpus": 0, "inspect.rfnet": "tiny"}
    )
    assert judge(catalog_asks(fixed), LOCAL).status == "fits"
    # generation.device=cpu alone would still hold a GPU per actor: refused with the right override.
    with pytest.raises(
        ConfigError, match=r"generation.device='cpu' with generation.num_gpus=0.9.*num_gpus=0"
    ):
        generate_config("sd15", **{"generation.device": "cpu"})


def test_fractional_gpus_pack_per_node():
    gpu_node = {"CPU": 8.0, "GPU": 1.0}
    gen = Ask("gen", 1, {"GPU": 0.9, "CPU": 1.0}, "g")
    ins = Ask("ins", 1, {"GPU": 0.1, "CPU": 0.5}, "i")
    assert judge([gen, ins], ClusterView((gpu_node,))).status == "fits"
    # Three 0.6-GPU actors on two one-GPU nodes: 1.8 GPUs in total would do, but no node holds two.
    three = Ask("pool", 3, {"GPU": 0.6}, "p")
    verdict = judge([three], ClusterView((gpu_node, gpu_node)))
    assert verdict.status == "never" and verdict.missing == {"GPU"}
    # A custom resource no node has.
    pinned = Ask("gen", 1, {"GPU": 0.9, "accelerator_type:H100": 0.001}, "g")
    assert judge([pinned], ClusterView((gpu_node,))).missing == {"accelerator_type:H100"}


def test_an_autoscaler_with_a_gpu_group_means_wait_and_one_without_means_never():
    cfg = generate_config(file=str(REPO / "jobs/configs/cluster_generate.yaml"))
    cr = yaml.safe_load((REPO / "cluster/raycluster.yaml").read_text())
    head = {"CPU": 0.0, "memory": 16 * GiB}
    kuberay = ClusterView((head,), kuberay_node_types(cr), "the KubeRay RayCluster default/reliable-ad")
    verdict = judge(catalog_asks(cfg), kuberay)
    assert verdict.status == "wait"  # 8 generation actors need the GPU group, which starts at 0 pods
    assert "up to 8 x gpu {GPU: 1, CPU: 8" in resources.describe_growth(kuberay)
    # Once the GPU and CPU pods are up, the same asks fit.
    grown = ClusterView((head, *[t.resources for t in kuberay.node_types for _ in range(t.max_workers)]))
    assert judge(catalog_asks(cfg), grown).status == "fits"
    # More generation actors than GPU pods: never, however long one waits.
    nine = generate_config(
        file=str(REPO / "jobs/configs/cluster_generate.yaml"), **{"generation.concurrency": 9}
    )
    assert judge(catalog_asks(nine), kuberay).status == "never"
    # The same cluster without its GPU group: never.
    cr["spec"]["workerGroupSpecs"] = [g for g in cr["spec"]["workerGroupSpecs"] if g["groupName"] != "gpu"]
    assert judge(catalog_asks(cfg), ClusterView((head,), kuberay_node_types(cr))).status == "never"
    # An autoscaler whose node types cannot be seen: wait (bounded by resource_wait_s).
    assert judge(catalog_asks(cfg), ClusterView((head,), None)).status == "wait"


def test_launcher_config_node_types_and_the_readonly_monitor_rule():
    config = yaml.safe_load((REPO / "cluster/launcher-aws.yaml").read_text())
    types = {t.name: t for t in clusterview.node_types_from_config(config)}
    assert set(types) == {"gpu_worker", "cpu_worker"} and types["gpu_worker"].max_workers == 8
    assert types["gpu_worker"].resources == {"CPU": 8.0, "GPU": 1.0}
    # A worker type without resources (filled in by the autoscaler from the instance type): unknown.
    del config["available_node_types"]["gpu_worker"]["resources"]
    assert clusterview.node_types_from_config(config) is None
    # A monitor without a config names each node after its id; one with a config names node types.
    assert not clusterview.monitor_adds_nodes({"abc": "node_abc", "def": "node_def"}, launches=False)
    assert clusterview.monitor_adds_nodes({"abc": "headgroup"}, launches=False)
    assert clusterview.monitor_adds_nodes({"abc": "node_abc"}, launches=True)


class FakeCluster(Probe):
    """A CPU node and an autoscaler with a GPU group that adds a GPU node at ``gpu_at`` seconds."""

    def __init__(self, clock, gpu_at: float | None = None):
        self.clock, self.gpu_at = clock, gpu_at
        self.requested: list[list[dict]] = []
        self.cleared = 0

    def view(self) -> ClusterView:
        nodes = [CPU_NODE]
        if self.gpu_at is not None and self.clock() >= self.gpu_at:
            nodes.append({"CPU": 8.0, "GPU": 1.0})
        return ClusterView(tuple(nodes), (NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, 2),), "a fake cluster")

    def request(self, asks) -> None:
        self.requested.append([dict(a.bundle) for a in asks for _ in range(a.count)])

    def clear(self) -> None:
        self.cleared += 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def wait(asks, cluster: FakeCluster, clock: FakeClock, *, wait_s: float, fixes: str) -> ClusterView:
    return resources.require(
        asks,
        fixes=fixes,
        wait_s=wait_s,
        wait_field="run.resource_wait_s",
        probe=cluster,
        clock=clock,
        sleep=clock.sleep,
    )


def test_waiting_logs_a_line_a_minute_then_fails_naming_the_wait_field(caplog):
    clock = FakeClock()
    cluster = FakeCluster(clock)
    asks = [
        Ask(
            "the generation pool",
            1,
            {"GPU": 0.9, "CPU": 1.0},
            "generation.num_gpus=0.9 x generation.concurrency=1",
        )
    ]
    with (
        caplog.at_level(logging.WARNING, logger="pipelines.resources"),
        pytest.raises(ResourceUnavailable) as err,
    ):
        wait(asks, cluster, clock, wait_s=150, fixes="FIXES")
    lines = [r.getMessage() for r in caplog.records if "waiting for resources" in r.getMessage()]
    assert [line.split(" (")[0] for line in lines] == [
        "waiting for resources for 0 s",
        "waiting for resources for 1 min",
        "waiting for resources for 2 min",
    ]
    assert "generation.num_gpus=0.9" in lines[-1] and "up to 2 x gpu {GPU: 1, CPU: 8}" in lines[-1]
    message = str(err.value)
    assert (
        "after waiting 2 min 30 s (run.resource_wait_s=150)" in message
        and "generation.num_gpus=0.9" in message
    )
    assert message.endswith("FIXES; or allow a longer wait with run.resource_wait_s")
    assert cluster.requested == [[{"GPU": 0.9, "CPU": 1.0}]] and cluster.cleared == 1


def test_waiting_ends_when_the_autoscaler_adds_the_node():
    clock = FakeClock()
    cluster = FakeCluster(clock, gpu_at=clock() + 70)
    asks = [Ask("pool", 1, {"GPU": 0.9, "CPU": 1.0}, "f")]
    view = wait(asks, cluster, clock, wait_s=1800, fixes="F")
    assert any(n.get("GPU") for n in view.nodes) and 70 <= clock() - 1000 <= 75
    assert cluster.cleared == 1


# ----------------------------------------------------------------------------------------------------
# The jobs on real Ray clusters.


def one_item_catalog(tmp_path: Path) -> Path:
    catalog = write_sample_catalog(tmp_path / "catalog", items=1)
    catalog.write_text(catalog.read_text().splitlines()[0] + "\n")
    return catalog


@pytest.mark.ray
def test_generate_sd15_on_a_cpu_machine_fails_fast_with_the_fields_on_the_last_line(shared_ray, tmp_path):
    shared_ray.stop()  # the command starts its own local Ray; one Ray at a time
    catalog, out = one_item_catalog(tmp_path), tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.cli", "generate", "--preset", "sd15", "--catalog", str(catalog)]
    started = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--out", str(out), "--no-inspect"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - started
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert proc.returncode == resources.EXIT_STATUS, proc.stderr[-3000:]
    assert took < 60, f"took {took:.0f} s"
    assert last.startswith("reliable-ad generate: error: this cluster can never provide the GPU")
    assert "generation.num_gpus=0.9" in last and "--preset tiny" in last
    assert not out.exists()  # nothing written for a refused run


@pytest.mark.ray
def test_generate_waits_for_an_autoscaler_gpu_group_then_fails(
    ray_cluster, tmp_path, monkeypatch, caplog, capsys
):
    """The shared CPU-only cluster, seen with a cluster-launcher config whose GPU group never comes up."""
    import ray
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    from jobs.cli import main

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    launcher = yaml.safe_load((REPO / "cluster/launcher-aws.yaml").read_text())
    bootstrap.write_text(yaml.safe_dump(launcher))
    monkeypatch.setattr(clusterview, "BOOTSTRAP_CONFIG", bootstrap)
    monkeypatch.setattr(resources, "LOG_INTERVAL_S", 1.0)
    monkeypatch.setattr(resources, "POLL_INTERVAL_S", 0.2)
    monkeypatch.delenv("RAY_CLUSTER_NAME", raising=False)
    catalog, out = one_item_catalog(tmp_path), tmp_path / "out"
    args = ["generate", "--preset", "sd15", "--catalog", str(catalog), "--out", str(out), "--no-inspect"]
    with caplog.at_level(logging.WARNING, logger="pipelines.resources"):
        assert main([*args, "--set", "run.resource_wait_s=2.5"]) == resources.EXIT_STATUS
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for resources")]
    assert len(waits) >= 2, waits
    assert "generation.num_gpus=0.9" in waits[0] and "up to 8 x gpu_worker {GPU: 1, CPU: 8}" in waits[0]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("reliable-ad generate: error: not enough GPU after waiting")
    assert "run.resource_wait_s=2.5" in last and "generation.num_gpus=0.9" in last
    assert not out.exists()
    # The autoscaler was asked for the pool's bundles, and the request was withdrawn afterwards.
    assert ray.is_initialized()
    assert _internal_kv_get(ray_constants.AUTOSCALER_RESOURCE_REQUEST_CHANNEL) == b"[]"


@pytest.mark.ray
def test_ray_train_jobs_asking_for_gpus_on_a_cpu_cluster_fail_naming_their_fields(
    ray_cluster, tmp_path, capsys
):
    from jobs.cli import main
    from rfnet.data.scenes import make_set

    data = make_set("synthetic", str(tmp_path / "set"), n_per_class=2, image_size=64, seed=0)
    started = time.monotonic()
    rc = main(["train-rfnet", "--preset", "tiny", "--data", data, "--out", str(tmp_path / "rfnet"), "--gpu"])
    assert rc == resources.EXIT_STATUS
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "workers.use_gpu=true (1 GPU per worker)" in last and "workers.num_workers=1" in last
    assert "--preset small" in last and not (tmp_path / "rfnet").exists()

    rc = main(["rfft", "--preset", "tiny", "--out", str(tmp_path / "rfft"), "--set", "scaling.use_gpu=true"])
    assert rc == resources.EXIT_STATUS
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("reliable-ad rfft: error: this cluster can never provide the GPU")
    assert "scaling.use_gpu=true (1 GPU per worker)" in last and "--set scaling.use_gpu=false" in last
    assert not (tmp_path / "rfft").exists()
    assert time.monotonic() - started < 60
