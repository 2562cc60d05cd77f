"""The shape of the Ray cluster a job runs on: its nodes, and what its autoscaler may add.

:class:`RayProbe` is how :func:`pipelines.resources.require` sees a running cluster. What an
autoscaler may add comes from the first source that applies:

- nothing, for a local Ray this process started (``pipelines.raystart``);
- on KubeRay (``RAY_CLUSTER_NAME`` is set in every Ray container), the RayCluster's worker groups,
  read with the pod's service account and turned into node types by Ray's own KubeRay code, as the
  autoscaler sidecar does; unknown node types if the resource cannot be read;
- on a Ray cluster-launcher head, the node types of ``~/ray_bootstrap_config.yaml``;
- otherwise the autoscaler's report in the GCS: a monitor that names nodes by configured node types
  can add nodes (of types not visible from here), one that mirrors the nodes it finds
  (``ray start --head`` without a config) cannot add any.

While a job waits, the probe asks the autoscaler for the bundles
(``ray.autoscaler.sdk.request_resources``, which replaces any earlier request) and withdraws the
request when the wait ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.resources import Ask, ClusterView, NodeType, Probe

logger = logging.getLogger(__name__)

# What the Ray cluster launcher leaves on the head node: the autoscaler config it runs with.
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


class RayProbe(Probe):
    """The connected Ray cluster: alive nodes at every look, what its autoscaler may add read once."""

    def __init__(self) -> None:
        self._growth: tuple[tuple[NodeType, ...] | None, str] | None = None

    def view(self) -> ClusterView:
        import ray

        from pipelines.raystart import started_here

        nodes = tuple({k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive"))
        if self._growth is None:
            self._growth = (
                ((), "a local Ray started by this job") if started_here() else autoscaler_node_types()
            )
        return ClusterView(nodes, *self._growth)

    def request(self, asks: Sequence[Ask]) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[dict(a.bundle) for a in asks for _ in range(a.count)])

    def clear(self) -> None:
        from ray.autoscaler.sdk import request_resources

        try:
            request_resources(bundles=[])
        except Exception:  # the wait is over either way; a stale request only keeps nodes up
            logger.warning("could not withdraw the autoscaler resource request", exc_info=True)


def autoscaler_node_types() -> tuple[tuple[NodeType, ...] | None, str]:
    """What the autoscaler of the joined cluster may add, and where that was read."""
    cluster = os.environ.get("RAY_CLUSTER_NAME")
    if cluster:  # set by KubeRay in every Ray container
        return _kuberay_node_types(cluster, os.environ.get("RAY_CLUSTER_NAMESPACE") or _pod_namespace())
    bootstrap = BOOTSTRAP_CONFIG.expanduser()
    if bootstrap.is_file():
        import yaml

        config = yaml.safe_load(bootstrap.read_text()) or {}
        return node_types_from_config(config), f"the autoscaler config {bootstrap}"
    return _reported_node_types()


def node_types_from_config(config: Mapping[str, Any]) -> tuple[NodeType, ...] | None:
    """Worker node types of a Ray autoscaler config (``available_node_types``); ``None`` if a type
    does not state its resources (the autoscaler fills them in from the instance type)."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    cap = config.get("max_workers")
    out = []
    for name, spec in types.items():
        if name == head:
            continue
        if not spec.get("resources") and int(spec.get("max_workers", 0) or 0) > 0:
            return None
        most = int(spec.get("max_workers", cap if cap is not None else 0) or 0)
        out.append(NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()}, most))
    return tuple(out)


def _pod_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else "default"


def _kuberay_node_types(name: str, namespace: str) -> tuple[tuple[NodeType, ...] | None, str]:
    source = f"the KubeRay RayCluster {namespace}/{name}"
    try:
        # What the autoscaler sidecar itself runs: it reads the CR with the pod's service account.
        from ray.autoscaler._private.kuberay.autoscaling_config import (
            _derive_autoscaling_config_from_ray_cr,
        )
        from ray.autoscaler._private.kuberay.node_provider import KubernetesHttpApiClient

        cr = KubernetesHttpApiClient(namespace=namespace).get(f"rayclusters/{name}")
        if not cr.get("spec", {}).get("enableInTreeAutoscaling"):
            return (), f"{source} (autoscaling off)"
        return node_types_from_config(_derive_autoscaling_config_from_ray_cr(cr)), source
    except Exception as exc:  # no permission, no API server: ask the autoscaler's report instead
        logger.info("could not read %s (%s); reading the autoscaler's report instead", source, exc)
        node_types, _ = _reported_node_types()
        return node_types, source


def monitor_adds_nodes(node_types: Mapping[str, str], *, launches: bool) -> bool:
    """Whether the autoscaler behind a report (``node id -> node type``) can add nodes. A monitor
    without a node-type config (``ray start --head``) mirrors the nodes it finds, naming each type
    ``node_<node id>``; one with a config names configured types, and launches nodes."""
    return launches or any(t != f"node_{node}" for node, t in node_types.items())


def _reported_node_types() -> tuple[tuple[NodeType, ...] | None, str]:
    """From the autoscaler's report in the GCS (:func:`monitor_adds_nodes`): ``None`` (unknown
    node types) if it can add nodes, ``()`` if no monitor reports or it cannot."""
    import json

    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2():
            import ray
            from ray.autoscaler.v2.sdk import get_cluster_status

            status = get_cluster_status(ray.get_runtime_context().gcs_address)
            types = {
                n.node_id or "": n.ray_node_type_name for n in [*status.active_nodes, *status.idle_nodes]
            }
            launches = bool(status.pending_launches or status.failed_launches)
        else:
            raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
            report = (json.loads(raw) if raw else {}).get("autoscaler_report") or {}
            types = dict(report.get("node_type_mapping") or {})
            launches = bool(report.get("pending_launches"))
    except Exception as exc:
        logger.info("could not read the autoscaler's report (%s); assuming it may add nodes", exc)
        return None, "a Ray cluster whose autoscaler could not be read"
    if monitor_adds_nodes(types, launches=launches):
        return None, "a Ray cluster with an autoscaler"
    return (), "a Ray cluster without an autoscaler"
