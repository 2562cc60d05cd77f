"""``reliable-ad report --out DIR``: rebuild ``report.html`` (and run.json's yield numbers) from the tables.

``--export-labels FILE.csv`` also writes the attempts as a labelling sheet (see docs/data.md);
``--import-labels FILE.csv --dataset DIR`` reads a filled sheet back into an RF1M-layout dataset.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.common import JobSpec, run_job
from pipelines.config import ConfigBase, ConfigError


class ReportConfig(ConfigBase):
    out: str | None = None  # output root of a generate/refresh run
    run_id: str | None = None  # which run (default: the latest in the store)
    export_labels: str | None = None  # write a labelling sheet (CSV) of the run's attempts here
    export_only: str = "all"  # all | rejected | accepted
    import_labels: str | None = None  # a filled labelling sheet to import
    dataset: str | None = None  # RF1M-layout dataset root the imported labels are added to


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="output root of a run (local or s3://)")
    parser.add_argument("--run-id", help="run to report (default: the latest)")
    parser.add_argument("--export-labels", metavar="FILE.csv", help="write a labelling sheet of the attempts")
    parser.add_argument("--export-only", choices=["all", "rejected", "accepted"], help="rows in the sheet")
    parser.add_argument("--import-labels", metavar="FILE.csv", help="import a filled labelling sheet")
    parser.add_argument("--dataset", metavar="DIR", help="RF1M-layout dataset to add imported labels to")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "out": args.out,
        "run_id": args.run_id,
        "export_labels": args.export_labels,
        "export_only": args.export_only,
        "import_labels": args.import_labels,
        "dataset": args.dataset,
    }


def main(cfg: ReportConfig) -> int:
    if cfg.import_labels:
        from rfnet.data import import_labels

        if not cfg.dataset:
            raise ConfigError("--import-labels needs --dataset DIR (the RF1M-layout dataset to add to)")
        report = import_labels(cfg.import_labels, cfg.dataset)
        print(report)
        return 0
    if not cfg.out:
        raise ConfigError("missing --out DIR (the output root of a generate/refresh run)")
    from pipelines.report import write_report

    uri = write_report(cfg.out, cfg.run_id)
    print(f"report: {uri}")
    if cfg.export_labels:
        from rfnet.data import export_for_labelling

        sheet = export_for_labelling(cfg.out, cfg.export_labels, only=cfg.export_only)
        print(f"labelling sheet: {sheet}")
    return 0


SPEC = JobSpec(
    name="report",
    config_cls=ReportConfig,
    main=main,
    add_arguments=add_arguments,
    overrides=overrides,
)

if __name__ == "__main__":
    sys.exit(run_job(SPEC))
