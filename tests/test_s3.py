"""An s3:// catalog and output against a local moto S3 server (started by the test on 127.0.0.1).

Endpoint and credentials come only from the standard AWS environment (AWS_ENDPOINT_URL, ...): the
code has no S3-specific settings. Ray workers inherit the environment of the cluster's start, so the
test restarts the shared local cluster after setting it.
"""

from __future__ import annotations

import pytest

from jobs.cli import main as cli
from pipelines import storage
from rfnet.data.sample import write_sample_catalog

pytestmark = [pytest.mark.ray, pytest.mark.s3]


def test_s3_catalog_and_output(s3_server, shared_ray, tmp_path):
    s3_server.bucket("catalogs")
    s3_server.bucket("outputs")
    shared_ray.stop()  # workers must start with the AWS environment the fixture set
    shared_ray.ensure()
    local = write_sample_catalog(tmp_path / "cat", items=3, with_bad_rows=True)
    for path in local.parent.rglob("*"):
        if path.is_file():
            s3_server.client.upload_file(str(path), "catalogs", f"shop/{path.relative_to(local.parent)}")
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
    keys = {o["Key"] for o in s3_server.client.list_objects_v2(Bucket="outputs", Prefix="run1/")["Contents"]}
    assert {"run1/run.json", "run1/report.html", "run1/manifest.parquet", "run1/state.json"} <= keys
    assert not any(k.endswith(".tmp") for k in keys)
