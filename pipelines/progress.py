"""Progress for long runs: a periodic one-line summary and metrics exported through Ray.

The summary line (every ``run.progress_interval_s`` seconds, and at the end)::

    generate run-... | items 1200/10000 (12.0%) | accepted 610 exhausted 40 generated 0 errors 3 |
    attempts 1650 (rejected 990) | 2.85 img/s | ETA 0:51:20

Metrics go through ``ray.util.metrics`` so a Prometheus scrape of the Ray cluster shows them
(``ray_reliable_ad_*``): counters ``reliable_ad_items_total{status}`` and
``reliable_ad_attempts_total{outcome}``; gauges ``reliable_ad_images_per_second``,
``reliable_ad_items_pending`` and ``reliable_ad_generation_busy_fraction``. Each has a ``run_id`` tag.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta

logger = logging.getLogger("reliable_ad.progress")


class _Metrics:
    """Ray metrics, created lazily (they need a connected Ray worker)."""

    def __init__(self, run_id: str):
        from ray.util.metrics import Counter as RayCounter
        from ray.util.metrics import Gauge

        keys = ("run_id",)
        self.tags = {"run_id": run_id}
        self.items = RayCounter(
            "reliable_ad_items_total", "Catalog items finished, by status", tag_keys=(*keys, "status")
        )
        self.attempts = RayCounter(
            "reliable_ad_attempts_total", "Generation attempts, by outcome", tag_keys=(*keys, "outcome")
        )
        self.rate = Gauge(
            "reliable_ad_images_per_second", "Generated images per second (run average)", tag_keys=keys
        )
        self.pending = Gauge("reliable_ad_items_pending", "Catalog items not finished yet", tag_keys=keys)
        self.busy = Gauge(
            "reliable_ad_generation_busy_fraction",
            "Fraction of generation-actor time spent generating",
            tag_keys=keys,
        )


class Progress:
    """Counts finished items and attempts; logs a summary line at most every ``interval_s``.

    ``total_items``: the catalog's rows (``None`` until known: a run counts them in the background
    while it starts; :meth:`set_total`). ``done_before``: items of this run an earlier driver finished
    (a resumed run). The ETA counts only this driver's work: what is left of the catalog over the rate
    at which this driver finishes items, so a resumed run neither counts the finished items as fast
    work nor waits for them.
    """

    def __init__(
        self,
        run_id: str,
        mode: str,
        total_items: int | None,
        interval_s: float,
        *,
        done_before: int = 0,
        metrics: bool = True,
    ):
        self.run_id, self.mode, self.total = run_id, mode, total_items
        self.done_before = done_before
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.last_log = self.started
        self.items: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.skipped = 0  # refresh: unchanged items (no work)
        self.images = 0
        self.busy_fraction = float("nan")
        self._metrics: _Metrics | None = None
        if metrics:
            try:
                self._metrics = _Metrics(run_id)
            except Exception as exc:  # metrics are best-effort: never fail a run because of them
                logger.debug("Ray metrics unavailable: %s", exc)

    def set_total(self, total_items: int) -> None:
        self.total = total_items

    def attempt(self, outcome: str, n: int = 1) -> None:
        """``outcome`` in accepted | rejected | generated | failed."""
        self.attempts[outcome] += n
        if outcome != "failed":
            self.images += n
        if self._metrics and n > 0:  # Ray counters reject inc(0)
            self._metrics.attempts.inc(n, tags={**self._metrics.tags, "outcome": outcome})

    def item(self, status: str, n: int = 1) -> None:
        self.items[status] += n
        if self._metrics and n > 0:  # Ray counters reject inc(0); a catalog without errors counts 0
            self._metrics.items.inc(n, tags={**self._metrics.tags, "status": status})

    def skip(self, n: int) -> None:
        self.skipped += n

    @property
    def done(self) -> int:
        """Catalog rows settled so far: finished before this driver, by it, or skipped as unchanged."""
        return self.done_before + sum(self.items.values()) + self.skipped

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.images / elapsed if elapsed > 0 else 0.0

    def eta(self) -> timedelta | None:
        """What is left of the catalog over this driver's item rate (``None`` while unknown)."""
        finished_here = sum(self.items.values())
        elapsed = time.monotonic() - self.started
        if self.total is None or finished_here == 0 or elapsed <= 0 or self.done >= self.total:
            return None
        return timedelta(seconds=round((self.total - self.done) * elapsed / finished_here))

    def line(self) -> str:
        done, total = self.done, self.total
        share = f" ({100.0 * done / max(total, 1):.1f}%)" if total is not None else ""
        eta = self.eta()
        i, a = self.items, self.attempts
        skipped = f" unchanged {self.skipped}" if self.skipped else ""
        return (
            f"{self.mode} {self.run_id} | items {done}/{total if total is not None else '?'}{share} | "
            f"accepted {i['accepted']} exhausted {i['exhausted']} generated {i['generated']} errors {i['error']}"
            f"{skipped} | attempts {sum(a.values())} (rejected {a['rejected']}, failed {a['failed']}) | "
            f"{self.rate():.2f} img/s | ETA {eta if eta is not None else '-'}"
        )

    def maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_log < self.interval_s:
            return
        self.last_log = now
        logger.info(self.line())
        if self._metrics:
            tags = self._metrics.tags
            self._metrics.rate.set(self.rate(), tags=tags)
            if self.total is not None:
                self._metrics.pending.set(max(0, self.total - self.done), tags=tags)
            if self.busy_fraction == self.busy_fraction:
                self._metrics.busy.set(self.busy_fraction, tags=tags)
