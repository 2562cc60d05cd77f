"""Shared utilities for the benchmarks: machine description, memory sampling, catalogs, JSON output.

Measurements on a shared machine are disturbed by whatever else runs on it, so every result file
records the load average before and after the measurement (``os.getloadavg()``: runnable processes
averaged over 1, 5 and 15 minutes); compare it with the number of cores before trusting a figure.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Process names of Ray's own services (everything under a local Ray that is not a worker).
RAY_SYSTEM_NAMES = (
    "raylet",
    "gcs_server",
    "dashboard",
    "log_monitor",
    "monitor",
    "ray_client_server",
    "runtime_env_agent",
    "dashboard_agent",
    "ray_process_reaper",
)


def loadavg() -> list[float]:
    """``[1 min, 5 min, 15 min]`` load averages, rounded (0 where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, software versions, current load."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "loadavg": loadavg(),
    }
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        info["ray"] = None
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def command_line(module: str) -> str:
    """The command that produced a result, as it would be typed: ``python -m MODULE ARGS...``."""
    return " ".join(["python -m", module, *(shlex.quote(a) for a in sys.argv[1:])])


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width table (numbers formatted by the caller)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Memory.


def _role(proc: psutil.Process, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "driver"
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline()[:3])
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "other"
    if name.startswith("ray::") or "default_worker.py" in cmd:
        return "ray_workers"
    if any(s in name or s in cmd for s in RAY_SYSTEM_NAMES):
        return "ray_system"
    return "other"


class PeriodicSampler:
    """Calls ``sample()`` every ``interval_s`` on a daemon thread while used as a context manager
    (once more on entry and on exit); ``_t0`` is the entry time."""

    thread_name = "sampler"
    interval_s: float

    def _init_periodic(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def sample(self) -> object:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> Self:
        self._t0 = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


@dataclass
class RssSampler(PeriodicSampler):
    """Samples the resident set size of this process and all its descendants every ``interval_s``.

    A local Ray started by this process (``ray.init``) runs as descendants: GCS, raylet, dashboard
    and every worker, so the total covers the whole job. RSS counts a shared page once per process
    that touched it (Ray's object store is shared memory), so the total is an upper bound on the
    physical memory in use. Peaks are kept in bytes per role (``driver``, ``ray_workers``,
    ``ray_system``, ``other``) and in total; ``series`` holds ``(seconds, total MiB)`` per sample.

    It also adds up the CPU time (user + system) the processes spent while sampled: a process's
    last reading counts, so one that exits between two samples loses at most ``interval_s`` of it.
    On a shared machine CPU-seconds per image are steadier than images per second.
    """

    thread_name = "rss-sampler"
    interval_s: float = 1.0
    root_pid: int = field(default_factory=os.getpid)
    peak_total: int = 0
    peak_by_role: dict[str, int] = field(default_factory=dict)
    peak_processes: int = 0
    samples: int = 0
    series: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._init_periodic()
        self._cpu_first: dict[int, float] = {}  # pid -> CPU seconds at its first sample (0 if born later)
        self._cpu_last: dict[int, float] = {}
        self._cpu_role: dict[int, str] = {}
        self._started = False

    @property
    def cpu_s(self) -> float:
        """CPU seconds spent by the sampled processes since the sampler started."""
        return sum(self._cpu_last[pid] - self._cpu_first[pid] for pid in self._cpu_last)

    def cpu_s_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, last in self._cpu_last.items():
            role = self._cpu_role[pid]
            out[role] = out.get(role, 0.0) + last - self._cpu_first[pid]
        return out

    def _track_cpu(self, proc: psutil.Process, role: str) -> None:
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        used = times.user + times.system
        if proc.pid not in self._cpu_first:
            # Processes alive when sampling starts count from there; later ones from their birth.
            self._cpu_first[proc.pid] = used if not self._started else 0.0
        self._cpu_last[proc.pid] = used
        self._cpu_role[proc.pid] = role

    def sample(self) -> int:
        root = psutil.Process(self.root_pid)
        procs = [root]
        with suppress(psutil.NoSuchProcess):
            procs += root.children(recursive=True)
        by_role: dict[str, int] = {}
        for p in procs:
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            role = _role(p, self.root_pid)
            by_role[role] = by_role.get(role, 0) + rss
            self._track_cpu(p, role)
        self._started = True
        total = sum(by_role.values())
        self.samples += 1
        self.peak_total = max(self.peak_total, total)
        self.peak_processes = max(self.peak_processes, len(procs))
        for role, rss in by_role.items():
            self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), rss)
        self.series.append((round(time.monotonic() - self._t0, 1), round(total / 2**20, 1)))
        return total

    def summary(self, with_series: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "peak_rss_mib": round(self.peak_total / 2**20, 1),
            "peak_rss_mib_by_role": {k: round(v / 2**20, 1) for k, v in sorted(self.peak_by_role.items())},
            "peak_processes": self.peak_processes,
            "cpu_s": round(self.cpu_s, 1),
            "cpu_s_by_role": {k: round(v, 1) for k, v in sorted(self.cpu_s_by_role().items())},
            "samples": self.samples,
            "interval_s": self.interval_s,
        }
        if with_series:
            out["series_s_mib"] = self.series
        return out


@dataclass
class FileCountSampler(PeriodicSampler):
    """Counts files under ``root`` every ``interval_s`` in a background thread: output as it lands.

    The writers of a pipeline save images as they finish, independently of when the driver reads
    its results, so the count over time is the pipeline's real output curve. :meth:`steady_rate`
    is its slope between two fractions of the expected total, which leaves out start-up (actor
    start, model load, compilation) and the drain at the end.
    """

    thread_name = "file-counter"
    root: str | Path
    interval_s: float = 0.5
    suffix: str = ".png"
    series: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._init_periodic()

    def count(self) -> int:
        root = Path(self.root)
        if not root.is_dir():
            return 0
        return sum(1 for _, _, files in os.walk(root) for f in files if f.endswith(self.suffix))

    def sample(self) -> int:
        n = self.count()
        self.series.append((time.monotonic() - self._t0, n))
        return n

    def first_time(self, count: int) -> float | None:
        """Seconds from the start until at least ``count`` files existed (None if never)."""
        return next((t for t, n in self.series if n >= count), None)

    def steady_rate(self, total: int, lo: float = 0.1, hi: float = 0.9, min_steps: int = 3) -> float | None:
        """Files per second between the first sample with >= ``lo * total`` and the first with
        >= ``hi * total`` files.

        None when that stretch holds fewer than ``min_steps`` increases of the count: files that land
        in one or two bursts (a downstream stage batching the whole run) give no steady rate, only
        the time of the burst.
        """
        t_lo, t_hi = self.first_time(max(1, math.ceil(lo * total))), self.first_time(math.ceil(hi * total))
        if t_lo is None or t_hi is None or t_hi <= t_lo:
            return None
        stretch = [n for t, n in self.series if t_lo <= t <= t_hi]
        if sum(1 for a, b in itertools.pairwise(stretch) if b > a) < min_steps:
            return None
        return (stretch[-1] - stretch[0]) / (t_hi - t_lo)


def current_rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


# ----------------------------------------------------------------------------------------------------
# Workload.


def write_bench_catalog(root: str | Path, items: int, distinct: int = 48, seed: int = 7) -> Path:
    """A catalog of ``items`` rows over ``distinct`` drawn products (rows reuse product images).

    Drawing and saving a product costs tens of milliseconds, so large catalogs cycle through a pool
    of ``distinct`` products (``rfnet.data.sample``: RGBA cut-outs, one RGB-on-white image); each row
    has its own ``sku_id`` (``B000000``...) and hence its own seeds and prompts. Returns the path of
    ``root/catalog.jsonl``; image paths are relative to it.
    """
    from rfnet.data.sample import write_sample_catalog

    if items < 1 or distinct < 1:
        raise ValueError(f"items and distinct must be >= 1, got items={items}, distinct={distinct}")
    root = Path(root)
    pool_catalog = write_sample_catalog(root / "pool", items=min(distinct, items), seed=seed)
    pool = [json.loads(line) for line in pool_catalog.read_text(encoding="utf-8").splitlines() if line]
    path = root / "catalog.jsonl"
    with path.open("w", encoding="utf-8") as f:  # line by line: a benchmark's driver starts small
        for i in range(items):
            src = pool[i % len(pool)]
            row = {"sku_id": f"B{i:06d}", "image": f"pool/{src['image']}", "caption": src.get("caption", "")}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------
# Ray.


def start_local_ray(num_cpus: int | None) -> float:
    """Start a fresh local Ray the way the catalog run does; return the seconds it took.

    ``address="local"`` makes the benchmark independent of ``RAY_ADDRESS`` and of a
    ``/tmp/ray/ray_current_cluster`` left by an earlier ``ray start``: it measures this machine only.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus, configure_logging=False, log_to_driver=True)
    return time.perf_counter() - t0


@contextmanager
def local_ray(num_cpus: int | None) -> Iterator[float]:
    """``with local_ray(n) as init_s:`` a local Ray for the block, shut down afterwards."""
    import ray

    init_s = start_local_ray(num_cpus)
    try:
        yield init_s
    finally:
        ray.shutdown()
