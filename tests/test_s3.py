"""An s3:// catalog and output against a local moto S3 server (started by the test on 127.0.0.1).

Endpoint and credentials come only from the standard AWS environment (AWS_ENDPOINT_URL, ...): the
code has no S3-specific settings. Ray workers inherit the environment of the cluster's start, so the
test restarts the shared local cluster after setting it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.cli import main as cli
from pipelines import storage
from pipelines.sample import write_sample_catalog

pytestmark = [pytest.mark.ray, pytest.mark.s3]


@pytest.fixture
def moto_s3(monkeypatch):
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    client = boto3.client("s3")
    for _ in range(100):
        try:
            client.list_buckets()
            break
        except Exception:  # the server is still starting
            time.sleep(0.1)
    client.create_bucket(Bucket="catalogs")
    client.create_bucket(Bucket="outputs")
    yield client
    proc.terminate()
    proc.wait(timeout=10)


def test_s3_catalog_and_output(moto_s3, shared_ray, tmp_path):
    shared_ray.stop()  # workers must start with the AWS environment set above
    shared_ray.ensure()
    local = write_sample_catalog(tmp_path / "cat", items=3, with_bad_rows=True)
    for path in local.parent.rglob("*"):
        if path.is_file():
            moto_s3.upload_file(str(path), "catalogs", f"shop/{path.relative_to(local.parent)}")
    out = "s3://outputs/run1"
    rc = cli(
        [
            "generate",
            "--preset",
            "tiny",
            "--catalog",
            "s3://catalogs/shop/catalog.jsonl",
            "--out",
            out,
            "--max-attempts",
            "2",
            "--set",
            "generation.num_inference_steps=2",
        ]
    )
    assert rc == 0
    results = storage.read_parquet_dir(storage.join(out, "results")).to_pylist()
    n_rows = len([ln for ln in local.read_text().splitlines() if ln.strip()])
    assert sorted(r["row"] for r in results) == list(range(1, n_rows + 1))
    good = [r for r in results if r["status"] in ("accepted", "exhausted")]
    assert len(good) == 4
    for r in good:
        assert r["image"].startswith("s3://outputs/run1/images/") and storage.exists(r["image"])
    missing = next(r for r in results if r["sku_id"] == "BAD-missing-file")
    assert "image not found: s3://catalogs/shop/images/does-not-exist.png" in missing["error"]
    keys = {o["Key"] for o in moto_s3.list_objects_v2(Bucket="outputs", Prefix="run1/")["Contents"]}
    assert {"run1/run.json", "run1/report.html", "run1/manifest.parquet", "run1/state.json"} <= keys
    assert not any(k.endswith(".tmp") for k in keys)
