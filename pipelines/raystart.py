"""Connecting to Ray, the same way for every job (generation, RFNet training, RFFT).

An explicit address (the job's config, else ``RAY_ADDRESS``, which ``ray job submit`` and KubeRay pods
set) attaches to that cluster. Without one, a new local Ray is started with ``address="local"``: a bare
``ray.init()`` would attach to whatever cluster ``/tmp/ray/ray_current_cluster`` names, and after a
head that was killed rather than stopped that file names a dead one (the job then hangs retrying it).
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

_STARTED_HERE: str | None = None  # GCS address of the local Ray this process started, if it did


def started_here() -> bool:
    """Whether the Ray this process is connected to is a local one it started itself (so no
    autoscaler stands behind it)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().gcs_address == _STARTED_HERE


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Attach to ``address`` / ``RAY_ADDRESS``, or start a local Ray; nothing if Ray is already up."""
    import ray

    global _STARTED_HERE
    if ray.is_initialized():
        return
    kwargs = {"configure_logging": False, "log_to_driver": True}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        return
    # A private, in-process-started cluster: no token to distribute to anyone.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Idle OpenMP threads must not spin: on a few cores, spinning workers slow each other's torch
    # kernels by an order of magnitude (measured: tiny UNet call 0.08 s -> 3 s).
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    runtime_env: dict = {"env_vars": env}
    if not dashboard:
        runtime_env["worker_process_setup_hook"] = "pipelines.raystart.quiet_state_api_warnings"
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        runtime_env=runtime_env,
        **kwargs,
    )
    _STARTED_HERE = ray.get_runtime_context().gcs_address
    logger.info("started a local Ray (%s CPUs)", ray.cluster_resources().get("CPU"))


# Ray Train's placement-group cleaner (a safety net that frees a run's placement group if its
# controller dies) asks the State API every few seconds whether the controller is alive. Without a
# dashboard that API does not exist, and every check logs a warning: one line every few seconds for
# the whole run. The net never acts then, which costs nothing here: a local Ray ends with the job
# and takes its placement groups with it.
NO_STATE_API_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_state_api_warnings() -> None:
    """Worker setup hook of a local Ray started without a dashboard (see ``NO_STATE_API_LOGGERS``)."""
    for name in NO_STATE_API_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
