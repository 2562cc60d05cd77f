"""Refresh reads only what changed: change detection from listing metadata, the catalog's
``image_sha256`` and content hashes, against the local S3 server (requests counted at the server)
and on local files. No Ray here; the end-to-end refresh on S3 is in tests/test_s3.py."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pyarrow as pa
import pytest

from pipelines import refresh
from pipelines.catalog import Catalog, CatalogItem, read_catalog
from pipelines.config import GenerateConfig
from pipelines.store import MANIFEST_SCHEMA, OutputStore, now

CFG = GenerateConfig()


def image_bytes(i: int, version: int = 0) -> bytes:
    """A small distinct 'image' per item (selection never decodes it); another version, another size."""
    return hashlib.sha256(f"{i}:{version}".encode()).digest() * (8 + version)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_selection(store: OutputStore, sel: refresh.Selection, results: dict, run_id: str = "run") -> None:
    """Write the manifest as a run of ``sel`` would: ``results`` per finished item, the new comparison
    columns of the skipped ones, the removed ones marked."""
    updates = refresh.ManifestUpdates("cfg")
    for item in sel.todo:
        if item.sku_id in results:
            updates.add(item, results[item.sku_id], sel.identities.get(item.sku_id))
    updates.refreshed.update(sel.refreshed)
    updates.removed = sel.removed
    refresh.update_manifest(store, updates, run_id)


def run_as_processed(store: OutputStore, catalog: Catalog, sel: refresh.Selection, data: dict[str, bytes]):
    """Record the selected items as a run that read ``data`` would (status accepted, content hash)."""
    results = {
        item.sku_id: {
            "status": "accepted",
            "content_hash": digest(data[item.sku_id])[:16],
            "image": f"out/{item.sku_id}.png",
        }
        for item in sel.todo
    }
    write_selection(store, sel, results)


@pytest.mark.s3
def test_refresh_reads_only_changed_images_on_s3(s3_server):
    """2,000 items, 1% changed: the selection reads <= 2% of the image bytes (counted as object GETs
    at the server), lists each image directory once, and picks exactly the new and changed items."""
    client = s3_server.client
    s3_server.bucket("refresh-shop")
    s3_server.bucket("refresh-out")
    n = 2000
    data = {f"SKU-{i:05d}": image_bytes(i) for i in range(n)}
    lines = []
    for i, (sku, blob) in enumerate(data.items()):
        client.put_object(Bucket="refresh-shop", Key=f"images/{sku}.png", Body=blob)
        lines.append(json.dumps({"sku_id": sku, "image": f"images/{sku}.png", "caption": f"item {i}"}))
    client.put_object(Bucket="refresh-shop", Key="catalog.jsonl", Body="\n".join(lines).encode())
    catalog = read_catalog("s3://refresh-shop/catalog.jsonl")
    store = OutputStore("s3://refresh-out/store")
    recorder = s3_server.recorder
    image_gets = "/refresh-shop/images/"

    # First refresh: everything is new, and nothing is read to find that out.
    recorder.clear()
    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    assert len(sel.todo) == n and not sel.skipped and not sel.removed
    assert recorder.gets(image_gets) == []
    assert len(recorder.lists("refresh-shop")) == 2  # one listing of images/ (1,000 keys a page)
    assert not [r for r in recorder.requests if r.method == "HEAD" and r.path.startswith(image_gets)]
    run_as_processed(store, catalog, sel, data)

    # 1% changed (another size), 5 re-uploaded with the same bytes as a multipart upload (new ETag,
    # same size: only the bytes can tell), one whose bytes changed at the same size.
    changed = [f"SKU-{i:05d}" for i in range(0, n, 100)]
    for sku in changed:
        data[sku] = image_bytes(int(sku[4:]), version=1)
        client.put_object(Bucket="refresh-shop", Key=f"images/{sku}.png", Body=data[sku])
    touched = [f"SKU-{i:05d}" for i in range(7, 57, 10)]
    for sku in touched:
        key = f"images/{sku}.png"
        upload = client.create_multipart_upload(Bucket="refresh-shop", Key=key)
        part = client.upload_part(
            Bucket="refresh-shop", Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=data[sku]
        )
        client.complete_multipart_upload(
            Bucket="refresh-shop",
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )
    same_size = "SKU-00003"
    data[same_size] = bytes(reversed(data[same_size]))
    client.put_object(Bucket="refresh-shop", Key=f"images/{same_size}.png", Body=data[same_size])

    recorder.clear()
    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    assert sorted(it.sku_id for it in sel.todo) == sorted([*changed, same_size])
    assert len(sel.skipped) == n - len(changed) - 1 and set(touched) <= set(sel.skipped)
    gets = recorder.gets(image_gets)
    read_keys = sorted(r.path.rsplit("/", 1)[-1].removesuffix(".png") for r in gets)
    assert read_keys == sorted([*touched, same_size])  # only metadata-changed, same-size images
    total = sum(len(b) for b in data.values())
    print(
        f"\nrefresh selection on S3: {len(gets)} image GETs of {n} ({len(gets) / n:.2%}), "
        f"{sum(r.sent for r in gets)} of {total} image bytes ({sum(r.sent for r in gets) / total:.2%})"
    )
    assert len(gets) <= 0.02 * n
    assert sum(r.sent for r in gets) <= 0.02 * total
    assert sel.images_read == len(gets) and sel.bytes_read == sum(r.sent for r in gets)
    assert set(sel.refreshed) == set(touched)  # their new ETags are stored: not read again
    run_as_processed(store, catalog, sel, data)

    recorder.clear()
    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    assert not sel.todo and len(sel.skipped) == n and recorder.gets(image_gets) == []

    # Another output-relevant config: every item again, still without reading an image.
    recorder.clear()
    sel = refresh.select_changed(catalog, store, CFG, "another-config")
    assert len(sel.todo) == n and recorder.gets(image_gets) == []


def write_images(folder, n: int) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {f"S{i}": image_bytes(i) for i in range(n)}
    for sku, blob in data.items():
        (folder / f"{sku}.png").write_bytes(blob)
    return data


def catalog_of(folder, skus, **fields) -> Catalog:
    items = [
        CatalogItem(row=i + 1, sku_id=s, image=str(folder / f"{s}.png"), **fields.get(s, {}))
        for i, s in enumerate(skus)
    ]
    return Catalog(source="c.jsonl", format="jsonl", items=items)


def test_refresh_detects_row_config_error_and_touched_files_locally(tmp_path):
    images = tmp_path / "images"
    data = write_images(images, 6)
    store = OutputStore(str(tmp_path / "out"))
    catalog = catalog_of(images, data)
    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    run_as_processed(store, catalog, sel, data)
    # S1 failed last time: retried although nothing changed.
    manifest = store.manifest().to_pylist()
    for row in manifest:
        row["status"] = "error" if row["sku_id"] == "S1" else row["status"]
    store.write_manifest(pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA))

    os.utime(images / "S2.png", ns=(1, 1))  # touched: new mtime, same bytes -> read once, skipped
    (images / "S3.png").write_bytes(image_bytes(3, version=2))  # new bytes (another size) -> no read
    catalog = catalog_of(images, [s for s in data if s != "S5"], S4={"prompt": "a new prompt"})
    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    assert sorted(it.sku_id for it in sel.todo) == ["S1", "S3", "S4"]
    assert sorted(sel.skipped) == ["S0", "S2"] and sel.removed == ["S5"]
    assert (sel.images_read, sel.bytes_read) == (1, len(data["S2"]))
    assert set(sel.refreshed) == {"S2"}
    data["S3"] = (images / "S3.png").read_bytes()
    run_as_processed(store, catalog, sel, data)

    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    assert not sel.todo and sel.images_read == 0 and sel.removed == []
    rows = {r["sku_id"]: r for r in store.manifest().to_pylist()}
    assert rows["S5"]["removed"] and not rows["S2"]["removed"]
    assert rows["S2"]["run_id"] == "run" and rows["S2"]["image_sha256"] == digest(data["S2"])[:16]


def test_catalog_image_sha256_decides_without_reading(tmp_path):
    images = tmp_path / "images"
    data = write_images(images, 3)
    store = OutputStore(str(tmp_path / "out"))
    given = {s: {"image_sha256": digest(b)} for s, b in data.items()}
    catalog = catalog_of(images, data, **given)
    run_as_processed(store, catalog, refresh.select_changed(catalog, store, CFG, "cfg"), data)

    os.utime(images / "S0.png", ns=(1, 1))  # the listing changes, the catalog's hash does not
    given["S1"] = {"image_sha256": digest(b"new bytes")}  # the catalog says S1's image changed
    catalog = catalog_of(images, data, **given)
    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    assert [it.sku_id for it in sel.todo] == ["S1"] and sel.images_read == 0
    assert sorted(sel.skipped) == ["S0", "S2"]


def test_manifest_from_before_listing_metadata_is_read_once(tmp_path):
    """A manifest with only ``item_hash`` (the earlier format): the first refresh hashes every
    image, keeps what is unchanged, and stores the listing; the next one reads nothing."""
    images = tmp_path / "images"
    data = write_images(images, 4)
    store = OutputStore(str(tmp_path / "out"))
    catalog = catalog_of(images, data)
    old = pa.Table.from_pylist(
        [
            {
                "sku_id": it.sku_id,
                "item_hash": refresh.item_hash(digest(data[it.sku_id])[:16], it, "cfg"),
                "status": "accepted",
                "image": "x.png",
                "run_id": "r0",
                "removed": False,
                "updated_at": now(),
            }
            for it in catalog.items
        ],
        schema=pa.schema(list(MANIFEST_SCHEMA)[:7]),  # the columns the earlier version wrote
    )
    buf = io.BytesIO()
    pa.parquet.write_table(old, buf)  # the old schema, written as the earlier version did
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.parquet").write_bytes(buf.getvalue())
    (images / "S3.png").write_bytes(image_bytes(3, version=1))

    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    assert [it.sku_id for it in sel.todo] == ["S3"] and sel.images_read == 4
    write_selection(store, sel, {}, "r1")
    sel = refresh.select_changed(catalog, store, CFG, "cfg")
    # the three kept ones are compared by listing now; S3 (not processed yet) has only its old record
    assert [it.sku_id for it in sel.todo] == ["S3"] and sel.images_read == 1


def test_chunked_selection_matches_whole_catalog(tmp_path):
    """The detector over chunks (as a streaming runner calls it) decides as one call does."""
    images = tmp_path / "images"
    data = write_images(images, 10)
    store = OutputStore(str(tmp_path / "out"))
    catalog = catalog_of(images, data)
    run_as_processed(store, catalog, refresh.select_changed(catalog, store, CFG, "cfg"), data)
    (images / "S4.png").write_bytes(image_bytes(4, version=1))
    catalog = catalog_of(images, [s for s in data if s != "S9"])
    whole = refresh.select_changed(catalog, store, CFG, "cfg")
    detector = refresh.ChangeDetector(store, CFG, "cfg")
    chunked = refresh.Selection()
    for start in range(0, len(catalog.items), 3):
        chunked.extend(detector.select(catalog.items[start : start + 3]))
    chunked.removed = detector.removed()
    assert [it.sku_id for it in chunked.todo] == [it.sku_id for it in whole.todo] == ["S4"]
    assert sorted(chunked.skipped) == sorted(whole.skipped) and chunked.removed == whole.removed == ["S9"]


def test_catalog_image_sha256_column_is_validated(tmp_path):
    good = "AB" * 32
    rows = [
        {"sku_id": "ok", "image": "a.png", "image_sha256": good},
        {"sku_id": "short", "image": "a.png", "image_sha256": "abc123"},
        {"sku_id": "number", "image": "a.png", "image_sha256": 12},
        {"sku_id": "none", "image": "a.png"},
    ]
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    catalog = read_catalog(str(path))
    assert {it.sku_id: it.image_sha256 for it in catalog.items} == {"ok": good.lower(), "none": None}
    reasons = {e.sku_id: e.reason for e in catalog.errors}
    assert sorted(reasons) == ["number", "short"]
    assert "image_sha256 must be the 64-digit hex SHA-256 of the image file, got 'abc123'" in reasons["short"]


def test_a_resumed_run_stores_only_listings_made_before_the_bytes_it_used(tmp_path):
    """Items with attempts from an earlier session keep the identity listed with the same bytes
    before, or get none; items made in this session get this session's listing."""
    store = OutputStore(str(tmp_path / "out"))
    items = {s: CatalogItem(row=i + 1, sku_id=s, image=f"/img/{s}.png") for i, s in enumerate("ABC")}
    earlier = {"A": (10, "v-a", "aaaa"), "C": (30, "v-c", "cccc")}
    store.write_manifest(
        pa.Table.from_pylist(
            [
                {
                    "sku_id": s,
                    "item_hash": "x",
                    "status": "error",
                    "image": "",
                    "run_id": "r1",
                    "removed": False,
                }
                | {"updated_at": now(), "image_size": n, "image_version": v, "image_sha256": d}
                for s, (n, v, d) in earlier.items()
            ],
            schema=MANIFEST_SCHEMA,
        )
    )
    detector = refresh.ChangeDetector(store, CFG, "cfg", process_all=True)
    sel = detector.select(items.values())
    assert [it.sku_id for it in sel.todo] == ["A", "B", "C"]
    # A and C were attempted by an earlier session: the identity their manifest row had.
    known = dict(zip("AC", detector.known([items["A"], items["C"]]), strict=True))
    assert known["A"] == refresh.ImageIdentity(10, "v-a", "aaaa")
    updates = refresh.ManifestUpdates("cfg")
    for s, digest_read in {"A": "aaaa", "B": "bbbb", "C": "c-changed"}.items():
        result = {"status": "accepted", "content_hash": digest_read, "image": "x.png"}
        if s in known:
            updates.add(items[s], result, known[s], earlier_session=True)
        else:
            updates.add(items[s], result, refresh.ImageIdentity(99, "new-B"))
    refresh.update_manifest(store, updates, "r1")
    rows = {r["sku_id"]: (r["image_size"], r["image_version"]) for r in store.manifest().to_pylist()}
    assert rows == {"A": (10, "v-a"), "B": (99, "new-B"), "C": (None, None)}
