"""Can the cluster ever run a job? Checked once, after Ray is up and before any pool or trainer exists.

A Ray Data actor or a Ray Train worker that asks for more than any node offers is not an error to
Ray: it stays pending, and the job waits forever (Ray logs "No available node types can fulfill
resource request ..." every half minute). The jobs compare what they will ask for with what the
cluster has and what its autoscaler could add, and refuse at once what can never run, naming the
config fields that ask and how to change them.

The decision is pure (:func:`judge`: asks x cluster view -> verdict) and is tested without Ray.
A view holds every alive node's total resources (a bundle, i.e. one actor or worker, must fit on a
single node; totals, not what is free now: resources other jobs hold come back) and the node types
an autoscaler may add; :class:`pipelines.clusterview.RayProbe` reads both from the running cluster.

Verdicts: ``fits`` (the asks pack onto today's nodes), ``never`` (they do not pack even onto every
node the autoscaler may add: the job fails within seconds), ``wait`` (an autoscaler may still add
what is missing). While waiting, the job asks the autoscaler for the bundles
(``ray.autoscaler.sdk.request_resources``, cleared when the wait ends), logs one line a minute
with what is pending and for how long, and fails after the job's ``resource_wait_s``.

Packing is first-fit decreasing: sound for ``fits`` and exact for the usual pools of equal actors;
for unequal bundles on unequal nodes it can miss a packing that exists, which errs towards a clear
refusal instead of a silent hang.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

# Seconds between two "still waiting" log lines, and between two looks at the cluster while waiting.
LOG_INTERVAL_S = 60.0
POLL_INTERVAL_S = 5.0
# Node resources that are bookkeeping, not capacity (node:<ip>, node:__internal_head__, ...).
_HIDDEN_PREFIXES = ("node:", "object_store_memory")
_EPS = 1e-9


class ResourceUnavailable(RuntimeError):
    """The cluster cannot provide what the job asks for; the message says what, why, and the fixes.

    Jobs exit with :data:`EXIT_STATUS` on it (``jobs.common.execute``)."""


EXIT_STATUS = 3


@dataclass(frozen=True)
class Ask:
    """``count`` identical bundles (an actor pool, Ray Train workers) and the config fields behind them."""

    what: str  # e.g. "the generation pool"
    count: int
    bundle: Mapping[str, float]  # one actor / worker, in Ray's units (memory in bytes)
    fields: str  # e.g. "generation.num_gpus=0.9 x generation.concurrency=1"


@dataclass(frozen=True)
class NodeType:
    """A node type an autoscaler may launch: ``max_workers`` nodes of ``resources`` each."""

    name: str
    resources: Mapping[str, float]
    max_workers: int


@dataclass(frozen=True)
class ClusterView:
    """What a cluster has and may get.

    ``node_types``: what its autoscaler may add; empty when nothing can be added, ``None`` when an
    autoscaler may add nodes of types that cannot be seen from here.
    """

    nodes: tuple[Mapping[str, float], ...]
    node_types: tuple[NodeType, ...] | None = ()
    source: str = "a Ray cluster without an autoscaler"


@dataclass(frozen=True)
class Verdict:
    status: Literal["fits", "wait", "never"]
    unplaced: tuple[Ask, ...] = ()  # the asks that did not pack (onto today's nodes, or ever)
    missing: frozenset[str] = field(default_factory=frozenset)  # resource names they lack


# ----------------------------------------------------------------------------------------------------
# The decision (pure).


def _fits(bundle: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(amount <= free.get(key, 0.0) + _EPS for key, amount in bundle.items() if amount > 0)


def pack(asks: Sequence[Ask], nodes: Sequence[Mapping[str, float]]) -> list[Ask]:
    """First-fit decreasing of every bundle onto ``nodes``; the asks with a bundle left over."""
    free = [dict(n) for n in nodes]
    order = sorted(
        ((ask, b) for ask in asks for b in [ask.bundle] * ask.count),
        key=lambda ab: tuple(-ab[1].get(k, 0.0) for k in ("GPU", "CPU", "memory")),
    )
    unplaced: list[Ask] = []
    for ask, bundle in order:
        node = next((n for n in free if _fits(bundle, n)), None)
        if node is None:
            if ask not in unplaced:
                unplaced.append(ask)
            continue
        for key, amount in bundle.items():
            node[key] = node.get(key, 0.0) - amount
    return unplaced


def _missing(asks: Iterable[Ask], nodes: Sequence[Mapping[str, float]]) -> frozenset[str]:
    """Resource names that keep the asks off ``nodes``: those no node has enough of for one bundle,
    else those the bundles together need more of than all the nodes have."""
    asks = list(asks)
    alone = {
        key
        for ask in asks
        if not any(_fits(ask.bundle, n) for n in nodes)
        for key, amount in ask.bundle.items()
        if amount > 0 and not any(n.get(key, 0.0) + _EPS >= amount for n in nodes)
    }
    if alone:
        return frozenset(alone)
    need: Counter[str] = Counter()
    for ask in asks:
        for key, amount in ask.bundle.items():
            need[key] += amount * ask.count
    have: Counter[str] = Counter()
    for n in nodes:
        have.update({k: v for k, v in n.items() if k in need})
    short = {key for key, amount in need.items() if amount > have[key] + _EPS}
    return frozenset(short or {key for ask in asks for key, v in ask.bundle.items() if v > 0})


def potential_nodes(view: ClusterView) -> list[Mapping[str, float]]:
    """Today's nodes plus every node the autoscaler may add (``node_types`` must be known)."""
    assert view.node_types is not None
    extra = [t.resources for t in view.node_types for _ in range(max(0, t.max_workers))]
    return [*view.nodes, *extra]


def judge(asks: Sequence[Ask], view: ClusterView) -> Verdict:
    """Will ``asks`` (all at once) ever run on the cluster ``view`` describes?"""
    asks = [a for a in asks if a.count > 0]
    unplaced = pack(asks, view.nodes)
    if not unplaced:
        return Verdict("fits")
    if view.node_types is None:
        return Verdict("wait", tuple(unplaced), _missing(unplaced, view.nodes))
    everything = potential_nodes(view)
    never = pack(asks, everything)
    if never:
        return Verdict("never", tuple(never), _missing(never, everything))
    return Verdict("wait", tuple(unplaced), _missing(unplaced, view.nodes))


# ----------------------------------------------------------------------------------------------------
# Messages.


def format_resources(resources: Mapping[str, float], keys: Iterable[str] | None = None) -> str:
    """``{GPU: 0.9, CPU: 1, memory: 0.5 GiB}``: GPU and CPU first, bookkeeping keys left out."""
    shown = [k for k in resources if not k.startswith(_HIDDEN_PREFIXES) and (keys is None or k in set(keys))]
    shown.sort(key=lambda k: ({"GPU": 0, "CPU": 1}.get(k, 2), k))
    parts = []
    for k in shown:
        v = float(resources[k])
        if k == "memory":
            parts.append(f"memory: {v / 2**30:.1f} GiB")
        else:
            parts.append(f"{k}: {v:g}")
    return "{" + ", ".join(parts) + "}"


def describe_nodes(nodes: Sequence[Mapping[str, float]], keys: Iterable[str] | None = None) -> str:
    if not nodes:
        return "no nodes"
    counts = Counter(format_resources(n, keys) for n in nodes)
    shapes = ", ".join(f"{c} x {shape}" for shape, c in counts.most_common())
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} ({shapes})"


def describe_growth(view: ClusterView) -> str:
    if view.node_types is None:
        return f"{view.source}: its autoscaler may add nodes of types not visible from here"
    growable = [t for t in view.node_types if t.max_workers > 0]
    if not growable:
        return f"{view.source}: nothing can add nodes"
    kinds = ", ".join(f"up to {t.max_workers} x {t.name} {format_resources(t.resources)}" for t in growable)
    return f"{view.source}: its autoscaler may add {kinds}"


def describe_asks(asks: Iterable[Ask]) -> str:
    return "; ".join(f"{a.what} asks {a.count} x {format_resources(a.bundle)} ({a.fields})" for a in asks)


def refusal(
    asks: Sequence[Ask],
    view: ClusterView,
    verdict: Verdict,
    fixes: str,
    *,
    waited: str | None = None,
) -> str:
    """One line: what is asked (config fields), what the cluster has and may get, and the fixes."""
    keys = {k for a in asks for k in a.bundle} | {"CPU", "GPU"}
    lacking = ", ".join(sorted(verdict.missing)) or "resources"
    head = (
        f"not enough {lacking} {waited}"
        if waited
        else f"this cluster can never provide the {lacking} this job asks for"
    )
    return (
        f"{head}: {describe_asks(verdict.unplaced or asks)}; the cluster has "
        f"{describe_nodes(view.nodes, keys)}; {describe_growth(view)}. Fix: {fixes}"
    )


# ----------------------------------------------------------------------------------------------------
# Waiting for an autoscaler.


class Probe:
    """How :func:`require` sees and asks the cluster (:class:`RayProbe`; tests pass fakes)."""

    def view(self) -> ClusterView:  # pragma: no cover - interface
        raise NotImplementedError

    def request(self, asks: Sequence[Ask]) -> None:
        """Ask the autoscaler to make room for ``asks`` (replaces any earlier request)."""

    def clear(self) -> None:
        """Withdraw the request."""


def require(
    asks: Sequence[Ask],
    *,
    fixes: str | Callable[[Verdict], str],
    wait_s: float,
    wait_field: str,
    probe: Probe | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ClusterView:
    """Return once ``asks`` fit the cluster; raise :class:`ResourceUnavailable` if they never can, or
    if an autoscaler has not provided them within ``wait_s`` seconds (``wait_field`` names the
    config field that sets it). Logs one line every :data:`LOG_INTERVAL_S` seconds while waiting.
    ``fixes``: what the user can change, or a function of the verdict that says it."""
    if probe is None:
        from pipelines.clusterview import RayProbe

        probe = RayProbe()
    fix = fixes if callable(fixes) else (lambda _verdict: fixes)
    view = probe.view()
    verdict = judge(asks, view)
    if verdict.status == "fits":
        return view
    if verdict.status == "never":
        raise ResourceUnavailable(refusal(asks, view, verdict, fix(verdict)))
    start = clock()
    next_log = start
    probe.request(asks)
    try:
        while True:
            waited = clock() - start
            if verdict.status == "never":
                raise ResourceUnavailable(refusal(asks, view, verdict, fix(verdict)))
            if waited >= wait_s:
                raise ResourceUnavailable(
                    refusal(
                        asks,
                        view,
                        verdict,
                        f"{fix(verdict)}; or allow a longer wait with {wait_field}",
                        waited=f"after waiting {_duration(waited)} ({wait_field}={wait_s:g})",
                    )
                )
            if clock() >= next_log:
                logger.warning(
                    "waiting for resources for %s (gives up after %s, %s=%g): %s pending; the cluster has %s; %s",
                    _duration(waited),
                    _duration(wait_s),
                    wait_field,
                    wait_s,
                    describe_asks(verdict.unplaced),
                    describe_nodes(view.nodes, {k for a in asks for k in a.bundle} | {"CPU", "GPU"}),
                    describe_growth(view),
                )
                next_log += LOG_INTERVAL_S
            sleep(max(0.0, min(POLL_INTERVAL_S, start + wait_s - clock())))
            view = probe.view()
            verdict = judge(asks, view)
            if verdict.status == "fits":
                logger.info(
                    "resources available after %s: %s", _duration(clock() - start), describe_asks(asks)
                )
                return view
    finally:
        probe.clear()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s" if seconds % 60 else f"{seconds // 60} min"


# ----------------------------------------------------------------------------------------------------
# Asks of the jobs' pools.


def _num(x: float) -> str:
    return f"{x:g}"


def pool_ask(what: str, name: str, section: Any) -> Ask:
    """An actor pool configured by a config section ``name`` (``concurrency`` actors of ``num_gpus``
    GPUs, ``num_cpus`` CPUs and, if it has them, custom ``resources`` each)."""
    gpus, cpus, custom = section.num_gpus, section.num_cpus, dict(getattr(section, "resources", None) or {})
    bundle: dict[str, float] = {"CPU": cpus, **custom, **({"GPU": gpus} if gpus > 0 else {})}
    per = [f"{name}.num_gpus={_num(gpus)}"] if gpus > 0 else []
    per.append(f"{name}.num_cpus={_num(cpus)}")
    if custom:
        per.append(f"{name}.resources={custom}")
    return Ask(
        what, section.concurrency, bundle, f"{', '.join(per)} x {name}.concurrency={section.concurrency}"
    )


def ray_train_ask(name: str, section: Any, workers_field: str) -> Ask:
    """Ray Train's workers, configured by a config section ``name``: ``<workers_field>`` workers of
    ``cpus_per_worker`` CPUs and one GPU each when ``use_gpu``."""
    workers, cpus = getattr(section, workers_field), section.cpus_per_worker
    bundle = {"CPU": cpus, **({"GPU": 1.0} if section.use_gpu else {})}
    fields = (
        f"{name}.use_gpu={str(section.use_gpu).lower()} (1 GPU per worker), "
        f"{name}.cpus_per_worker={_num(cpus)} x {name}.{workers_field}={workers}"
    )
    return Ask("Ray Train", workers, bundle, fields)


def catalog_asks(cfg: Any) -> list[Ask]:
    """What a ``generate`` / ``refresh`` wave asks for at once (``cfg``: a ``GenerateConfig``)."""
    run = cfg.run
    asks = [pool_ask("the generation pool", "generation", cfg.generation)]
    if cfg.inspect.enabled:
        asks.append(pool_ask("the inspection pool", "inspect", cfg.inspect))
    # Preparation and write tasks come and go, so they can take turns: the larger of the two must
    # find room beside the pools.
    task = {
        "CPU": max(run.prepare_num_cpus, run.write_num_cpus),
        "memory": float(run.prepare_memory_mb * 2**20),
    }
    fields = (
        f"run.prepare_num_cpus={_num(run.prepare_num_cpus)}, run.prepare_memory_mb={run.prepare_memory_mb}, "
        f"run.write_num_cpus={_num(run.write_num_cpus)}"
    )
    asks.append(Ask("a preparation or write task", 1, {k: v for k, v in task.items() if v > 0}, fields))
    return asks


def catalog_fixes(cfg: Any, verdict: Verdict) -> str:
    """What to change in a ``GenerateConfig`` when ``verdict`` refuses its pools."""
    pools = (
        "generation.concurrency / inspect.concurrency" if cfg.inspect.enabled else "generation.concurrency"
    )
    if "GPU" in verdict.missing:
        on_cpu = "--set generation.num_gpus=0" + (" --set inspect.num_gpus=0" if cfg.inspect.enabled else "")
        return (
            f"--preset tiny (tiny models on CPUs, for trying the pipeline), or {on_cpu} (these models on "
            f"CPUs: slow, minutes per image), or a smaller {pools}, or run on a Ray cluster with GPU nodes "
            "(docs/runbook.md, 'Resources')"
        )
    return (
        f"a smaller {pools} or fewer CPUs / less memory per actor or task (the fields named above), more "
        "logical CPUs for a local Ray (run.ray_num_cpus), or nodes that have what is missing "
        "(docs/runbook.md, 'Resources')"
    )


def require_catalog_resources(cfg: Any, probe: Probe | None = None) -> ClusterView:
    """Start or join Ray as ``cfg.run`` says, then :func:`require` the catalog run's pools."""
    from pipelines.raystart import ensure_ray

    ensure_ray(cfg.run.ray_address, num_cpus=cfg.run.ray_num_cpus, dashboard=cfg.run.ray_dashboard)
    return require(
        catalog_asks(cfg),
        fixes=lambda verdict: catalog_fixes(cfg, verdict),
        wait_s=cfg.run.resource_wait_s,
        wait_field="run.resource_wait_s",
        probe=probe,
    )


def require_ray_train(
    name: str, section: Any, *, workers_field: str, gpu_fix: str, probe: Probe | None = None
) -> ClusterView:
    """:func:`require` Ray Train's workers as the config section ``name`` sets them (``use_gpu``,
    ``cpus_per_worker``, ``<workers_field>``, ``resource_wait_s``). ``gpu_fix``: how to train without
    GPUs, for the message when GPUs are what is missing."""
    ask = ray_train_ask(name, section, workers_field)

    def fixes(verdict: Verdict) -> str:
        fewer = f"fewer workers ({name}.{workers_field})"
        if "GPU" in verdict.missing:
            return f"{gpu_fix}, or {fewer}, or run on a Ray cluster with GPU nodes (docs/runbook.md, 'Resources')"
        return (
            f"{fewer} or a lower {name}.cpus_per_worker, or more logical CPUs for a local Ray, or a larger "
            "cluster (docs/runbook.md, 'Resources')"
        )

    wait_field = f"{name}.resource_wait_s"
    return require([ask], fixes=fixes, wait_s=section.resource_wait_s, wait_field=wait_field, probe=probe)
