"""The run summary: column-wise aggregation gives the numbers a row-by-row reading gives."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest

from pipelines.report import STAGES, summarize
from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA


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


def test_contact_sheet_shows_the_first_rows_of_the_run_errors_last():
    from pipelines.report import contact_sheet

    statuses = ["error", "accepted", "exhausted", "error", "accepted", "accepted"]
    rows = [7, 3, 5, 1, None, 2]
    results = pa.table(
        {
            **{f.name: [None] * 7 for f in RESULT_SCHEMA},
            "run_id": ["r1"] * 6 + ["r0"],
            "sku_id": [f"S{i}" for i in range(7)],
            "status": [*statuses, "accepted"],
            "row": [*rows, 0],
            "image": [""] * 7,
        },
        schema=RESULT_SCHEMA,
    )
    sheet = contact_sheet(ATTEMPT_SCHEMA.empty_table(), results, "r1", limit=5)
    # row None sorts as 0; ties keep the table's order; another run's rows are left out
    assert [r["sku_id"] for r in sheet] == ["S4", "S5", "S1", "S2", "S3"]
    assert [r["status"] for r in sheet][-1] == "error" and sheet[0]["chosen"] is None
