"""``reliable-ad refresh``: the nightly incremental run.

Same flags as ``generate``. Only new or changed catalog items (image identity + row + output-relevant
config; see :mod:`pipelines.refresh`) are generated; unchanged ones are skipped without reading their
images; removed ones are marked in ``manifest.parquet``. A lease keeps two refreshes off one output
store: a refresh that finds the lease held (or loses it mid-run) exits with status
:data:`EXIT_REFUSED` and says who holds it.
"""

from __future__ import annotations

import sys

from jobs.common import JobSpec, run_job
from jobs.generate import add_arguments, overrides
from pipelines.config import GenerateConfig
from pipelines.lease import LeaseHeld

EXIT_REFUSED = 4  # another refresh holds the store's lease (2: bad config or input; 3: no resources)


def main(cfg: GenerateConfig) -> int:
    from pipelines.runner import run_catalog
    from rfnet.scorer import ScoreStage

    try:
        summary = run_catalog(cfg, mode="refresh", inspect_stage=ScoreStage)
    except LeaseHeld as exc:
        print(f"reliable-ad refresh: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    rj = summary.run_json
    print(
        f"refresh {summary.run_id}: {summary.counts}, {rj['skipped_unchanged']} unchanged, "
        f"{rj['removed']} removed -> {summary.out}"
    )
    return 0


SPEC = JobSpec(
    name="refresh",
    config_cls=GenerateConfig,
    main=main,
    add_arguments=add_arguments,
    overrides=overrides,
)

if __name__ == "__main__":
    sys.exit(run_job(SPEC))
