"""Shared fixtures. Ray tests share one local cluster, started lazily and reused by every test.

Two Ray clusters on one machine at once break Ray Train, so a test that needs a different cluster
(the multi-node one) stops the shared cluster first with ``shared_ray.stop()``; the next test that
asks for ``ray_cluster`` starts it again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

# Idle OpenMP threads must not spin: on a few shared cores, spinning threads slow torch kernels in
# this process by an order of magnitude (Ray workers get the same setting from pipelines.raystart).
# Set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED = Path(__file__).resolve().parents[2] / "shared"
PRODUCTS = SHARED / "data" / "products"
CRDS = SHARED / "data" / "kuberay-crds"

# Logical CPUs for the shared cluster: actors take fractions, so 8 logical CPUs on a 2-core machine
# keep read/write tasks from starving behind model actors.
RAY_NUM_CPUS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayCluster:
    gcs_address: str
    dashboard_url: str | None


class SharedRay:
    cluster: RayCluster | None = None

    @classmethod
    def ensure(cls) -> RayCluster:
        import ray

        if cls.cluster is not None and ray.is_initialized():
            return cls.cluster
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        dashboard_port = free_port()
        ctx = ray.init(
            # "local": always a new cluster, never one a stale /tmp/ray/ray_current_cluster points at
            # (left behind by a `ray start --head` that was terminated).
            address="local",
            num_cpus=RAY_NUM_CPUS,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            log_to_driver=False,
            configure_logging=False,
            # as pipelines.runner.ensure_ray does for local runs: idle OpenMP threads must not spin
            runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
        )
        url = ctx.dashboard_url
        cls.cluster = RayCluster(
            gcs_address=ray.get_runtime_context().gcs_address,
            dashboard_url=f"http://{url}" if url and not url.startswith("http") else url,
        )
        return cls.cluster

    @classmethod
    def stop(cls) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cls.cluster = None


@pytest.fixture
def ray_cluster() -> RayCluster:
    """The shared local Ray cluster (started on first use)."""
    return SharedRay.ensure()


@pytest.fixture
def shared_ray() -> type[SharedRay]:
    return SharedRay


def pytest_sessionfinish(session, exitstatus):
    SharedRay.stop()


@pytest.fixture
def products_dir() -> Path:
    """Real product cut-outs shipped beside the repository; the test skips if they are absent."""
    if not PRODUCTS.is_dir() or not list(PRODUCTS.glob("*.png")):
        pytest.skip(f"real product cut-outs not found at {PRODUCTS}")
    return PRODUCTS


@pytest.fixture
def crds_dir() -> Path:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRDS}")
    return CRDS


@dataclass(frozen=True)
class S3Request:
    """One request the local S3 server answered: ``path`` is ``/bucket/key`` (``/bucket`` for a
    listing), ``query`` the query string; ``sent`` counts the response body's bytes."""

    method: str
    path: str
    query: str
    status: int
    sent: int


class RecordingS3App:
    """WSGI middleware in front of moto: records every request, and serialises writes.

    S3 evaluates a conditional write (``If-None-Match``, ``If-Match``) atomically; moto checks the
    condition and then stores the object without a lock, so two racing conditional PUTs could both
    pass. Holding one lock around PUT/POST/DELETE gives the tests S3's semantics.
    """

    def __init__(self, app):
        self.app = app
        self.requests: list[S3Request] = []
        self.write_lock = threading.Lock()
        self.log_lock = threading.Lock()

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        seen: dict[str, int] = {}

        def recording_start_response(status, headers, exc_info=None):
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        lock = self.write_lock if method in ("PUT", "POST", "DELETE") else contextlib.nullcontext()
        with lock:
            body = b"".join(self.app(environ, recording_start_response))
        with self.log_lock:
            self.requests.append(S3Request(method, path, query, seen.get("status", 0), len(body)))
        return [body]

    def gets(self, prefix: str) -> list[S3Request]:
        """Successful object GETs under ``/bucket/prefix`` (listings and HEADs excluded)."""
        with self.log_lock:
            return [
                r
                for r in self.requests
                if r.method == "GET" and r.status in (200, 206) and r.path.startswith(prefix)
            ]

    def lists(self, bucket: str) -> list[S3Request]:
        """``ListObjectsV2`` requests (one per page) on ``bucket``."""
        with self.log_lock:
            return [
                r for r in self.requests if r.path.rstrip("/") == f"/{bucket}" and "list-type=2" in r.query
            ]

    def clear(self) -> None:
        with self.log_lock:
            self.requests.clear()


@dataclass
class S3Server:
    """A local moto S3 server reached only through the standard AWS environment variables.

    ``recorder`` holds every request it answered (``recorder.gets("/bucket/prefix")``)."""

    endpoint: str
    client: object  # boto3 S3 client
    recorder: RecordingS3App

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name


@pytest.fixture
def s3_server(monkeypatch) -> S3Server:
    """Starts moto on 127.0.0.1 (a free port) and points ``AWS_ENDPOINT_URL`` and credentials at it."""
    import boto3
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    recorder = RecordingS3App(DomainDispatcherApplication(create_backend_app))

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # the recorder keeps the requests
            pass

    server = make_server("127.0.0.1", free_port(), recorder, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield S3Server(endpoint, boto3.client("s3"), recorder)
    finally:
        # moto keeps its buckets in the process, not in the server: empty them for the next test
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
        server.shutdown()
        thread.join()


@pytest.fixture
def split_copy(tmp_path):
    """``split_copy(src, train=(0, 6), test=(9, None))``: a copy of the RF1M set ``src`` whose
    ``label.txt`` is replaced by split files (``train.txt`` with its lines 0-5, ...); returns
    ``(root, lines of the original label.txt)``."""

    def make(src: str, **parts: tuple[int, int | None]) -> tuple[Path, list[str]]:
        root = tmp_path / ("split-" + "-".join(parts))
        shutil.copytree(src, root)
        lines = (root / "label.txt").read_text().splitlines(keepends=True)
        (root / "label.txt").unlink()
        for name, (start, stop) in parts.items():
            (root / f"{name}.txt").write_text("".join(lines[start:stop]))
        return root, lines

    return make
