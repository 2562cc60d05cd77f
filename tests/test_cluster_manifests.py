"""The cluster manifests, the container recipe and the VM launcher config are valid and agree.

Nothing here starts Ray or talks to a Kubernetes cluster; every test reads files. Checked:

- every KubeRay manifest validates against its CRD's ``openAPIV3Schema`` (from
  ``shared/data/kuberay-crds``; skipped when absent), strictly: a field the CRD does not define is an
  error here, where the API server would silently prune it (a typo like ``shutdownAfterJobFinish``
  would otherwise be accepted and ignored);
- the admission rules the KubeRay operator applies on top of the schema, restated from
  ``ray-operator/controllers/ray/utils/validation.go`` (names, autoscaler v2 restart policy, TTL
  needs ``shutdownAfterJobFinishes``, cron syntax, ...);
- the launcher YAML validates against Ray's ``ray-schema.json`` and Ray's own config checks;
- cross-references: one image everywhere, tagged with the project version; ``rayVersion`` equals the
  installed Ray, the Dockerfile's and the lock file's; torch and Python pins agree; entrypoint modules
  exist and accept the entrypoints' flags; config files exist and load; the GPU worker group can hold
  the job configs' actor pools; the head runs no Ray work; credentials only come from Secrets.

The entrypoint-module checks need ``jobs/generate.py`` and ``jobs/refresh.py``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipelines.config import ConfigBase, GenerateConfig, load_config, parse_assignment

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
DOCKERFILE = CLUSTER / "Dockerfile"
LOCK = CLUSTER / "requirements.txt"
LOCK_DEV = CLUSTER / "requirements-dev.txt"
LAUNCHER = CLUSTER / "launcher-aws.yaml"
DOCS = (REPO / "docs" / "cluster.md", CLUSTER / "README.md")

# kind -> (manifest in cluster/, CRD file in shared/data/kuberay-crds/)
KUBE_MANIFESTS = {
    "RayCluster": ("raycluster.yaml", "ray.io_rayclusters.yaml"),
    "RayJob": ("rayjob-generate.yaml", "ray.io_rayjobs.yaml"),
    "RayCronJob": ("raycronjob-refresh.yaml", "ray.io_raycronjobs.yaml"),
}
# Entrypoint module -> the config class its --config file must load as.
JOB_CONFIGS: dict[str, type[ConfigBase]] = {"jobs.generate": GenerateConfig, "jobs.refresh": GenerateConfig}
# Where Ray cluster specs and RayJob specs sit (keys of cluster_specs() and job_specs()).
CLUSTER_SPECS = ("raycluster.yaml", "rayjob-generate.yaml", "raycronjob-refresh.yaml")
JOB_SPECS = ("rayjob-generate.yaml", "raycronjob-refresh.yaml")

# KubeRay: a RayCluster name is at most 53 characters (63 minus "-serve-svc"); a RayJob's cluster is
# named after it plus 6 characters, so a RayJob name is at most 47; a RayCronJob's RayJobs are named
# after it plus 6 characters (e.g. "-l76h8"), so a RayCronJob name is at most 41.
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayCronJob": 41}
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Ray keeps resource quantities in fixed point with 4 decimal digits.
RAY_RESOURCE_UNIT = 10_000
SECRET_LIKE_ENV = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
AWS_ACCESS_KEY_ID_VALUE = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


# ---------------------------------------------------------------------------------------------------
# Reading the files.


def read_yaml(path: Path) -> Any:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1, f"{path.relative_to(REPO)} must hold exactly one YAML document, found {len(docs)}"
    return docs[0]


def manifest(kind: str) -> dict[str, Any]:
    return read_yaml(CLUSTER / KUBE_MANIFESTS[kind][0])


def cluster_specs() -> dict[str, dict[str, Any]]:
    """Every RayCluster spec in the manifests, by where it is."""
    return {
        "raycluster.yaml": manifest("RayCluster")["spec"],
        "rayjob-generate.yaml": manifest("RayJob")["spec"]["rayClusterSpec"],
        "raycronjob-refresh.yaml": manifest("RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"],
    }


def job_specs() -> dict[str, dict[str, Any]]:
    """Every RayJob spec in the manifests (a RayCronJob's jobTemplate is one), by file."""
    return {
        "rayjob-generate.yaml": manifest("RayJob")["spec"],
        "raycronjob-refresh.yaml": manifest("RayCronJob")["spec"]["jobTemplate"],
    }


def groups(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("head", headGroupSpec)`` then ``(groupName, workerGroupSpec)`` for each worker group."""
    yield "head", spec["headGroupSpec"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    """KubeRay runs Ray in the first container of a group's pod template."""
    return group["template"]["spec"]["containers"][0]


def all_containers(obj: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) of every pod template anywhere in ``obj``."""
    if isinstance(obj, dict):
        for key in ("containers", "initContainers"):
            if isinstance(obj.get(key), list):
                yield from (c for c in obj[key] if isinstance(c, dict) and "image" in c)
        for value in obj.values():
            yield from all_containers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from all_containers(value)


def cpu_quantity(value: str | int | float) -> float:
    """Kubernetes CPU quantity (``"8"``, ``"500m"``, ``2``) -> cores."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def ray_resources(group: dict[str, Any]) -> tuple[float, float]:
    """``(CPUs, GPUs)`` Ray advertises for one pod of ``group``, as KubeRay derives them.

    ``rayStartParams`` wins; otherwise KubeRay passes the container's limits (CPU rounded up).
    """
    params = group.get("rayStartParams", {})
    limits = ray_container(group).get("resources", {}).get("limits", {})
    cpus = (
        float(params["num-cpus"]) if "num-cpus" in params else math.ceil(cpu_quantity(limits.get("cpu", 0)))
    )
    gpus = float(params["num-gpus"]) if "num-gpus" in params else float(limits.get("nvidia.com/gpu", 0))
    return cpus, gpus


def gpu_group(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [(name, g) for name, g in groups(spec) if name != "head" and ray_resources(g)[1] > 0]
    assert len(found) == 1, f"expected exactly one GPU worker group, found {[n for n, _ in found]}"
    return found[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comment lines are dropped even inside a continuation
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_args() -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip().strip('"')
    return args


def lock_pins(lock: Path = LOCK) -> dict[str, tuple[str, frozenset[str]]]:
    """``canonical name -> (version, extras)`` from a lock written by `make lock` (every requirement
    an exact pin with its hashes)."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    text = re.sub(r"\\\n", " ", lock.read_text())  # join continuation lines
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *options = line.split(" --")
        assert options and all(o.startswith("hash=sha256:") for o in options), (
            f"{lock.name}: {requirement!r} has no sha256 hashes (run `make lock`)"
        )
        req = Requirement(requirement)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", (
            f"{lock.name}: {requirement!r} is not an exact pin (name==version)"
        )
        name = canonicalize_name(req.name)
        assert name not in pins, f"{lock.name}: {req.name} is pinned twice"
        pins[name] = (specs[0].version, frozenset(req.extras))
    return pins


def lock_python() -> str:
    found = re.search(r"^# Python (\d+\.\d+), ", LOCK.read_text(), re.MULTILINE)
    assert found, f"{LOCK.name} header must say which Python it was resolved for (run `make lock`)"
    return found.group(1)


def pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def image_reference() -> str:
    images = {c["image"] for kind in KUBE_MANIFESTS for c in all_containers(manifest(kind))}
    images |= {
        s["autoscalerOptions"]["image"]
        for s in cluster_specs().values()
        if "image" in s.get("autoscalerOptions", {})
    }
    assert len(images) == 1, (
        f"every container in cluster/*.yaml must run the same image, found {sorted(images)}"
    )
    return images.pop()


def parse_entrypoint(entrypoint: str) -> tuple[str, list[str]]:
    """``"python -m jobs.generate --config X ..."`` -> ``("jobs.generate", ["--config", "X", ...])``."""
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"] and len(argv) > 2, (
        f"entrypoint must be `python -m jobs.<name> ...` (the module form every job supports), got {entrypoint!r}"
    )
    return argv[2], argv[3:]


def container_path(path: str) -> Path:
    """A path as the job sees it (relative to the image's WORKDIR, or absolute under it) -> this checkout."""
    workdir = next(rest for word, rest in reversed(dockerfile_instructions()) if word == "WORKDIR")
    if os.path.isabs(path):
        assert path.startswith(workdir.rstrip("/") + "/"), (
            f"{path!r} is outside the image's WORKDIR {workdir}"
        )
        path = os.path.relpath(path, workdir)
    return REPO / path


def entrypoint_config(entrypoint: str) -> ConfigBase:
    """The config an entrypoint runs with: its --config file, --preset and --set overrides.

    The other flags (--catalog, --out, --rfnet, --no-inspect, ...) are left to the job module's own
    parser (job_module_config); none of them adds actors, so capacity checks on this config are safe.
    """
    module, argv = parse_entrypoint(entrypoint)
    assert module in JOB_CONFIGS, f"no config class known for {module}; add it to JOB_CONFIGS in this test"
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    parser.add_argument("--preset")
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    args, _ = parser.parse_known_args(argv)
    assert args.config, f"entrypoint {entrypoint!r} names no --config file"
    config_file = container_path(args.config)
    assert config_file.is_file(), (
        f"entrypoint's --config {args.config} does not exist (looked for {config_file})"
    )
    overrides = dict(parse_assignment(a) for a in args.assignments)
    return load_config(JOB_CONFIGS[module], preset=args.preset, config_file=config_file, overrides=overrides)


def flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------------------------------
# Schema validation helpers.


@cache
def crd(crds_dir: str, kind: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load((Path(crds_dir) / KUBE_MANIFESTS[kind][1]).read_text(), Loader=loader)


def crd_schema(crds_dir: Path, kind: str) -> tuple[str, dict[str, Any]]:
    """``(apiVersion, openAPIV3Schema)`` of the CRD's storage version."""
    definition = crd(str(crds_dir), kind)
    assert definition["spec"]["names"]["kind"] == kind
    version = next(v for v in definition["spec"]["versions"] if v.get("storage"))
    return f"{definition['spec']['group']}/{version['name']}", version["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema in which objects with declared ``properties`` admit no others.

    The API server prunes unknown fields of structural CRD schemas without an error; here they fail.
    Objects marked ``x-kubernetes-preserve-unknown-fields`` or with ``additionalProperties`` stay open.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _strict_validator(crds_dir: str, kind: str) -> jsonschema.Draft4Validator:
    _, schema = crd_schema(Path(crds_dir), kind)
    # OpenAPI v3.0 schemas are JSON Schema draft 4 plus annotations (x-kubernetes-*, format: int32)
    # that draft 4 validators ignore.
    return jsonschema.Draft4Validator(strict(schema))


def crd_errors(crds_dir: Path, kind: str, obj: dict[str, Any]) -> list[str]:
    api_version, _ = crd_schema(crds_dir, kind)
    errors = [] if obj.get("apiVersion") == api_version else [f"apiVersion must be {api_version}"]
    errors += [] if obj.get("kind") == kind else [f"kind must be {kind}"]
    for err in _strict_validator(str(crds_dir), kind).iter_errors(obj):
        where = ".".join(str(p) for p in err.absolute_path) or "<root>"
        errors.append(f"{where}: {err.message}")
    return errors


# ---------------------------------------------------------------------------------------------------
# The KubeRay operator's admission rules (validation.go), for what the manifests use.


def cluster_spec_errors(spec: dict[str, Any]) -> list[str]:
    errors = []
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    head_env = {
        e.get("name") for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    v2 = autoscaling and (
        spec.get("autoscalerOptions", {}).get("version") == "v2" or "RAY_enable_autoscaler_v2" in head_env
    )
    if spec.get("autoscalerOptions", {}).get("version") and "RAY_enable_autoscaler_v2" in head_env:
        errors.append("set autoscalerOptions.version or RAY_enable_autoscaler_v2 on the head, not both")
    for name, group in groups(spec):
        pod = group["template"]["spec"]
        params = group.get("rayStartParams", {})
        if not pod.get("containers"):
            errors.append(f"group {name}: the pod template needs at least one container")
        if group.get("resources") and {"num-cpus", "num-gpus", "memory", "resources"} & set(params):
            errors.append(f"group {name}: set Ray resources in rayStartParams or in resources, not both")
        if "labels" in params:
            errors.append(
                f"group {name}: rayStartParams['labels'] is not supported; use the group's labels field"
            )
        if v2 and pod.get("restartPolicy", "") not in ("", "Never"):
            errors.append(f"group {name}: restartPolicy must be Never or unset with autoscaler v2")
        if autoscaling and group.get("suspend"):
            errors.append(f"group {name}: a worker group cannot be suspended with autoscaling enabled")
    token_auth = spec.get("authOptions", {}).get("mode") == "token"
    if token_auth and Version(spec.get("rayVersion", "0")) < Version("2.52.0"):
        errors.append("authOptions.mode token needs rayVersion >= 2.52.0")
    return errors


def job_spec_errors(spec: dict[str, Any]) -> list[str]:
    errors = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    if spec.get("suspend") and not shutdown:
        errors.append("a RayJob with shutdownAfterJobFinishes false cannot be suspended")
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if ttl < 0:
        errors.append("ttlSecondsAfterFinished must be >= 0")
    if ttl > 0 and not shutdown:
        errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true")
    if "deletionStrategy" in spec:
        errors.append(
            "deletionStrategy needs the operator's RayJobDeletionPolicy feature gate; use shutdownAfterJobFinishes"
        )
    selector = spec.get("clusterSelector") or {}
    if not spec.get("rayClusterSpec") and not selector:
        errors.append("one of rayClusterSpec or clusterSelector must be set")
    if selector and not selector.get("ray.io/cluster"):
        errors.append("clusterSelector must name the cluster under the key ray.io/cluster")
    if spec.get("submissionMode") == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
        errors.append("backoffLimit is incompatible with InteractiveMode")
    if "activeDeadlineSeconds" in spec and spec["activeDeadlineSeconds"] <= 0:
        errors.append("activeDeadlineSeconds must be positive")
    if spec.get("backoffLimit", 0) < 0:
        errors.append("backoffLimit must be >= 0")
    if spec.get("runtimeEnvYAML"):
        try:
            yaml.safe_load(spec["runtimeEnvYAML"])
        except yaml.YAMLError as exc:
            errors.append(f"runtimeEnvYAML is not valid YAML: {exc}")
    if spec.get("rayClusterSpec"):
        errors += [f"rayClusterSpec: {e}" for e in cluster_spec_errors(spec["rayClusterSpec"])]
    return errors


CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)


def cron_sets(schedule: str) -> list[set[int]]:
    """A standard 5-field cron schedule -> the allowed values of each field. Raises ValueError."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"cron schedule {schedule!r} must have 5 fields (minute hour day month weekday)")
    sets = []
    for text, (name, lo, hi) in zip(fields, CRON_FIELDS, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            found = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", item)
            if not found:
                raise ValueError(f"cron {name} field {text!r}: {item!r} is not N, N-M, * or a /step of them")
            start, end = (
                (lo, hi)
                if found.group(1) == "*"
                else (int(found.group(2)), int(found.group(3) or found.group(2)))
            )
            step = int(found.group(4) or 1)
            if not (lo <= start <= end <= hi) or step < 1:
                raise ValueError(f"cron {name} field {text!r}: {item!r} is outside {lo}-{hi}")
            values.update(range(start, end + 1, step))
        sets.append(values)
    return sets


def cron_min_gap_seconds(schedule: str, days: int = 14) -> int:
    """Shortest time between two consecutive runs of ``schedule`` over ``days`` days."""
    minutes, hours, doms, months, dows = cron_sets(schedule)
    dom_any, dow_any = schedule.split()[2] == "*", schedule.split()[4] == "*"
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    fires = []
    for m in range(days * 24 * 60):
        t = start + dt.timedelta(minutes=m)
        weekday = t.isoweekday() % 7  # cron counts Sunday as 0
        if dow_any:
            day_ok = t.day in doms
        elif dom_any:
            day_ok = weekday in dows
        else:  # both restricted: cron runs when either matches
            day_ok = t.day in doms or weekday in dows
        if t.minute in minutes and t.hour in hours and t.month in months and day_ok:
            fires.append(m)
    assert len(fires) >= 2, f"schedule {schedule!r} fires fewer than twice in {days} days"
    return 60 * min(b - a for a, b in itertools.pairwise(fires))


def admission_errors(kind: str, obj: dict[str, Any]) -> list[str]:
    name = obj.get("metadata", {}).get("name", "")
    errors = []
    if not DNS1035_LABEL.match(name):
        errors.append(f"metadata.name {name!r} must be a DNS-1035 label (lower case, digits, '-')")
    if len(name) > MAX_NAME_LENGTH[kind]:
        errors.append(f"metadata.name {name!r} is longer than {MAX_NAME_LENGTH[kind]} characters")
    if kind == "RayCluster":
        errors += cluster_spec_errors(obj["spec"])
    elif kind == "RayJob":
        errors += job_spec_errors(obj["spec"])
    else:
        try:
            cron_sets(obj["spec"]["schedule"])
        except ValueError as exc:
            errors.append(str(exc))
        errors += [f"jobTemplate: {e}" for e in job_spec_errors(obj["spec"]["jobTemplate"])]
    return errors


# ---------------------------------------------------------------------------------------------------
# Capacity: can a group of identical pods hold the job's actor pools?


def actor_demands(cfg: GenerateConfig) -> list[tuple[float, float]]:
    """``(GPUs, CPUs)`` of every actor of the generation and inspection pools."""
    demands = [(cfg.generation.num_gpus, cfg.generation.num_cpus)] * cfg.generation.concurrency
    if cfg.inspect.enabled:
        demands += [(cfg.inspect.num_gpus, cfg.inspect.num_cpus)] * cfg.inspect.concurrency
    return demands


def pods_needed(demands: list[tuple[float, float]], pod: tuple[float, float]) -> int | None:
    """Pods of ``pod = (GPUs, CPUs)`` that first-fit-decreasing packing needs; None if an actor fits none.

    Quantities are compared in Ray's fixed-point units, so 0.9 + 0.1 GPU fills exactly one GPU.
    """
    cap = tuple(round(x * RAY_RESOURCE_UNIT) for x in pod)
    free: list[list[int]] = []
    for gpu, cpu in sorted(demands, reverse=True):
        need = (round(gpu * RAY_RESOURCE_UNIT), round(cpu * RAY_RESOURCE_UNIT))
        if need[0] > cap[0] or need[1] > cap[1]:
            return None
        slot = next((f for f in free if f[0] >= need[0] and f[1] >= need[1]), None)
        if slot is None:
            slot = list(cap)
            free.append(slot)
        slot[0] -= need[0]
        slot[1] -= need[1]
    return len(free)


def capacity_errors(cfg: GenerateConfig, pod: tuple[float, float], max_pods: int, where: str) -> list[str]:
    gpus, cpus = pod
    errors = []
    if cfg.generation.num_gpus <= 0:
        errors.append(
            f"{where}: generation.num_gpus is {cfg.generation.num_gpus}; a cluster config must use GPUs"
        )
    if gpus < cfg.generation.num_gpus:
        errors.append(f"{where}: {gpus} GPUs per pod < generation.num_gpus {cfg.generation.num_gpus}")
    demand = sum(g for g, _ in actor_demands(cfg))
    if max_pods * gpus + 1e-9 < demand:
        errors.append(
            f"{where}: max {max_pods} pods x {gpus} GPUs < generation.concurrency x num_gpus + "
            f"inspect.concurrency x num_gpus = {demand:g}"
        )
    needed = pods_needed(actor_demands(cfg), (gpus, cpus))
    if needed is None:
        errors.append(f"{where}: an actor asks for more than one pod's ({gpus:g} GPU, {cpus:g} CPU)")
    elif needed > max_pods:
        errors.append(
            f"{where}: the generation and inspection actors need {needed} pods of ({gpus:g} GPU, {cpus:g} CPU) "
            f"when packed, but at most {max_pods} can start; raise the group's maximum or shrink "
            "generation/inspect concurrency (docs/cluster.md, 'Scaling')"
        )
    return errors


def listing(title: str, errors: list[str]) -> str:
    return title + "\n  " + "\n  ".join(errors)


# ---------------------------------------------------------------------------------------------------
# KubeRay manifests against the CRDs and the operator's rules.


@pytest.mark.parametrize("kind", sorted(KUBE_MANIFESTS))
def test_manifest_validates_against_its_crd(crds_dir: Path, kind: str) -> None:
    errors = crd_errors(crds_dir, kind, manifest(kind))
    assert not errors, listing(f"cluster/{KUBE_MANIFESTS[kind][0]} does not match the {kind} CRD:", errors)


def test_strict_crd_validation_rejects_unknown_and_mistyped_fields(crds_dir: Path) -> None:
    good = manifest("RayJob")
    assert not crd_errors(crds_dir, "RayJob", good)

    typo = copy.deepcopy(good)
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    assert any("'shutdownAfterJobFinish' was unexpected" in e for e in crd_errors(crds_dir, "RayJob", typo))

    not_a_string = copy.deepcopy(good)
    not_a_string["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert any("rayStartParams.num-cpus" in e for e in crd_errors(crds_dir, "RayJob", not_a_string))

    no_group_name = copy.deepcopy(good)
    del no_group_name["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e for e in crd_errors(crds_dir, "RayJob", no_group_name))

    unknown_container_field = copy.deepcopy(manifest("RayCluster"))
    ray_container(unknown_container_field["spec"]["headGroupSpec"])["imagePullPolicyy"] = "Always"
    assert any("imagePullPolicyy" in e for e in crd_errors(crds_dir, "RayCluster", unknown_container_field))


@pytest.mark.parametrize("kind", sorted(KUBE_MANIFESTS))
def test_manifest_passes_the_operators_admission_rules(kind: str) -> None:
    errors = admission_errors(kind, manifest(kind))
    assert not errors, listing(f"cluster/{KUBE_MANIFESTS[kind][0]} would be rejected by KubeRay:", errors)


def test_admission_rules_reject_what_the_operator_rejects() -> None:
    job = manifest("RayJob")
    assert not admission_errors("RayJob", job)

    ttl_without_shutdown = copy.deepcopy(job)
    ttl_without_shutdown["spec"]["shutdownAfterJobFinishes"] = False
    assert any("shutdownAfterJobFinishes" in e for e in admission_errors("RayJob", ttl_without_shutdown))

    restarting_worker = copy.deepcopy(job)
    restarting_worker["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"][
        "restartPolicy"
    ] = "Always"
    assert any("restartPolicy" in e for e in admission_errors("RayJob", restarting_worker))

    long_name = copy.deepcopy(manifest("RayCronJob"))
    long_name["metadata"]["name"] = "reliable-ad-nightly-refresh-of-the-main-catalog"
    assert any("longer than 41" in e for e in admission_errors("RayCronJob", long_name))

    with pytest.raises(ValueError, match="5 fields"):
        cron_sets("0 2 * *")
    with pytest.raises(ValueError, match="outside 0-23"):
        cron_sets("0 24 * * *")
    assert cron_min_gap_seconds("0 2 * * *") == 86_400
    assert cron_min_gap_seconds("*/15 * * * *") == 900


def render_module():
    spec = importlib.util.spec_from_file_location("cluster_render", CLUSTER / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifests_are_rendered_from_one_cluster_spec() -> None:
    render = render_module()
    assert set(render.MANIFESTS) == {name for name, _ in KUBE_MANIFESTS.values()}
    for name in render.MANIFESTS:
        assert (CLUSTER / name).read_text() == render.render(name), (
            f"cluster/{name} is not what cluster/src/ renders: edit cluster/src/ and run python cluster/render.py"
        )
    specs = cluster_specs()
    reference = specs.pop("raycluster.yaml")
    assert reference == yaml.safe_load(render.SPEC.read_text())
    for where, spec in specs.items():
        assert spec == reference, (
            f"cluster/{where} embeds a Ray cluster other than cluster/src/ray-cluster.yaml"
        )
    assert render.main(["--check"]) == 0


def test_render_check_names_a_hand_edited_manifest(tmp_path, monkeypatch) -> None:
    render = render_module()
    copy_dir = tmp_path / "cluster"
    (copy_dir / "src").mkdir(parents=True)
    for path in (CLUSTER / "src").iterdir():
        (copy_dir / "src" / path.name).write_text(path.read_text())
    for name in render.MANIFESTS:
        (copy_dir / name).write_text((CLUSTER / name).read_text())
    monkeypatch.setattr(render, "CLUSTER", copy_dir)
    monkeypatch.setattr(render, "SOURCES", copy_dir / "src")
    monkeypatch.setattr(render, "SPEC", copy_dir / "src" / "ray-cluster.yaml")
    edited = copy_dir / "rayjob-generate.yaml"
    edited.write_text(edited.read_text().replace("maxReplicas: 8", "maxReplicas: 9"))
    assert render.main(["--check"]) == 1
    assert render.main([]) == 0 and render.main(["--check"]) == 0
    assert edited.read_text() == (CLUSTER / "rayjob-generate.yaml").read_text()


def test_model_pods_mount_the_persistent_cache() -> None:
    """The head and the GPU pods mount the cache claim where the image keeps its caches, so model
    mirrors and compiled graphs survive a run (a RayJob's cluster is deleted after every run)."""
    pvc = read_yaml(CLUSTER / "cache-pvc.yaml")
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "GPU pods on several nodes share the cache"
    assert pvc["spec"]["resources"]["requests"]["storage"]
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    cached = [env["RELIABLE_AD_CACHE"], env["HF_HOME"]]
    for where, spec in cluster_specs().items():
        for name, group in [("head", spec["headGroupSpec"]), gpu_group(spec)]:
            pod = group["template"]["spec"]
            claims = {
                v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in pod.get("volumes", [])
                if "persistentVolumeClaim" in v
            }
            mounts = {
                m["mountPath"]: m["name"]
                for m in ray_container(group).get("volumeMounts", [])
                if m["name"] in claims
            }
            for path in cached:
                mount = next((m for m in mounts if path.startswith(m.rstrip("/") + "/")), None)
                assert mount and claims[mounts[mount]] == pvc["metadata"]["name"], (
                    f"{where}: group {name} does not keep {path} on the claim {pvc['metadata']['name']}"
                )


# ---------------------------------------------------------------------------------------------------
# Cluster shape.


@pytest.mark.parametrize("where", CLUSTER_SPECS)
def test_head_runs_no_ray_work(where: str) -> None:
    head = cluster_specs()[where]["headGroupSpec"]
    assert head.get("rayStartParams", {}).get("num-cpus") == "0", (
        f"{where}: head rayStartParams needs num-cpus: '0'"
    )
    assert ray_resources(head)[1] == 0, f"{where}: the head must not request GPUs"


@pytest.mark.parametrize("where", CLUSTER_SPECS)
def test_worker_groups_autoscale_with_set_resources(where: str) -> None:
    spec = cluster_specs()[where]
    assert spec.get("enableInTreeAutoscaling") is True, f"{where}: enableInTreeAutoscaling must be true"
    name, gpu = gpu_group(spec)
    limits = ray_container(gpu)["resources"]["limits"]
    requests = ray_container(gpu)["resources"]["requests"]
    assert gpu.get("rayStartParams", {}).get("num-gpus") == str(limits["nvidia.com/gpu"]), (
        f"{where}: group {name}: rayStartParams num-gpus must equal the container's nvidia.com/gpu limit"
    )
    assert requests.get("nvidia.com/gpu") == limits["nvidia.com/gpu"], (
        f"{where}: GPU request must equal its limit"
    )
    cpu_groups = [n for n, g in groups(spec) if n != "head" and ray_resources(g)[1] == 0]
    assert cpu_groups, f"{where}: a CPU worker group is needed for read / prepare / write tasks"
    for group_name, group in groups(spec):
        if group_name != "head":
            lo, hi, start = (
                group["minReplicas"],
                group["maxReplicas"],
                group.get("replicas", group["minReplicas"]),
            )
            assert lo <= start <= hi and lo < hi, (
                f"{where}: group {group_name}: need min <= replicas <= max, min < max"
            )
        resources = ray_container(group).get("resources", {})
        for key in ("cpu", "memory"):
            assert key in resources.get("limits", {}) and key in resources.get("requests", {}), (
                f"{where}: group {group_name}: set resources.requests and .limits for {key}"
            )
            assert str(resources["requests"][key]) == str(resources["limits"][key]), (
                f"{where}: group {group_name}: {key} request != limit (Ray sizes itself from the limit)"
            )


# ---------------------------------------------------------------------------------------------------
# Image, versions, container recipe.


def test_one_image_everywhere_tagged_with_the_project_version() -> None:
    image = image_reference()
    repository, _, tag = image.rpartition(":")
    version = pyproject()["project"]["version"]
    assert repository and tag == version, f"image {image!r} must be tagged with the project version {version}"
    assert dockerfile_args().get("PROJECT_VERSION") == version, (
        "cluster/Dockerfile ARG PROJECT_VERSION != project version"
    )
    for doc in DOCS:
        assert f"docker build -f cluster/Dockerfile -t {image} ." in doc.read_text(), (
            f"{doc.relative_to(REPO)} must show the build command for {image}"
        )


def test_ray_version_agrees_everywhere() -> None:
    import ray

    installed = ray.__version__
    for where, spec in cluster_specs().items():
        assert spec.get("rayVersion") == installed, (
            f"{where}: rayVersion {spec.get('rayVersion')} != installed ray {installed}"
        )
    assert dockerfile_args().get("RAY_VERSION") == installed, (
        "cluster/Dockerfile ARG RAY_VERSION != installed ray"
    )
    assert lock_pins()["ray"][0] == installed, (
        f"cluster/requirements.txt pins ray {lock_pins()['ray'][0]}, installed is {installed}: "
        "run `make lock`"
    )


def test_torch_and_python_pins_agree() -> None:
    import torch

    args = dockerfile_args()
    makefile_pin = re.search(r"^TORCH_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert makefile_pin, "Makefile must pin the CPU torch (TORCH_VERSION ?= X)"
    pins = {
        "cluster/Dockerfile ARG TORCH_VERSION": args.get("TORCH_VERSION"),
        "cluster/requirements.txt": lock_pins()["torch"][0],
        "Makefile TORCH_VERSION": makefile_pin.group(1),
        "installed torch (public version)": Version(torch.__version__).public,
    }
    assert len(set(pins.values())) == 1, f"torch pins disagree: {pins}"
    assert args.get("PYTHON_VERSION") == lock_python(), (
        f"cluster/Dockerfile uses Python {args.get('PYTHON_VERSION')} but cluster/requirements.txt was "
        f"generated with Python {lock_python()}; markers would resolve differently"
    )


def test_lock_file_pins_every_runtime_dependency() -> None:
    pins = lock_pins()
    for text in pyproject()["project"]["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, (
            f"{req.name} is a dependency but not in cluster/requirements.txt: run `make lock`"
        )
        version, extras = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"pinned {req.name}=={version} violates {text!r}"
        )
        assert not extras, (
            "lock lines pin distributions, never extras (their requirements are pinned on their own)"
        )
        for extra in req.extras:
            for sub_text in importlib.metadata.requires(req.name) or []:
                sub = Requirement(sub_text)
                if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(sub.name) in pins, (
                        f"{sub.name} (needed by {req.name}[{extra}]) is not pinned: run `make lock`"
                    )


def test_the_two_locks_agree_and_leave_torchs_cuda_libraries_out() -> None:
    runtime, dev = lock_pins(LOCK), lock_pins(LOCK_DEV)
    assert set(runtime) <= set(dev), f"pinned for the image only: {sorted(set(runtime) - set(dev))}"
    differ = {name: (v, dev[name][0]) for name, (v, _) in runtime.items() if dev[name][0] != v}
    assert not differ, f"the image and the dev environment pin different versions: {differ}"
    project = pyproject()["project"]
    for test_dep in project["optional-dependencies"]["test"]:
        name = canonicalize_name(Requirement(test_dep).name)
        if name != canonicalize_name(project["name"]):  # the test extra may pull in another extra
            assert name in dev, f"{test_dep} is not in {LOCK_DEV.name}"
    # The CUDA wheel of torch pins these itself; a CPU machine must never download them.
    cuda = sorted(n for n in dev if n.startswith(("nvidia-", "cuda-")) or n == "triton")
    assert not cuda, f"the locks pin torch's CUDA libraries: {cuda}"
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK_DEV)" in makefile and "\nlock:" in makefile


def test_dockerfile_runs_as_non_root_from_the_manifests_workdir() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms and froms[0].startswith("python:${PYTHON_VERSION}-"), (
        "the base must be the pinned Python image"
    )
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "cluster/Dockerfile must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, (
        f"USER {users[-1]!r} must be a numeric non-root uid (runAsNonRoot needs it)"
    )
    workdir = [rest for word, rest in instructions if word == "WORKDIR"][-1]
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    for step in (
        "pip install --require-hashes -r /tmp/requirements.txt",
        "pip install --no-deps /app",
        "pip check",
    ):
        assert step in runs, f"cluster/Dockerfile must run `{step}` (pinned closure, then the project as is)"
    copies = [rest.split() for word, rest in instructions if word == "COPY"]
    for parts in copies:
        sources = [p for p in parts[:-1] if not p.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"cluster/Dockerfile copies {source}, which does not exist"
    for kind in KUBE_MANIFESTS:
        for container in all_containers(manifest(kind)):
            assert container.get("workingDir") == workdir, (
                f"{KUBE_MANIFESTS[kind][0]}: container {container['name']} must set workingDir {workdir} (the image's WORKDIR)"
            )
    for where, spec in cluster_specs().items():
        for name, group in groups(spec):
            security = group["template"]["spec"].get("securityContext", {})
            assert security.get("runAsNonRoot") is True and security.get("runAsUser") == int(uid), (
                f"{where}: group {name}: pod securityContext needs runAsNonRoot: true, runAsUser: {uid}"
            )


# ---------------------------------------------------------------------------------------------------
# Entrypoints and job configs.


@pytest.mark.parametrize("where", JOB_SPECS)
def test_entrypoint_module_exists(where: str) -> None:
    module, _ = parse_entrypoint(job_specs()[where]["entrypoint"])
    assert importlib.util.find_spec(module) is not None, (
        f"{where}: entrypoint runs `python -m {module}`, which does not exist"
    )


def job_module_config(where: str) -> ConfigBase:
    """The config the job module builds from the entrypoint of ``where``, with its own parser.

    Fails the test if the module is missing or rejects a flag. ``--config`` is mapped from the
    image's WORKDIR to this checkout.
    """
    from jobs.common import build_parser, config_from_args

    module_name, argv = parse_entrypoint(job_specs()[where]["entrypoint"])
    assert importlib.util.find_spec(module_name) is not None, f"{where}: module {module_name} does not exist"
    spec = importlib.import_module(module_name).SPEC
    local_argv = []
    for previous, arg in zip(["", *argv], argv, strict=False):
        if previous == "--config":
            arg = str(container_path(arg))
        elif arg.startswith("--config="):
            arg = "--config=" + str(container_path(arg.split("=", 1)[1]))
        local_argv.append(arg)
    try:
        args = build_parser(spec).parse_args(local_argv)
    except SystemExit as exc:
        pytest.fail(
            f"{where}: `python -m {module_name}` rejects the entrypoint's flags {argv} (exit {exc.code})"
        )
    cfg = config_from_args(spec, args)
    assert isinstance(cfg, JOB_CONFIGS[module_name]), f"{module_name} builds {type(cfg).__name__}"
    return cfg


@pytest.mark.parametrize("where", JOB_SPECS)
def test_entrypoint_flags_are_accepted_by_the_job(where: str) -> None:
    """The job module's own parser takes the entrypoint, and the config it builds is ready to run."""
    cfg = job_module_config(where)
    cfg.check_ready()
    for attr in ("catalog", "out"):
        value = getattr(cfg, attr, None)
        assert value and value.startswith("s3://"), (
            f"{where}: on a cluster --{attr} must be shared storage (s3://)"
        )


@pytest.mark.parametrize("where", JOB_SPECS)
def test_gpu_group_holds_the_jobs_actor_pools(where: str) -> None:
    job = job_specs()[where]
    cfg = entrypoint_config(job["entrypoint"])
    spec = job["rayClusterSpec"]
    name, gpu = gpu_group(spec)
    cpus, gpus = ray_resources(gpu)
    errors = capacity_errors(cfg, (gpus, cpus), gpu["maxReplicas"], f"{where} group {name}")
    assert not errors, "\n".join(errors)
    cpu_pods = [ray_resources(g)[0] for n, g in groups(spec) if n != "head" and ray_resources(g)[1] == 0]
    largest_task = max(cfg.run.prepare_num_cpus, cfg.run.write_num_cpus)
    assert max(cpu_pods) >= largest_task, (
        f"{where}: no CPU pod can run a {largest_task}-CPU prepare/write task"
    )


def test_capacity_check_rejects_pools_that_do_not_fit() -> None:
    cfg = entrypoint_config(job_specs()["rayjob-generate.yaml"]["entrypoint"])
    pod = (1.0, 8.0)
    assert not capacity_errors(cfg, pod, 8, "fits")
    assert pods_needed(actor_demands(cfg), pod) == 8  # 0.9 + 0.1 GPU share a pod exactly

    one_more = cfg.model_copy(update={"generation": cfg.generation.model_copy(update={"concurrency": 9})})
    assert any("when packed" in e for e in capacity_errors(one_more, pod, 8, "9 actors"))
    whole_gpus = cfg.model_copy(update={"generation": cfg.generation.model_copy(update={"num_gpus": 1.0})})
    # 8 x 1.0 + 2 x 0.1 = 8.2 GPUs: the sum and the packing both need a 9th pod.
    errors = capacity_errors(whole_gpus, pod, 8, "whole GPUs")
    assert any("8.2" in e for e in errors) and any("need 9 pods" in e for e in errors)
    two_gpu_actors = cfg.model_copy(
        update={"generation": cfg.generation.model_copy(update={"num_gpus": 2.0})}
    )
    assert any("GPUs per pod" in e for e in capacity_errors(two_gpu_actors, pod, 64, "2-GPU actors"))


def test_jobs_sharing_an_output_store_hash_their_config_the_same() -> None:
    """Refresh compares content hashes that include the config hash: a mismatch would redo everything.

    The configs are built by the job modules from the whole entrypoints, since flags such as
    --controlnet or --max-attempts change the hash too.
    """
    by_out: dict[str, list[tuple[str, str]]] = {}
    for where, job in job_specs().items():
        _, argv = parse_entrypoint(job["entrypoint"])
        out = flag_value(argv, "--out")
        assert out, f"{where}: entrypoint must name --out"
        by_out.setdefault(out, []).append((where, job_module_config(where).config_hash()))
    shared = {out: jobs for out, jobs in by_out.items() if len(jobs) > 1}
    assert shared, "the nightly refresh should maintain the catalog run's output store (same --out)"
    for out, jobs in shared.items():
        assert len({h for _, h in jobs}) == 1, f"jobs writing {out} disagree on config_hash: {jobs}"


def test_nightly_refresh_cannot_overlap_the_next_run() -> None:
    cron = manifest("RayCronJob")["spec"]
    period = cron_min_gap_seconds(cron["schedule"])
    deadline = cron["jobTemplate"].get("activeDeadlineSeconds")
    assert deadline and deadline < period, (
        f"RayCronJob has no concurrency policy: jobTemplate.activeDeadlineSeconds ({deadline}) must end a run "
        f"before the next one starts ({period} s later)"
    )
    assert cron["jobTemplate"].get("shutdownAfterJobFinishes") is True


# ---------------------------------------------------------------------------------------------------
# Credentials.


def test_credentials_come_from_secrets_only() -> None:
    for kind in KUBE_MANIFESTS:
        for container in all_containers(manifest(kind)):
            for env in container.get("env", []):
                if SECRET_LIKE_ENV.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), (
                        f"{KUBE_MANIFESTS[kind][0]}: {container['name']} sets {env['name']} inline; "
                        "reference a Secret (valueFrom.secretKeyRef)"
                    )
    for where, spec in cluster_specs().items():
        envs = {name: ray_container(g).get("env", []) for name, g in groups(spec)}
        first = next(iter(envs.values()))
        assert all(e == first for e in envs.values()), (
            f"{where}: every Ray container needs the same credential env"
        )
        names = {e["name"] for e in first}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names, (
            f"{where}: S3 credentials are not passed in"
        )
    files = [*CLUSTER.iterdir(), *(REPO / "jobs" / "configs").glob("cluster_*.yaml")]
    for path in files:
        if path.is_file():
            text = path.read_text()
            assert not AWS_ACCESS_KEY_ID_VALUE.search(text), (
                f"{path.relative_to(REPO)} holds an AWS access key id"
            )
            assert not re.search(r"aws_secret_access_key\s*[:=]\s*\S", text, re.IGNORECASE), (
                f"{path.relative_to(REPO)} assigns a secret access key"
            )


# ---------------------------------------------------------------------------------------------------
# VM launcher.


def test_launcher_validates_against_rays_schema() -> None:
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = read_yaml(LAUNCHER)
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(config)
    ]
    assert not errors, listing("cluster/launcher-aws.yaml does not match ray-schema.json:", errors)

    typo = {**config, "max_worker": 3}
    assert any("max_worker" in e.message for e in validator.iter_errors(typo))

    # Ray's own checks after filling the provider defaults, as `ray up` does before talking to AWS.
    validate_config(prepare_config(copy.deepcopy(config)))


def test_launcher_matches_the_kuberay_shape_and_installs_the_pins() -> None:
    config = read_yaml(LAUNCHER)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU"), (
        "launcher head must have CPU: 0"
    )

    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert len(gpu_types) == 1, f"expected one GPU worker type, found {sorted(gpu_types)}"
    ((name, gpu),) = gpu_types.items()
    cfg = entrypoint_config(job_specs()["rayjob-generate.yaml"]["entrypoint"])
    pod = (float(gpu["resources"]["GPU"]), float(gpu["resources"]["CPU"]))
    max_gpu_nodes = min(gpu["max_workers"], config["max_workers"])
    errors = capacity_errors(cfg, pod, max_gpu_nodes, f"launcher node type {name}")
    assert not errors, "\n".join(errors)
    assert any(
        t["resources"].get("GPU", 0) == 0 and n != config["head_node_type"] for n, t in types.items()
    ), "launcher needs a CPU worker type for read / prepare / write tasks"

    lock_remote = next(
        (r for r, loc in config["file_mounts"].items() if Path(loc) == Path("cluster/requirements.txt")), None
    )
    assert lock_remote, "launcher must ship cluster/requirements.txt to the nodes"

    setup = "\n".join(config["setup_commands"])
    torch_version = dockerfile_args()["TORCH_VERSION"]
    assert f'"torch=={torch_version}"' in setup, f"launcher must install torch=={torch_version}"
    assert f"-r {lock_remote}" in setup, "launcher must install the pinned cluster/requirements.txt"
    assert "--no-deps" in setup, "launcher must install the project without re-resolving its dependencies"
    assert f"--python {lock_python()} " in setup, f"launcher must create a Python {lock_python()} environment"
    assert re.search(r"astral\.sh/uv/\d+\.\d+\.\d+/install\.sh", setup), "launcher must install a pinned uv"
    boto3 = re.search(r'"boto3==(\d+)\.(\d+)\.\d+"', "\n".join(config.get("head_setup_commands", [])))
    botocore = Version(lock_pins()["botocore"][0])
    assert boto3 and (int(boto3.group(1)), int(boto3.group(2))) == (botocore.major, botocore.minor), (
        f"head needs boto3 for the autoscaler, from the release line of the pinned botocore {botocore}"
    )
    for command in config["head_start_ray_commands"]:
        assert "--num-cpus" not in command or "--num-cpus=0" in command, "head must advertise no CPUs"


def test_launcher_ships_files_that_exist() -> None:
    for remote, local in read_yaml(LAUNCHER)["file_mounts"].items():
        assert (REPO / local).exists(), (
            f"launcher file_mounts {remote}: {local} does not exist in the repository"
        )


# ---------------------------------------------------------------------------------------------------
# Docs.


def test_docs_name_files_that_exist() -> None:
    for doc in DOCS:
        text = doc.read_text()
        for ref in sorted(
            set(re.findall(r"\b((?:cluster|jobs/configs)/[\w.-]+\.(?:yaml|txt|py|md|dockerignore))", text))
        ):
            assert (REPO / ref).exists(), f"{doc.relative_to(REPO)} mentions {ref}, which does not exist"
