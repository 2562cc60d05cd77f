"""``reliable-ad``: one console script whose subcommands map 1:1 onto the modules in ``jobs/``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from jobs.common import JobSpec, add_common_arguments, execute

# subcommand -> module under jobs/
SUBCOMMANDS = {
    "generate": "jobs.generate",
    "refresh": "jobs.refresh",
    "train-rfnet": "jobs.train_rfnet",
    "rfft": "jobs.rfft",
    "evaluate": "jobs.evaluate",
    "report": "jobs.report",
}


def load_spec(name: str) -> JobSpec:
    return importlib.import_module(SUBCOMMANDS[name]).SPEC


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="reliable-ad",
        description="Reliable advertising-image generation: generate, inspect (RFNet), regenerate, fine-tune (RFFT).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported, so `reliable-ad generate` does not pay for
    # importing the trainers (and --help stays fast).
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, module in SUBCOMMANDS.items():
        if name == chosen:
            spec = load_spec(name)
            add_common_arguments(sub.add_parser(name, help=spec.help, description=spec.help), spec)
        else:
            sub.add_parser(name, help=f"see `reliable-ad {name} --help` ({module})", add_help=False)
    args = parser.parse_args(argv)
    return execute(load_spec(args.command), args)


if __name__ == "__main__":
    sys.exit(main())
