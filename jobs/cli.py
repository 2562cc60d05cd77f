"""``reliable-ad``: one console script whose subcommands map 1:1 onto the modules in ``jobs/``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from jobs.common import COMMANDS, JobSpec, add_common_arguments, execute


def load_spec(name: str) -> JobSpec:
    return importlib.import_module(COMMANDS[name].module).SPEC


def version() -> str:
    """The installed distribution's version (pyproject.toml), else the source tree's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("reliable-ad")
    except PackageNotFoundError:
        from pipelines import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="reliable-ad",
        description="Reliable advertising-image generation: generate, inspect (RFNet), regenerate, fine-tune (RFFT).",
        epilog="`reliable-ad COMMAND --help` lists a command's flags; every command takes --config, --preset, "
        "--set KEY=VALUE and --print-config.",
    )
    parser.add_argument("--version", action="version", version=f"reliable-ad {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported: `reliable-ad generate` does not pay for
    # importing the trainers, and `reliable-ad --help` imports none (the purposes live in COMMANDS).
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, command in COMMANDS.items():
        if name == chosen:
            add_common_arguments(
                sub.add_parser(name, help=command.help, description=command.help), load_spec(name)
            )
        else:
            sub.add_parser(name, help=command.help, add_help=False)
    args = parser.parse_args(argv)
    return execute(load_spec(args.command), args)


if __name__ == "__main__":
    sys.exit(main())
