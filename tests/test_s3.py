"""An s3:// catalog and output against a local moto S3 server (started by the test on 127.0.0.1).

Endpoint and credentials come only from the standard AWS environment (AWS_ENDPOINT_URL, ...): the
code has no S3-specific settings. Ray workers inherit the environment of the cluster's start, so the
test restarts the shared local cluster after setting it.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

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


def test_s3_refresh_reads_only_changes_and_refuses_a_second_refresh(s3_server, shared_ray, tmp_path, capsys):
    """Two refreshes started at once on one store: one runs to completion, the other is refused
    (exit status 4, naming the lease). Then one image changes: the next refresh GETs that image
    alone (counted at the S3 server, Ray workers included), and the one after reads no image."""
    s3_server.bucket("refresh-cat")
    s3_server.bucket("refresh-out")
    shared_ray.stop()  # workers must start with the AWS environment the fixture set
    shared_ray.ensure()
    local = write_sample_catalog(tmp_path / "cat", items=3)
    for path in local.parent.rglob("*"):
        if path.is_file():
            s3_server.client.upload_file(str(path), "refresh-cat", f"shop/{path.relative_to(local.parent)}")
    out = "s3://refresh-out/store"
    args = ["refresh", "--preset", "tiny", "--catalog", "s3://refresh-cat/shop/catalog.jsonl", "--out", out]
    args += ["--no-inspect", "--set", "generation.num_inference_steps=2"]
    recorder = s3_server.recorder

    barrier = threading.Barrier(2)
    codes: list[int] = []

    def refresh_now() -> None:
        barrier.wait()
        codes.append(cli(args))

    threads = [threading.Thread(target=refresh_now) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [0, 4]
    assert (
        f"reliable-ad refresh: refused: another refresh holds the lease on {out}" in capsys.readouterr().err
    )
    n_rows = len([ln for ln in local.read_text().splitlines() if ln.strip()])
    results = storage.read_parquet_dir(storage.join(out, "results")).to_pylist()
    assert sorted(r["row"] for r in results) == list(range(1, n_rows + 1))  # the run that ran is complete
    assert {r["status"] for r in results} == {"generated"}
    manifest = storage.read_parquet(storage.join(out, "manifest.parquet")).to_pylist()
    assert len(manifest) == n_rows and all(m["image_size"] and m["image_version"] for m in manifest)
    assert not storage.exists(storage.join(out, "lease.json"))

    key = "shop/images/SKU-0002.png"
    path = tmp_path / "changed.png"
    arr = np.asarray(Image.open(local.parent / "images" / "SKU-0002.png")).copy()
    arr[..., 0] = 255 - arr[..., 0]
    Image.fromarray(arr).save(path)
    s3_server.client.upload_file(str(path), "refresh-cat", key)
    recorder.clear()
    assert cli(args) == 0
    read = [r.path for r in recorder.gets("/refresh-cat/shop/images/")]
    print(f"\nrefresh after one change: image GETs {read}")
    assert set(read) == {f"/refresh-cat/{key}"} and len(read) <= 2
    run = json.loads(storage.read_bytes(storage.join(out, "run.json")))
    assert (run["items"], run["skipped_unchanged"]) == (1, n_rows - 1)

    recorder.clear()
    assert cli(args) == 0
    assert recorder.gets("/refresh-cat/shop/images/") == []
    run = json.loads(storage.read_bytes(storage.join(out, "run.json")))
    assert (run["items"], run["skipped_unchanged"]) == (0, n_rows)
