"""The driver stays small: the catalog streams a chunk at a time, duplicates are found with a compact
key set, and a resumed run reads back only what it needs (no Ray)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipelines.catalog import CatalogReader, read_catalog
from pipelines.config import GenerateConfig, load_config
from pipelines.feed import CatalogFeed, Finished, load_resume
from pipelines.refresh import ManifestUpdates
from pipelines.seen import SeenSkus
from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA, OutputStore, now, to_table


def write_catalog(path, n, duplicate_every=0):
    lines = []
    for i in range(n):
        duplicate = duplicate_every and i and i % duplicate_every == 0
        sku = f"S{i - 1:05d}" if duplicate else f"S{i:05d}"
        lines.append(json.dumps({"sku_id": sku, "image": f"img/{i}.png"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_seen_skus_finds_duplicates_across_and_within_chunks():
    seen = SeenSkus()
    assert seen.first_rows(["a", "b", "a"], [1, 2, 3]) == [None, None, 1]
    for k in range(40):  # many runs, merged as they grow
        assert seen.first_rows([f"x{k}-{i}" for i in range(100)], list(range(100))) == [None] * 100
    assert seen.first_rows(["b", "x7-5", "new"], [9, 9, 9]) == [2, 5, None]
    assert len(seen) == 2 + 4000 + 1 and len(seen._runs) <= 12
    assert seen.contains(["a", "x39-99", "zzz"]).tolist() == [True, True, False]


def test_reader_streams_chunks_and_reports_duplicates_across_them(tmp_path):
    cat = write_catalog(tmp_path / "cat.jsonl", 95, duplicate_every=30)
    reader = CatalogReader(str(cat), chunk_rows=20)
    chunks = iter(reader)
    first = next(chunks)
    assert (first.index, len(first.items) + len(first.errors), reader.rows) == (0, 20, 20)  # one chunk read
    rest = list(chunks)
    assert [c.index for c in rest] == [1, 2, 3, 4] and reader.rows == 95
    errors = {e.row: e.reason for c in [first, *rest] for e in c.errors}
    assert errors == {
        31: "duplicate sku_id 'S00029' (first at row 30)",
        61: "duplicate sku_id 'S00059' (first at row 60)",
        91: "duplicate sku_id 'S00089' (first at row 90)",
    }
    assert reader.count_rows() == 95
    assert len(read_catalog(str(cat))) == 95  # the whole-catalog reader gives the same rows


def test_reader_counts_and_streams_parquet_and_csv(tmp_path):
    import pyarrow as pa

    pq.write_table(
        pa.table({"sku_id": [f"P{i}" for i in range(50)], "image": ["a.png"] * 50}),
        tmp_path / "cat.parquet",
        row_group_size=7,
    )
    reader = CatalogReader(str(tmp_path / "cat.parquet"), chunk_rows=16)
    assert reader.count_rows() == 50
    assert [len(c.items) for c in reader] == [16, 16, 16, 2]
    (tmp_path / "cat.csv").write_text("sku_id,image\n" + "".join(f"C{i},a.png\n" for i in range(30)) + "\n")
    reader = CatalogReader(str(tmp_path / "cat.csv"), chunk_rows=16)
    assert reader.count_rows() == 30 and sum(len(c.items) for c in reader) == 30


def test_a_non_utf8_line_is_an_error_row_and_a_non_utf8_file_is_refused(tmp_path):
    cat = tmp_path / "cat.jsonl"
    cat.write_bytes(b'{"sku_id": "A", "image": "a.png"}\n{"sku_id": "B\xff", "image": "a.png"}\n')
    catalog = read_catalog(str(cat))
    assert [it.sku_id for it in catalog.items] == ["A"]
    assert catalog.errors[0].row == 2 and "not UTF-8" in catalog.errors[0].reason
    (tmp_path / "u16.jsonl").write_text('{"sku_id": "A", "image": "a.png"}\n', encoding="utf-16")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_catalog(str(tmp_path / "u16.jsonl"))


def feed_for(cat, store, cfg, run_id="r1", finished=None, histories=None, **kw):
    events = {"bad": 0, "skipped": 0, "manifest": ManifestUpdates(cfg.config_hash())}
    feed = CatalogFeed(
        CatalogReader(str(cat), chunk_rows=kw.pop("chunk_rows", 10)),
        store,
        cfg,
        run_id=run_id,
        mode="generate",
        config_hash=cfg.config_hash(),
        finished=finished or Finished(RESULT_SCHEMA.empty_table()),
        histories=histories or {},
        manifest=events["manifest"],
        on_bad_rows=lambda n: events.__setitem__("bad", events["bad"] + n),
        on_skipped=lambda n: events.__setitem__("skipped", events["skipped"] + n),
    )
    return feed, events


def test_feed_reads_only_what_a_wave_takes(tmp_path):
    cat = write_catalog(tmp_path / "cat.jsonl", 100, duplicate_every=30)
    store = OutputStore(str(tmp_path / "out"))
    cfg = load_config(GenerateConfig, preset="tiny")
    feed, events = feed_for(cat, store, cfg)
    taken = feed.take(3)
    assert [st.item.sku_id for st in taken] == ["S00000", "S00001", "S00002"]
    assert feed.reader.rows == 10 and not feed.exhausted  # one chunk of 10 rows, not the catalog
    rest = [st.item.sku_id for st in feed.take(1000)]
    assert feed.exhausted and len(rest) == 100 - 3 - 3 and feed.take(5) == []
    assert events["bad"] == 3  # the duplicates, written as error rows per chunk
    bad = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert sorted(r["row"] for r in bad) == [31, 61, 91] and {r["attempts"] for r in bad} == {0}


def test_resume_skips_finished_items_and_continues_started_ones(tmp_path):
    cat = write_catalog(tmp_path / "cat.jsonl", 30)
    store = OutputStore(str(tmp_path / "out"))
    cfg = load_config(GenerateConfig, preset="tiny")
    stamp = now()
    done = [
        {"run_id": "r1", "sku_id": f"S{i:05d}", "row": i + 1, "status": "accepted", "attempts": 1}
        | {"image": f"i{i}.png", "content_hash": "h", "updated_at": stamp}
        for i in range(0, 30, 3)
    ]
    done.append({**done[1], "run_id": "r0", "sku_id": "S00001", "row": 2})  # another run's result
    done.append({**done[2], "sku_id": "S00004", "row": 99})  # same sku, other row: not this item
    store.write_part("results", "r1-a", to_table(done, RESULT_SCHEMA))
    attempts = [
        {"run_id": "r1", "sku_id": "S00000", "row": 1, "attempt": 1, "accepted": True, "error": ""},
        {"run_id": "r1", "sku_id": "S00001", "row": 2, "attempt": 1, "label": "size_mismatch", "error": ""},
        {"run_id": "r1", "sku_id": "S00001", "row": 2, "attempt": 2, "label": "unsuitable", "error": ""},
    ]
    store.write_part("attempts", "r1-a", to_table(attempts, ATTEMPT_SCHEMA))
    finished, histories = load_resume(store, "r1")
    assert len(finished) == 11 and set(histories) == {"S00001"}  # S00000's attempt is finished
    assert sorted(histories["S00001"]) == [1, 2]

    feed, events = feed_for(cat, store, cfg, finished=finished, histories=histories)
    todo = feed.take(100)
    assert len(todo) == 20 and feed.finished_before == 10
    finished_rows = events["manifest"].table().to_pylist()  # their manifest rows, made by no wave
    assert len(finished_rows) == 10 and {e["status"] for e in finished_rows} == {"accepted"}
    s1 = next(st for st in todo if st.item.sku_id == "S00001")
    assert sorted(s1.attempts) == [1, 2] and s1.attempts[2]["label"] == "unsuitable"
    # Attempted by an earlier session: its image identity is the manifest's, not this listing's.
    assert s1.earlier_session and not any(st.earlier_session for st in todo if st.item.sku_id != "S00001")
    assert "S00004" in {st.item.sku_id for st in todo}  # its row differs from the result's


def test_a_batch_whose_worker_is_lost_keeps_the_stage_schema_and_fails_its_rows():
    import numpy as np

    from pipelines.labels import LABELS
    from pipelines.wave import generation_outputs, inspection_outputs

    cfg = load_config(GenerateConfig, preset="tiny", overrides={"prepare.resolution": 64})
    batch = {
        "sku_id": np.array(["A", "B"], dtype=object),
        "error": np.array(["", "invalid input: corrupt"], dtype=object),
        "mask_image": np.zeros((2, 64, 64), np.uint8),
        "control_image": np.zeros((2, 64, 64, 3), np.uint8),
    }
    out = generation_outputs(cfg).failed(batch, "ActorDiedError after 3 retries")
    assert out["error"].tolist() == [
        "generation worker lost: ActorDiedError after 3 retries",
        "invalid input: corrupt",
    ]
    assert out["image"].shape == (2, 64, 64, 3) and "mask_image" not in out and "control_image" not in out
    out = inspection_outputs().failed(out, "x")
    assert out["error"][0].startswith("generation worker lost")  # the first reason is kept
    assert out["label"].tolist() == ["", ""] and not out["accepted"].any()
    assert all(np.isnan(out[f"prob_{name}"]).all() for name in LABELS)
