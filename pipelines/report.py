"""``report.html``: a page a person can look at, rebuilt from the tables alone.

The numbers come from :mod:`pipelines.summary`. The page shows them, the cumulative available rate by
attempt, the history of the store's runs (available rate, attempts per accepted image and throughput
per run, linking each run's own page ``runs/<run_id>/report.html``) and a contact sheet.

The contact sheet samples the whole run, not its first rows: up to :data:`PER_GROUP` items for each
status (accepted, exhausted, generated, error) and for each defect label that rejected an attempt.
The sample is the items with the smallest hash of ``(run_id, sku_id)`` in each group (a uniform
sample, the same each time the page is rebuilt), found by reading the tables a part file at a time;
only the sampled items' rows become Python objects.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import html
import io
import json
import logging
import math
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from pipelines import storage
from pipelines.store import ATTEMPT_SCHEMA, RESULT_SCHEMA, OutputStore
from pipelines.summary import load_history, save_run_json, summarize_store

logger = logging.getLogger(__name__)

PER_GROUP = 5  # contact-sheet items per status and per defect label
THUMB = 128
STATUS_ORDER = ("accepted", "exhausted", "generated", "error")


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


def _svg_series(values: list[float | None], labels: list[str], title: str, fmt: str) -> str:
    """A line over the runs (oldest left), one dot per run with its value in a tooltip."""
    points = [(i, v) for i, v in enumerate(values) if v is not None and v == v]
    if not points:
        return f"<p>{html.escape(title)}: no values yet.</p>"
    w, h, pad = 360, 160, 36
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-12 else (lo, hi)
    n = max(len(values) - 1, 1)

    def x(i: float) -> float:
        return pad + i / n * (w - 2 * pad)

    def y(v: float) -> float:
        return h - pad - (v - lo) / (hi - lo) * (h - 2 * pad)

    pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="#1f6feb">'
        f"<title>{html.escape(labels[i])}: {format(v, fmt)}</title></circle>"
        for i, v in points
    )
    axis = "".join(f'<text x="2" y="{y(v) + 4:.1f}" font-size="10">{format(v, fmt)}</text>' for v in (lo, hi))
    return (
        f'<figure class="plot"><svg width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">'
        f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{pts}"/>{dots}{axis}</svg>'
        f"<figcaption>{html.escape(title)} ({len(points)} runs)</figcaption></figure>"
    )


def _history_html(history: list[dict[str, Any]], link_prefix: str) -> str:
    if not history:
        return "<p>No earlier runs in this store.</p>"
    labels = [r["run_id"] for r in history]
    plots = "".join(
        _svg_series([r.get(key) for r in history], labels, title, fmt)
        for key, title, fmt in (
            ("available_rate", "available rate", ".1%"),
            ("attempts_per_accepted_image", "attempts per accepted image", ".2f"),
            ("images_per_s", "throughput (images/s of wall time)", ".2f"),
        )
    )
    rows = "".join(
        f'<tr><td><a href="{html.escape(link_prefix + r["run_id"])}/report.html">{html.escape(r["run_id"])}</a></td>'
        f"<td>{_fmt(r.get('mode'))}</td><td>{_fmt(r.get('finished_at'))}</td><td>{_fmt(r.get('items'))}</td>"
        f"<td>{_fmt(r.get('available_rate'))}</td><td>{_fmt(r.get('attempts_per_accepted_image'))}</td>"
        f"<td>{_fmt(r.get('images_per_s'))}</td></tr>"
        for r in reversed(history)
    )
    return (
        f'<div class="grid">{plots}</div><table><tr><th>run</th><th>mode</th><th>finished</th><th>items</th>'
        f"<th>available rate</th><th>attempts per accepted image</th><th>images/s</th></tr>{rows}</table>"
    )


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def render_html(
    run: dict[str, Any],
    summary: dict[str, Any],
    sheet: list[dict[str, Any]],
    history: list[dict[str, Any]] | None = None,
    link_prefix: str = "runs/",
) -> str:
    """The page; ``link_prefix`` leads from the page to ``runs/`` (``"../"`` for a run's own copy)."""
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
        ("generation actor starts", run.get("generation_actor_starts")),
        ("throughput (images/s of wall time)", run.get("images_per_s")),
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
            f'<div class="item"><h3>{e(str(item["sku_id"]))} <small>({e(item["group"])})</small></h3>'
            f'<div class="row">{"".join(cells)}</div></div>'
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
.err{{color:#cf222e}} h3{{margin:4px 0;font-size:14px}} h3 small{{color:#666;font-weight:normal}}
</style></head><body>
<h1>reliable-ad run report</h1>
<div class="grid"><div><h2>Numbers</h2><table>{table}</table></div>
<div><h2>Cumulative available rate</h2>{_svg_curve(summary["available_rate_by_attempt"])}</div>
<div><h2>Stage throughput</h2><table>{stages}</table>
<h2>Retries by steering</h2><table><tr><th>action</th><th>attempts</th><th>accepted</th></tr>{steer}</table></div></div>
<h2>History</h2>{_history_html(history or [], link_prefix)}
<h2>Contact sheet</h2><p>product | accepted (or best, when exhausted) | rejected attempts with RFNet's label.
A sample of the whole run: up to {PER_GROUP} items per status and per defect label ({len(sheet)} items)</p>
{"".join(cards)}
</body></html>
"""


def _sample_key(run_id: str, group: str, sku_id: str) -> int:
    data = f"{run_id}\x1f{group}\x1f{sku_id}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class _BottomK:
    """The ``k`` skus with the smallest sample keys per group (the key is salted with the group, so
    the groups' samples are independent)."""

    def __init__(self, run_id: str, k: int):
        self.run_id, self.k = run_id, k
        self.groups: dict[str, list[tuple[int, str]]] = defaultdict(list)  # max-heaps of (-key, sku)

    def add(self, group: str, sku_id: str) -> None:
        heap, key = self.groups[group], _sample_key(self.run_id, group, sku_id)
        if any(s == sku_id for _, s in heap):
            return
        if len(heap) < self.k:
            heapq.heappush(heap, (-key, sku_id))
        elif key < -heap[0][0]:
            heapq.heapreplace(heap, (-key, sku_id))

    def ordered(self, group: str) -> list[str]:
        return [sku for _, sku in sorted(self.groups[group], key=lambda e: -e[0])]


def sample_items(store: OutputStore, run_id: str, per_group: int = PER_GROUP) -> list[tuple[str, str]]:
    """``(group, sku_id)`` of the contact sheet (see the module docstring), statuses first, then defect
    labels; an item sampled for two groups is shown once, under the first."""
    sample = _BottomK(run_id, 2 * per_group)  # spares for items another group already shows
    for part in store.iter_parts("results", RESULT_SCHEMA, ("sku_id", "status"), run_id=run_id):
        for sku, status in zip(part["sku_id"].to_pylist(), part["status"].to_pylist(), strict=True):
            if sku is not None and status:
                sample.add(status, sku)
    columns = ("sku_id", "label", "accepted", "error")
    for part in store.iter_parts("attempts", ATTEMPT_SCHEMA, columns, run_id=run_id):
        rejected = pc.and_(
            pc.invert(pc.fill_null(part["accepted"], False)),
            pc.and_(
                pc.equal(pc.fill_null(part["error"], ""), ""),
                pc.invert(pc.is_in(pc.fill_null(part["label"], ""), pa.array(["", "available"]))),
            ),
        )
        part = part.filter(rejected)
        for sku, label in zip(part["sku_id"].to_pylist(), part["label"].to_pylist(), strict=True):
            sample.add(f"rejected: {label}", sku)
    order = [g for g in STATUS_ORDER if g in sample.groups]
    order += sorted(set(sample.groups) - set(STATUS_ORDER))
    seen: set[str] = set()
    picked = []
    for group in order:
        fresh = [sku for sku in sample.ordered(group) if sku not in seen][:per_group]
        seen.update(fresh)
        picked.extend((group, sku) for sku in fresh)
    return picked


def contact_sheet(store: OutputStore, run_id: str, per_group: int = PER_GROUP) -> list[dict[str, Any]]:
    """The sampled items with thumbnails of their product, chosen image and other attempts."""
    picked = sample_items(store, run_id, per_group)
    if not picked:
        return []
    wanted = pa.array(sorted({sku for _, sku in picked}), pa.string())

    def rows(table_dir: str, schema: pa.Schema) -> list[dict[str, Any]]:
        out = []
        for part in store.iter_parts(table_dir, schema, run_id=run_id):
            out.extend(part.filter(pc.is_in(part["sku_id"], wanted)).to_pylist())
        return out

    results = {r["sku_id"]: r for r in rows("results", RESULT_SCHEMA)}
    by_sku: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in rows("attempts", ATTEMPT_SCHEMA):
        by_sku[a["sku_id"]].append(a)
    sheet = []
    for group, sku in picked:
        r = results.get(sku)
        if r is None:
            continue
        atts = sorted({a["attempt"]: a for a in by_sku.get(sku, [])}.values(), key=lambda a: a["attempt"])
        chosen = next((a for a in atts if a["image"] and a["image"] == r["image"]), None)
        product = next((a["product"] for a in atts if a.get("product")), "")
        sheet.append(
            {
                "group": group,
                "sku_id": sku,
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


def write_report(out: str, run_id: str | None = None, *, run: dict[str, Any] | None = None) -> str:
    """(Re)build the report of ``run_id`` (default: the latest run) from the tables: the run's own
    page ``runs/<run_id>/report.html`` and, for the latest run, ``report.html``; ``run.json`` (and its
    copy) get the summary numbers again. ``run``: the run's ``run.json`` content when the caller just
    wrote it (the numbers are then not computed again). Returns the URI of the page written for the
    latest run, else of the run's own page."""
    store = OutputStore(storage.normalize(out))
    latest = _read_json(store.path("run.json"))
    if run_id is None:
        run_id = latest.get("run_id") or (store.read_state() or {}).get("run_id")
    if not run_id:
        raise FileNotFoundError(f"{out} holds no run (no run.json or state.json)")
    if run is None:
        run = _read_json(store.path("runs", run_id, "run.json"))
        if not run and latest.get("run_id") == run_id:
            run = latest  # a store written before runs/ existed
        max_attempts = run.get("config", {}).get("retry", {}).get("max_attempts")
        summary = summarize_store(store, run_id, max_attempts)
        if run:
            run.update(summary)
            if latest.get("run_id") == run_id:
                save_run_json(store, run)
            else:
                text = json.dumps(run, indent=2, default=str)
                storage.write_text(store.path("runs", run_id, "run.json"), text, policy=store.policy)
    else:
        summary = run  # run.json holds the summary numbers
    run = run or {"run_id": run_id}
    sheet = contact_sheet(store, run_id)
    history = load_history(store)
    own = store.path("runs", run_id, "report.html")
    storage.write_text(own, render_html(run, summary, sheet, history, "../"), policy=store.policy)
    if latest.get("run_id") not in (run_id, None):
        return own
    uri = store.path("report.html")
    storage.write_text(uri, render_html(run, summary, sheet, history, "runs/"), policy=store.policy)
    return uri


def _read_json(uri: str) -> dict[str, Any]:
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else {}
