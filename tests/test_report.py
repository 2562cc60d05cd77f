"""The run summary (column-wise aggregation, a part file at a time, gives the numbers a row-by-row
reading gives), the contact sheet's sample of the whole run, and the run history."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest

from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA, OutputStore, to_table
from pipelines.summary import STAGES, summarize


def row_by_row(att: list[dict], res: list[dict], max_attempts: int) -> dict:
    """The definitions in pipelines/report.py's docstring, one Python row at a time."""
    counts = Counter(r["status"] for r in res)
    inspected = counts["accepted"] + counts["exhausted"]
    max_k = max([r["attempts"] or 0 for r in res] + [max_attempts])
    by_attempt = {
        str(k): sum(1 for r in res if r["status"] == "accepted" and (r["attempts"] or 0) <= k) / inspected
        for k in range(1, max_k + 1)
    }
    accepted_attempts = [r["attempts"] or 0 for r in res if r["status"] == "accepted"]
    throughput = {}
    for stage in STAGES:
        busy = sum(r[f"{stage}_s"] or 0.0 for r in att)
        if busy > 0:
            throughput[stage] = sum(1 for r in att if (r[f"{stage}_s"] or 0.0) > 0) / busy
    grouped = defaultdict(list)
    for r in att:
        if (r["attempt"] or 0) > 1 and not r["error"]:
            grouped[r["steer"] or "reseed"].append(bool(r["accepted"]))
    return {
        "items": len(res),
        "counts": {s: counts.get(s, 0) for s in ("accepted", "exhausted", "generated", "error")},
        "attempts_total": len(att),
        "attempts_failed": sum(1 for r in att if r["error"]),
        "available_rate": counts["accepted"] / inspected,
        "available_rate_first_attempt": by_attempt["1"],
        "available_rate_by_attempt": by_attempt,
        "mean_attempts_per_accepted": sum(accepted_attempts) / len(accepted_attempts),
        "share_exhausted": counts["exhausted"] / len(res),
        "stage_throughput": throughput,
        "steering": {
            k: {"attempts": len(v), "accept_rate": sum(v) / len(v)} for k, v in sorted(grouped.items())
        },
        "predicted_labels": dict(Counter(r["label"] for r in att if r["label"])),
    }


def pick(rng, values, n, null_share=0.1):
    return [None if rng.random() < null_share else values[i] for i in rng.integers(0, len(values), n)]


def test_summary_matches_a_row_by_row_reading_with_nulls_and_other_runs():
    rng = np.random.default_rng(0)
    n, m = 3000, 1200
    att = {
        "run_id": pick(rng, ["r1", "r1", "r1", "r0"], n, 0.0),
        "attempt": pick(rng, [1, 2, 3], n, 0.02),
        "error": pick(rng, ["", "", "", "", "generation failed: x"], n),
        "accepted": pick(rng, [True, False], n),
        "steer": pick(rng, ["", "image_scale", "grounded_template", "reseed"], n),
        "label": pick(rng, ["", "available", "size_mismatch", "unsuitable"], n),
        **{f"{s}_s": pick(rng, [0.0, 0.01, 0.2, 1.5], n) for s in STAGES},
    }
    res = {
        "run_id": pick(rng, ["r1", "r1", "r0"], m, 0.0),
        "status": pick(rng, ["accepted", "accepted", "exhausted", "error", "generated"], m, 0.0),
        "attempts": pick(rng, [0, 1, 2, 3], m, 0.02),
    }
    att_table = pa.table({f.name: att.get(f.name, [None] * n) for f in ATTEMPT_SCHEMA}, schema=ATTEMPT_SCHEMA)
    res_table = pa.table({f.name: res.get(f.name, [None] * m) for f in RESULT_SCHEMA}, schema=RESULT_SCHEMA)

    got = summarize(att_table, res_table, "r1", max_attempts=4)
    # the same numbers from the tables in parts (as the store's part files are read)
    in_parts = summarize(
        [att_table.slice(i, 700) for i in range(0, n, 700)],
        [res_table.slice(i, 500) for i in range(0, m, 500)],
        "r1",
        4,
    )
    assert in_parts == got

    mine_att = [r for r in att_table.to_pylist() if r["run_id"] == "r1"]
    mine_res = [r for r in res_table.to_pylist() if r["run_id"] == "r1"]
    want = row_by_row(mine_att, mine_res, 4)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, dict) and key != "counts":
            assert got[key].keys() == value.keys(), key
            for k, v in value.items():
                assert got[key][k] == (v if isinstance(v, dict) else pytest.approx(v, rel=1e-9)), (key, k)
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9), key
        else:
            assert got[key] == value, key
    assert set(got["steering"]) == {"reseed", "image_scale", "grounded_template"}  # "" counts as reseed


def test_summary_of_an_empty_run():
    got = summarize(ATTEMPT_SCHEMA.empty_table(), RESULT_SCHEMA.empty_table(), "r1", max_attempts=3)
    assert got["items"] == 0 and got["attempts_total"] == 0
    assert got["available_rate"] is None and got["mean_attempts_per_accepted"] is None
    assert got["steering"] == {} and got["stage_throughput"] == {} and got["predicted_labels"] == {}


def write_run(store: OutputStore, run_id: str, n: int, parts: int = 4) -> None:
    """A run of ``n`` items in ``parts`` part files: statuses cycle, rejected attempts carry labels."""
    statuses = ["accepted", "accepted", "exhausted", "error"]
    labels = ["size_mismatch", "unsuitable", "space_mismatch"]
    results, attempts = [], []
    for i in range(n):
        status = statuses[i % 4]
        sku = f"{run_id}-S{i:05d}"
        results.append({"run_id": run_id, "sku_id": sku, "row": i + 1, "status": status, "attempts": 2})
        attempts.append({"run_id": run_id, "sku_id": sku, "attempt": 1, "label": labels[i % 3], "error": ""})
        attempts.append({"run_id": run_id, "sku_id": sku, "attempt": 2, "accepted": status == "accepted"})
    for k in range(parts):
        store.write_part("results", f"{run_id}-{k}", to_table(results[k::parts], RESULT_SCHEMA))
        store.write_part("attempts", f"{run_id}-{k}", to_table(attempts[k::parts], ATTEMPT_SCHEMA))


def test_contact_sheet_samples_the_whole_run_by_status_and_label(tmp_path):
    from pipelines.report import PER_GROUP, sample_items

    store = OutputStore(str(tmp_path))
    write_run(store, "r1", 2000)
    write_run(store, "r0", 50)  # another run in the same store
    picked = sample_items(store, "r1")
    groups = Counter(g for g, _ in picked)
    assert set(groups) == {
        "accepted",
        "exhausted",
        "error",
        "rejected: size_mismatch",
        "rejected: unsuitable",
        "rejected: space_mismatch",
    }
    assert all(n == PER_GROUP for n in groups.values())
    skus = [sku for _, sku in picked]
    assert len(set(skus)) == len(skus) and all(s.startswith("r1-") for s in skus)
    rows = sorted(int(s.rsplit("S", 1)[1]) for s in skus)
    assert rows[-1] > 1000 and rows[len(rows) // 2] > 100  # not the first rows of the catalog
    for group, sku in picked:
        i = int(sku.rsplit("S", 1)[1])
        if not group.startswith("rejected"):
            assert group == ["accepted", "accepted", "exhausted", "error"][i % 4]
    assert sample_items(store, "r1") == picked  # the same sample each time the page is rebuilt


def test_report_links_and_plots_the_history(tmp_path):
    import json

    from pipelines.report import write_report
    from pipelines.summary import load_history, save_run_json

    store = OutputStore(str(tmp_path))
    for k, (run_id, n) in enumerate([("20260101T000000-aaaaaa", 40), ("20260102T000000-bbbbbb", 80)]):
        write_run(store, run_id, n, parts=2)
        run = {"run_id": run_id, "mode": "refresh", "wall_s": 10.0 * (k + 1), "waves": [{"images": 2 * n}]}
        run.update(summarize(store.attempts(), store.results(), run_id))
        save_run_json(store, run)
    history = load_history(store)
    assert [h["run_id"] for h in history] == ["20260101T000000-aaaaaa", "20260102T000000-bbbbbb"]
    assert history[1]["attempts_per_accepted_image"] == pytest.approx(160 / 40)
    assert history[1]["images_per_s"] == pytest.approx(160 / 20.0)
    assert history[1]["available_rate"] == pytest.approx(40 / 60)

    uri = write_report(str(tmp_path))  # the latest run, rebuilt from the tables
    page = (tmp_path / "report.html").read_text()
    assert uri == str(tmp_path / "report.html")
    assert 'href="runs/20260101T000000-aaaaaa/report.html"' in page
    assert 'href="runs/20260102T000000-bbbbbb/report.html"' in page
    for title in ("available rate", "attempts per accepted image", "throughput"):
        assert f'aria-label="{title}' in page
    own = (tmp_path / "runs" / "20260102T000000-bbbbbb" / "report.html").read_text()
    assert 'href="../20260101T000000-aaaaaa/report.html"' in own
    # an older run's page is rebuilt on its own; the latest stays the top-level one
    write_report(str(tmp_path), "20260101T000000-aaaaaa")
    assert (tmp_path / "runs" / "20260101T000000-aaaaaa" / "report.html").is_file()
    assert json.loads((tmp_path / "run.json").read_text())["run_id"] == "20260102T000000-bbbbbb"
    assert "20260102T000000-bbbbbb" in (tmp_path / "report.html").read_text().split("<h2>History")[0]
