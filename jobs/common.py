"""Shared command-line plumbing for the job modules.

Every job takes ``--config FILE.yaml``, ``--preset NAME`` and repeatable ``--set KEY=VALUE`` (any
config field by dotted name), plus its own flags. Precedence: flags > ``--set`` > file > preset >
defaults. The config is validated once, here, before any Ray work starts; a bad config exits with
status 2 and a message naming the field. Input the job cannot use (no usable sample in a dataset, a
path that does not exist) exits with status 2 and its message too, without a traceback unless
``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.config import ConfigBase, ConfigError, InputError, load_config, parse_assignment

logger = logging.getLogger("reliable_ad")


@dataclass(frozen=True)
class JobSpec:
    """What a job module exposes to the CLI."""

    name: str  # subcommand name, e.g. "train-rfnet"
    help: str  # one line for `reliable-ad --help`
    config_cls: type[ConfigBase]
    main: Callable[[Any], int]  # main(cfg) -> exit status
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the job's own flags
    overrides: Callable[[argparse.Namespace], dict[str, Any]]  # flags -> {dotted config key: value}
    default_preset: str | None = None


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
        return int(spec.main(cfg) or 0)
    except ConfigError as exc:
        print(f"reliable-ad {spec.name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except (InputError, FileNotFoundError) as exc:
        logger.debug("%s failed on its input", spec.name, exc_info=True)
        print(f"reliable-ad {spec.name}: error: {exc}", file=sys.stderr)
        return 2


def run_job(spec: JobSpec, argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m jobs.<name>``."""
    args = build_parser(spec).parse_args(argv)
    return execute(spec, args)
