"""A generate job submitted with ``ray job submit --working-dir .`` to a Ray head started with
``ray start --head``, the way operators run it on a long-lived cluster (docs/runbook.md).

The head runs in its own process group and is ended by signalling that group (never ``ray stop``,
which would stop every Ray on the machine). The shared in-process cluster is stopped first so only
one Ray runs at a time. The job's ``python`` is this virtualenv's: the head is started with the
virtualenv's ``bin`` first on ``PATH``, as a cluster node is started from the environment that holds
the project's dependencies; the code itself travels with ``--working-dir``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from rfnet.data.sample import write_sample_catalog

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="disabled",  # the head and the submitting client must agree
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("RAY_ADDRESS", None)
    return env


def wait_for_dashboard(url: str, head: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"`ray start --head` exited with {head.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(
        f"the Ray dashboard at {url} did not come up in {timeout_s:.0f} s:\n{log.read_text()[-4000:]}"
    )


def stop_head(head: subprocess.Popen, gcs_address: str) -> None:
    """End the head's process group (SIGTERM, then SIGKILL what is left) and, as `ray stop` would,
    forget it as the machine's current cluster if it still is."""
    current = Path("/tmp/ray/ray_current_cluster")
    if current.is_file() and current.read_text().strip() == gcs_address:
        current.unlink(missing_ok=True)
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
    # Children that outlive `ray start` (its reaper kills them, but not instantly) are in the group too.
    for _ in range(30):
        try:
            os.killpg(head.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)
    os.killpg(head.pid, signal.SIGKILL)


def read_dir(path: Path) -> list[dict]:
    return [r for f in sorted(path.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_generate_job_submitted_to_a_ray_head(shared_ray, tmp_path, monkeypatch):
    shared_ray.stop()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    catalog = write_sample_catalog(tmp_path / "catalog", items=3)
    out = tmp_path / "out"
    gcs_port, dash_port = free_port(), free_port()
    url = f"http://127.0.0.1:{dash_port}"
    env = ray_env()
    head_log = tmp_path / "head.log"
    with head_log.open("w") as log:
        head = subprocess.Popen(
            [
                str(BIN / "ray"), "start", "--head", "--block",
                "--node-ip-address", "127.0.0.1",
                "--port", str(gcs_port),
                "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(dash_port),
                "--num-cpus", "8",
                "--disable-usage-stats",
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_dashboard(url, head, head_log)
        submission_id = f"reliable-ad-test-{os.getpid()}-{time.time_ns()}"
        entrypoint = [
            "python", "-m", "jobs.generate", "--preset", "tiny",
            "--catalog", str(catalog), "--out", str(out), "--max-attempts", "2",
            "--set", "generation.num_inference_steps=2",
        ]  # fmt: skip
        submit = subprocess.run(
            [
                str(BIN / "ray"), "job", "submit", "--address", url,
                "--submission-id", submission_id,
                "--working-dir", ".",  # .git, .venv and everything .gitignore names stay behind
                "--", *entrypoint,
            ],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=540,
        )  # fmt: skip
        logs = submit.stdout[-6000:] + submit.stderr[-3000:]
        # A blocking `ray job submit` follows the job's log and exits 0 only if the job succeeded.
        assert submit.returncode == 0, logs
        client = JobSubmissionClient(url)
        assert client.get_job_status(submission_id) == JobStatus.SUCCEEDED, logs
        # The job ran from the uploaded copy of the checkout (a gcs:// package), not from this directory.
        info = client.get_job_info(submission_id)
        assert str(info.runtime_env.get("working_dir", "")).startswith("gcs://_ray_pkg_"), info.runtime_env

        # The GPU config on this CPU-only head: the job fails at once (not pending forever), its
        # log's last line naming the fields that ask for GPUs, and writes nothing.
        refused, refused_out = f"{submission_id}-gpu", tmp_path / "out-gpu"
        gpu_entrypoint = [
            "python", "-m", "jobs.generate", "--config", "jobs/configs/generate.yaml",
            "--catalog", str(catalog), "--out", str(refused_out), "--no-inspect",
        ]  # fmt: skip
        started = time.monotonic()
        submit = subprocess.run(
            [
                str(BIN / "ray"), "job", "submit", "--address", url, "--submission-id", refused,
                "--working-dir", ".", "--", *gpu_entrypoint,
            ],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert submit.returncode != 0 and time.monotonic() - started < 120, submit.stdout[-3000:]
        assert client.get_job_status(refused) == JobStatus.FAILED
        last = client.get_job_logs(refused).strip().splitlines()[-1]
        assert last.startswith("reliable-ad generate: error: this cluster can never provide the GPU"), last
        assert "generation.num_gpus=0.9" in last and "a Ray cluster without an autoscaler" in last
        assert not refused_out.exists()
    finally:
        stop_head(head, f"127.0.0.1:{gcs_port}")

    n_items = sum(1 for line in catalog.read_text().splitlines() if line.strip())
    results = read_dir(out / "results")
    attempts = read_dir(out / "attempts")
    assert sorted(r["row"] for r in results) == list(range(1, n_items + 1))
    assert {r["status"] for r in results} <= {"accepted", "exhausted"}
    assert max(Counter((a["sku_id"], a["attempt"]) for a in attempts).values()) == 1
    for r in results:
        mine = [a for a in attempts if a["sku_id"] == r["sku_id"]]
        assert len(mine) == r["attempts"] <= 2 and all(a["error"] == "" for a in mine)
        assert Path(r["image"]).is_file() and r["image"] in {a["image"] for a in mine}
        assert all(Path(a["image"]).is_file() for a in mine)
    run = json.loads((out / "run.json").read_text())
    assert sum(run["counts"].values()) == n_items and run["counts"]["error"] == 0
    assert (out / "report.html").is_file()
