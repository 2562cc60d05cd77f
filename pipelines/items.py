"""Item accounting for recurrent generation: what the driver keeps of an item in flight, when an item
is finished (:func:`decide`) and what its next attempt is (:func:`next_plan`).

The driver holds an :class:`ItemState` only while the item is in flight (planned, or waiting for its
next attempt); a finished item is written to ``results/`` and dropped. Each state keeps the item and a
compact dict per attempt (:data:`STATE_FIELDS`, a few hundred bytes instead of the ~3 KB row that goes
to ``attempts/``): enough to decide the item and to steer its next attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.attempts import AttemptPlan, PreviousAttempt, plan_attempt
from pipelines.catalog import CatalogItem
from pipelines.config import GenerateConfig
from pipelines.refresh import ImageIdentity

PERMANENT_ERROR_PREFIX = "invalid input:"

# What the driver keeps of each attempt (the full row goes to attempts/).
STATE_FIELDS = (
    "attempt",
    "error",
    "accepted",
    "p_available",
    "label",
    "image",
    "content_hash",
    "template",
    "color",
    "image_scale",
)


def compact(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in STATE_FIELDS}


@dataclass
class ItemState:
    item: CatalogItem
    attempts: dict[int, dict[str, Any]] = field(default_factory=dict)  # attempt number -> compact row
    result: dict[str, Any] | None = None
    planned: int = 0  # the attempt in flight (0: none)
    identity: ImageIdentity | None = None  # the image as listed before its bytes were read (refresh)
    earlier_session: bool = False  # attempted by an earlier session of a resumed run

    def history(self) -> list[PreviousAttempt]:
        return [
            PreviousAttempt(
                attempt=a,
                label=(r.get("label") or "") if not r.get("error") else "",
                template=int(r.get("template") if r.get("template") is not None else -1),
                color=r.get("color"),
                image_scale=float(r.get("image_scale") or 0.0),
            )
            for a, r in sorted(self.attempts.items())
        ]


def next_plan(state: ItemState, cfg: GenerateConfig) -> AttemptPlan:
    """The item's next attempt: a pure function of the item, the attempt number, the run seed and
    (for steering) the attempts so far, so a rerun or a resumed run plans the same attempt."""
    attempt = max(state.attempts, default=0) + 1
    return plan_attempt(state.item, attempt, cfg, state.history() if state.attempts else ())


def decide(state: ItemState, cfg: GenerateConfig) -> dict[str, Any] | None:
    """The item's result row if it is finished, else ``None`` (it needs another attempt)."""
    rows = [state.attempts[a] for a in sorted(state.attempts)]
    if not rows:
        return None
    ok = [r for r in rows if not r.get("error")]
    last = rows[-1]

    def result(status: str, chosen: dict[str, Any] | None, error: str = "") -> dict[str, Any]:
        return {
            "sku_id": state.item.sku_id,
            "row": state.item.row,
            "status": status,
            "error": error,
            "attempts": len(rows),
            "image": chosen.get("image") if chosen else "",
            "p_available": chosen.get("p_available") if chosen else None,
            "label": (chosen.get("label") or "") if chosen else "",
            "content_hash": next((r.get("content_hash") for r in rows if r.get("content_hash")), ""),
        }

    if last.get("error", "").startswith(PERMANENT_ERROR_PREFIX):
        return result("error", None, last["error"].removeprefix(PERMANENT_ERROR_PREFIX).strip())
    if cfg.inspect.enabled:
        accepted = [r for r in ok if r.get("accepted")]
        if accepted:
            return result("accepted", accepted[0])
        if len(rows) >= cfg.retry.max_attempts:
            if ok:
                best = max(ok, key=lambda r: (_num(r.get("p_available")), -r["attempt"]))
                return result("exhausted", best)
            return result("error", None, f"all {len(rows)} attempts failed; last: {last['error']}")
        return None
    if ok:
        return result("generated", ok[0])
    if len(rows) >= cfg.retry.max_attempts:
        return result("error", None, f"all {len(rows)} attempts failed; last: {last['error']}")
    return None


def _num(x: Any) -> float:
    return float(x) if x is not None and x == x else -1.0
