"""Run summaries (``run.json`` numbers) and ``report.html``, computed from the tables alone.

``summarize`` derives every yield number from ``attempts/`` and ``results/`` of one run, so
``reliable-ad report --out DIR`` can rebuild the page at any time (e.g. after a resumed run).
Numbers:

- ``counts``: results per status; ``items``.
- ``available_rate``: accepted / (accepted + exhausted) (inspected items only).
- ``available_rate_by_attempt``: ``{k: share of inspected items accepted within k attempts}``;
  ``available_rate_first_attempt`` is ``k = 1``.
- ``mean_attempts_per_accepted``, ``share_exhausted``.
- ``stage_throughput``: images per second of busy time per stage (prepare, generate, inspect, write),
  i.e. what one worker of that stage sustains.
- ``steering``: for retries, the acceptance rate per steering action (``steer`` column).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from pipelines import storage
from pipelines.store import OutputStore

logger = logging.getLogger(__name__)

CONTACT_SHEET_ITEMS = 40
THUMB = 128


def _for_run(table: pa.Table, run_id: str, columns: tuple[str, ...] | None = None) -> pa.Table:
    """The rows of ``run_id`` (only ``columns``, when given: tables can hold millions of rows)."""
    if columns is not None:
        table = table.select(list(columns))
    return table.filter(pc.equal(table["run_id"], run_id)) if len(table) else table


STAGES = ("prepare", "generate", "inspect", "write")
SUMMARY_ATTEMPT_COLUMNS = (
    "run_id",
    "attempt",
    "error",
    "accepted",
    "steer",
    "label",
    *(f"{s}_s" for s in STAGES),
)


def _counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Occurrences of each non-null, non-empty string."""
    out = {}
    for entry in pc.value_counts(values).to_pylist():
        if entry["values"]:
            out[entry["values"]] = int(entry["counts"])
    return out


def _ok(mask) -> np.ndarray:
    """A boolean column as numpy, null -> False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def summarize(
    attempts: pa.Table, results: pa.Table, run_id: str, max_attempts: int | None = None
) -> dict[str, Any]:
    """The run's yield numbers (see the module docstring), aggregated column-wise with pyarrow: a
    run of a million items is summarised in about a second, without a Python object per row."""
    att = _for_run(attempts, run_id, SUMMARY_ATTEMPT_COLUMNS)
    res = _for_run(results, run_id, ("run_id", "status", "attempts"))
    counts = Counter(_counts(res["status"]))
    inspected = counts["accepted"] + counts["exhausted"]
    res_attempts = pc.fill_null(res["attempts"], 0).to_numpy(zero_copy_only=False).astype(np.int64)
    accepted_attempts = res_attempts[_ok(pc.equal(res["status"], "accepted"))]
    max_k = int(res_attempts.max()) if len(res_attempts) else 0
    if max_attempts is not None:
        max_k = max(max_k, max_attempts)
    by_attempt = {}
    if inspected:
        for k in range(1, max_k + 1):
            by_attempt[str(k)] = int((accepted_attempts <= k).sum()) / inspected
    stage_throughput = {}
    for stage in STAGES:
        seconds = pc.fill_null(att[f"{stage}_s"], 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        busy = float(seconds.sum())
        if busy > 0:
            stage_throughput[stage] = int((seconds > 0).sum()) / busy
    failed = _ok(pc.not_equal(pc.fill_null(att["error"], ""), ""))
    retried = (pc.fill_null(att["attempt"], 0).to_numpy(zero_copy_only=False) > 1) & ~failed
    steer = pc.fill_null(att["steer"], "")
    steer = pc.if_else(pc.equal(steer, ""), "reseed", steer)  # no steering: a plain reseed
    accepted = pa.array(_ok(att["accepted"]).astype(np.int64))
    retries = pa.table({"steer": steer, "accepted": accepted}).filter(pa.array(retried))
    grouped = retries.group_by("steer").aggregate([("accepted", "count"), ("accepted", "sum")]).to_pylist()
    steer_stats = {
        g["steer"]: {"attempts": g["accepted_count"], "accept_rate": g["accepted_sum"] / g["accepted_count"]}
        for g in sorted(grouped, key=lambda g: g["steer"])
    }
    return {
        "items": len(res),
        "counts": {s: counts.get(s, 0) for s in ("accepted", "exhausted", "generated", "error")},
        "attempts_total": len(att),
        "attempts_failed": int(failed.sum()),
        "available_rate": (counts["accepted"] / inspected) if inspected else None,
        "available_rate_first_attempt": by_attempt.get("1"),
        "available_rate_by_attempt": by_attempt,
        "mean_attempts_per_accepted": float(accepted_attempts.mean()) if len(accepted_attempts) else None,
        "share_exhausted": (counts["exhausted"] / len(res)) if len(res) else None,
        "stage_throughput": stage_throughput,
        "steering": steer_stats,
        "predicted_labels": _counts(att["label"]),
    }


# ----------------------------------------------------------------------------------------------------
# HTML.


def _thumb(uri: str) -> str | None:
    try:
        img = Image.open(io.BytesIO(storage.read_bytes(uri, policy=storage.RetryPolicy(retries=1))))
        img.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        if img.mode == "RGBA":
            bg = Image.new("RGBA", img.size, (235, 235, 235, 255))
            bg.alpha_composite(img)
            img = bg
        img.convert("RGB").save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except (OSError, ValueError):
        return None


def _svg_curve(by_attempt: dict[str, float]) -> str:
    if not by_attempt:
        return "<p>No inspected items.</p>"
    w, h, pad = 360, 200, 36
    ks = sorted(int(k) for k in by_attempt)
    kmax = max(ks[-1], 2)

    def x(k: float) -> float:
        return pad + (k - 1) / (kmax - 1) * (w - 2 * pad)

    def y(v: float) -> float:
        return h - pad - v * (h - 2 * pad)

    pts = " ".join(f"{x(k):.1f},{y(by_attempt[str(k)]):.1f}" for k in ks)
    grid = "".join(
        f'<line x1="{pad}" x2="{w - pad}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
        f'<text x="4" y="{y(v) + 4:.1f}" font-size="10">{int(v * 100)}%</text>'
        for v in (0, 0.25, 0.5, 0.75, 1.0)
    )
    ticks = "".join(f'<text x="{x(k) - 3:.1f}" y="{h - 12}" font-size="10">{k}</text>' for k in ks)
    dots = "".join(
        f'<circle cx="{x(k):.1f}" cy="{y(by_attempt[str(k)]):.1f}" r="3" fill="#1f6feb">'
        f"<title>{k}: {by_attempt[str(k)]:.1%}</title></circle>"
        for k in ks
    )
    return (
        f'<svg width="{w}" height="{h}" role="img" aria-label="cumulative available rate by attempt">{grid}'
        f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{pts}"/>{dots}{ticks}'
        f'<text x="{w / 2 - 30}" y="{h - 1}" font-size="11">attempts</text></svg>'
    )


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def render_html(run: dict[str, Any], summary: dict[str, Any], sheet: list[dict[str, Any]]) -> str:
    e = html.escape
    rows = [
        ("run", run.get("run_id")),
        ("mode", run.get("mode")),
        ("catalog", run.get("catalog")),
        ("items", summary["items"]),
        *[(f"status {k}", v) for k, v in summary["counts"].items()],
        ("available rate", summary["available_rate"]),
        ("available rate, first attempt", summary["available_rate_first_attempt"]),
        ("mean attempts per accepted item", summary["mean_attempts_per_accepted"]),
        ("share exhausted", summary["share_exhausted"]),
        ("attempts (failed)", f"{summary['attempts_total']} ({summary['attempts_failed']})"),
        ("generation busy fraction", run.get("generation_busy_fraction")),
        ("device", run.get("device_kind")),
        (
            "device-seconds per accepted image",
            run.get(f"{run.get('device_kind', 'gpu')}_seconds_per_accepted_image"),
        ),
        ("wall time (s)", run.get("wall_s")),
    ]
    table = "".join(f"<tr><th>{e(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    stages = "".join(
        f"<tr><th>{e(k)}</th><td>{v:.2f} img/s</td></tr>" for k, v in summary["stage_throughput"].items()
    )
    steer = "".join(
        f"<tr><th>{e(k)}</th><td>{v['attempts']}</td><td>{v['accept_rate']:.1%}</td></tr>"
        for k, v in summary["steering"].items()
    )
    cards = []
    for item in sheet:
        cells = [
            f'<figure><img src="{item["product"] or ""}" alt="product"><figcaption>product</figcaption></figure>'
        ]
        if item["chosen"]:
            cells.append(
                f'<figure class="{e(item["status"])}"><img src="{item["chosen"]}" alt="chosen">'
                f"<figcaption>{e(item['status'])} (attempt {item['chosen_attempt']}, "
                f"p={_fmt(item['p_available'])})</figcaption></figure>"
            )
        for rej in item["rejected"]:
            cells.append(
                f'<figure class="rejected"><img src="{rej["thumb"] or ""}" alt="rejected">'
                f"<figcaption>#{rej['attempt']} {e(rej['label'] or rej['error'] or 'rejected')}</figcaption></figure>"
            )
        if item["error"]:
            cells.append(f'<p class="err">{e(item["error"])}</p>')
        cards.append(
            f'<div class="item"><h3>{e(str(item["sku_id"]))}</h3><div class="row">{"".join(cells)}</div></div>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>reliable-ad report {e(str(run.get("run_id")))}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 16px}}
th,td{{border:1px solid #ddd;padding:4px 8px;text-align:left}} th{{background:#f6f8fa}}
.grid{{display:flex;gap:32px;flex-wrap:wrap}} .item{{border-top:1px solid #eee;padding:8px 0}}
.row{{display:flex;gap:8px;flex-wrap:wrap;align-items:flex-start}} figure{{margin:0;text-align:center;font-size:11px}}
figure img{{width:{THUMB}px;height:{THUMB}px;object-fit:contain;background:#eee;display:block}}
.accepted img{{outline:3px solid #2da44e}} .exhausted img{{outline:3px solid #bf8700}} .rejected img{{opacity:.8}}
.err{{color:#cf222e}} h3{{margin:4px 0;font-size:14px}}
</style></head><body>
<h1>reliable-ad run report</h1>
<div class="grid"><div><h2>Numbers</h2><table>{table}</table></div>
<div><h2>Cumulative available rate</h2>{_svg_curve(summary["available_rate_by_attempt"])}</div>
<div><h2>Stage throughput</h2><table>{stages}</table>
<h2>Retries by steering</h2><table><tr><th>action</th><th>attempts</th><th>accepted</th></tr>{steer}</table></div></div>
<h2>Contact sheet</h2><p>product | accepted (or best, when exhausted) | rejected attempts with RFNet's label
(first {len(sheet)} items)</p>
{"".join(cards)}
</body></html>
"""


def contact_sheet(
    attempts: pa.Table, results: pa.Table, run_id: str, limit: int = CONTACT_SHEET_ITEMS
) -> list[dict[str, Any]]:
    mine_res = _for_run(results, run_id)
    order = pa.table(
        {
            "error": pc.fill_null(pc.equal(mine_res["status"], "error"), False),
            "row": pc.fill_null(mine_res["row"], 0),
        }
    )
    # Sorted and cut in Arrow (stable, like sorted()): a run's results can be millions of rows.
    first = pc.sort_indices(order, sort_keys=[("error", "ascending"), ("row", "ascending")])[:limit]
    res = mine_res.take(first).to_pylist()
    by_sku: dict[str, list[dict[str, Any]]] = defaultdict(list)
    mine = _for_run(attempts, run_id)
    if len(mine):
        mine = mine.filter(pc.is_in(mine["sku_id"], pa.array([r["sku_id"] for r in res], pa.string())))
    for a in mine.to_pylist():
        by_sku[a["sku_id"]].append(a)
    sheet = []
    for r in res:
        atts = sorted(by_sku.get(r["sku_id"], []), key=lambda a: a["attempt"])
        chosen = next((a for a in atts if a["image"] and a["image"] == r["image"]), None)
        product = next((a["product"] for a in atts if a.get("product")), "")
        sheet.append(
            {
                "sku_id": r["sku_id"],
                "status": r["status"],
                "error": r["error"] if r["status"] == "error" else "",
                "product": _thumb(product) if product else None,
                "chosen": _thumb(chosen["image"]) if chosen else None,
                "chosen_attempt": chosen["attempt"] if chosen else None,
                "p_available": r["p_available"],
                "rejected": [
                    {
                        "attempt": a["attempt"],
                        "label": a["label"],
                        "error": a["error"],
                        "thumb": _thumb(a["image"]) if a["image"] else None,
                    }
                    for a in atts
                    if a is not chosen
                ],
            }
        )
    return sheet


def write_report(
    out: str,
    run_id: str | None = None,
    *,
    attempts: pa.Table | None = None,
    results: pa.Table | None = None,
) -> str:
    """(Re)build ``OUT/report.html`` (and refresh ``run.json``'s yield numbers) from the tables.

    ``attempts`` / ``results``: the store's tables when the caller has just read them (else read here).
    """
    store = OutputStore(storage.normalize(out))
    run_uri = store.path("run.json")
    run = json.loads(storage.read_bytes(run_uri)) if storage.exists(run_uri) else {}
    if run_id is None:
        state = store.read_state() or {}
        run_id = run.get("run_id") or state.get("run_id")
    if not run_id:
        raise FileNotFoundError(f"{out} holds no run (no run.json or state.json)")
    attempts = store.attempts() if attempts is None else attempts
    results = store.results() if results is None else results
    max_attempts = run.get("config", {}).get("retry", {}).get("max_attempts")
    summary = summarize(attempts, results, run_id, max_attempts)
    if run.get("run_id") == run_id:
        run.update(summary)
        storage.write_text(run_uri, json.dumps(run, indent=2, default=str))
    page = render_html(run or {"run_id": run_id}, summary, contact_sheet(attempts, results, run_id))
    uri = store.path("report.html")
    storage.write_text(uri, page)
    return uri
