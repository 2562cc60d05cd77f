"""Shared command-line plumbing for the job modules.

Every job takes ``--config FILE.yaml``, ``--preset NAME`` and repeatable ``--set KEY=VALUE`` (any
config field by dotted name), plus its own flags; ``--print-config`` prints the effective config as
YAML and exits. Precedence: flags > ``--set`` > file > preset >
defaults. The config is validated once, here, before any Ray work starts; a bad config exits with
status 2 and a message naming the field. Input the job cannot use (no usable sample in a dataset, a
path that does not exist) exits with status 2 and its message too, without a traceback unless
``--log-level DEBUG``. A job the cluster cannot provide resources for (``pipelines.resources``) exits
with status 3, its message the last line printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from pipelines.config import ConfigBase, ConfigError, InputError, load_config, parse_assignment
from pipelines.resources import EXIT_STATUS as NO_RESOURCES_STATUS
from pipelines.resources import ResourceUnavailable

logger = logging.getLogger("reliable_ad")


@dataclass(frozen=True)
class Command:
    module: str  # the job module under jobs/ (exposes SPEC)
    help: str  # one line for `reliable-ad --help`


# subcommand -> its module and purpose. The purposes live here, not in the job modules, so that
# `reliable-ad --help` lists every subcommand without importing any of them.
COMMANDS: dict[str, Command] = {
    "generate": Command(
        "jobs.generate", "generate ad images for a catalog, inspect them with RFNet, regenerate rejects"
    ),
    "refresh": Command(
        "jobs.refresh", "nightly incremental run: only new or changed catalog items; removed ones are marked"
    ),
    "train-rfnet": Command(
        "jobs.train_rfnet", "train RFNet (the image inspector) on an RF1M-layout set (Ray Train)"
    ),
    "rfft": Command("jobs.rfft", "fine-tune the ControlNet with RFNet as the reward (RFFT, Ray Train)"),
    "evaluate": Command(
        "jobs.evaluate",
        "score an RFNet checkpoint on a labelled set: eval.json, confusion, errors, threshold",
    ),
    "report": Command(
        "jobs.report", "rebuild report.html from a run's tables; export/import labelling sheets"
    ),
}


@dataclass(frozen=True)
class JobSpec:
    """What a job module exposes to the CLI."""

    name: str  # subcommand name, e.g. "train-rfnet" (a key of COMMANDS)
    config_cls: type[ConfigBase]
    main: Callable[[Any], int]  # main(cfg) -> exit status
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the job's own flags
    overrides: Callable[[argparse.Namespace], dict[str, Any]]  # flags -> {dotted config key: value}
    default_preset: str | None = None

    @property
    def help(self) -> str:
        return COMMANDS[self.name].help


def add_common_arguments(parser: argparse.ArgumentParser, spec: JobSpec) -> None:
    presets = sorted(spec.config_cls.PRESETS)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config file (overrides the preset)")
    parser.add_argument(
        "--preset",
        choices=presets or None,
        default=None,
        help=f"named preset ({', '.join(presets) or 'none'}); default: {spec.default_preset or 'class defaults'}",
    )
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field by dotted name (repeatable), e.g. --set generation.batch_size=8",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective config (preset < file < --set < flags) as YAML and exit; starts nothing",
    )
    spec.add_arguments(parser)


def build_parser(spec: JobSpec, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or f"python -m jobs.{spec.name.replace('-', '_')}", description=spec.help
    )
    add_common_arguments(parser, spec)
    return parser


def config_from_args(spec: JobSpec, args: argparse.Namespace) -> ConfigBase:
    assignments: dict[str, Any] = dict(parse_assignment(a) for a in args.assignments)
    overrides = {k: v for k, v in spec.overrides(args).items() if v is not None}
    preset = args.preset or (None if args.config else spec.default_preset)
    return load_config(
        spec.config_cls,
        preset=preset,
        config_file=args.config,
        overrides=overrides,
        assignments=assignments,
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def execute(spec: JobSpec, args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        cfg = config_from_args(spec, args)
        if args.print_config:
            # Loadable again with --config: every field, the preset already applied.
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
            return 0
        return int(spec.main(cfg) or 0)
    except ConfigError as exc:
        print(f"reliable-ad {spec.name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except (InputError, FileNotFoundError) as exc:
        logger.debug("%s failed on its input", spec.name, exc_info=True)
        print(f"reliable-ad {spec.name}: error: {exc}", file=sys.stderr)
        return 2
    except ResourceUnavailable as exc:
        _stop_ray()  # its shutdown messages must not follow the error line
        print(f"reliable-ad {spec.name}: error: {exc}", file=sys.stderr)
        return NO_RESOURCES_STATUS


def _stop_ray() -> None:
    """Stop a local Ray this process started (a joined cluster is left alone)."""
    if "ray" in sys.modules:
        import ray

        from pipelines.raystart import started_here

        if started_here():
            ray.shutdown()


def run_job(spec: JobSpec, argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m jobs.<name>``."""
    args = build_parser(spec).parse_args(argv)
    return execute(spec, args)
