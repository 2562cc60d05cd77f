"""``reliable-ad refresh``: the nightly incremental run.

Same flags as ``generate``. Only new or changed catalog items (content hash of image bytes + row +
output-relevant config) are generated; unchanged ones are skipped; removed ones are marked in
``manifest.parquet``. A lease keeps two refreshes off one output store.
"""

from __future__ import annotations

import sys

from jobs.common import JobSpec, run_job
from jobs.generate import add_arguments, overrides
from pipelines.config import GenerateConfig


def main(cfg: GenerateConfig) -> int:
    from pipelines.runner import run_catalog
    from rfnet.scorer import ScoreStage

    summary = run_catalog(cfg, mode="refresh", inspect_stage=ScoreStage)
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
