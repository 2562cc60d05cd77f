"""Write ``cluster/requirements.txt``: the project's runtime dependencies, pinned to this environment.

The container image (``cluster/Dockerfile``) and the VM launcher (``cluster/launcher-aws.yaml``)
install exactly these versions, so a cluster runs what the test suite ran. Regenerate the file with
the project's environment after changing ``[project.dependencies]`` in ``pyproject.toml`` or after
upgrading the environment::

    .venv/bin/python cluster/pin_requirements.py          # rewrite cluster/requirements.txt
    .venv/bin/python cluster/pin_requirements.py --check  # exit 1 if the file is out of date

What is pinned: the closure of ``[project.dependencies]`` (extras followed, the ``test`` extra not),
read from the installed distributions' metadata. Environment markers are evaluated for this
interpreter and platform, which are recorded in the file header; ``tests/test_cluster_manifests.py``
checks that the image uses the same Python minor version.

``torch`` is pinned by public version only (``2.13.0``, not ``2.13.0+cpu``): the image installs the
CUDA build of that version first, and pip treats ``+cu1xx`` / ``+cpu`` builds as satisfying the pin.
The CUDA libraries that build pulls in (``nvidia-*``, ``triton``) are pinned exactly by torch itself.
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "cluster" / "requirements.txt"


def read_project_dependencies(pyproject: Path) -> list[Requirement]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    data = tomllib.loads(pyproject.read_text())
    return [Requirement(text) for text in data["project"]["dependencies"]]


def _marker_applies(marker: Marker | None, extras: frozenset[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({"extra": extra}) for extra in (extras or frozenset({""})))


def resolve_closure(roots: list[Requirement]) -> dict[str, tuple[str, frozenset[str]]]:
    """Installed ``name -> (version, extras requested)`` for ``roots`` and everything they require.

    Raises ``SystemExit`` naming the missing distribution if a required one is not installed.
    """
    pinned: dict[str, tuple[str, frozenset[str]]] = {}
    walked: set[tuple[str, str]] = set()  # (distribution, extra) pairs whose requirements were queued
    queue: list[tuple[Requirement, str]] = [(req, "pyproject.toml") for req in roots]
    while queue:
        req, required_by = queue.pop()
        if not _marker_applies(req.marker, frozenset()):
            continue
        name = canonicalize_name(req.name)
        extras = frozenset(canonicalize_name(e) for e in req.extras)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"{req.name} (required by {required_by}) is not installed in {sys.prefix}; "
                "install the project first (`make setup`), then rerun this script with .venv/bin/python"
            ) from None
        previous = pinned.get(name, (dist.version, frozenset()))[1]
        pinned[name] = (dist.version, previous | extras)
        for extra in extras | {""}:
            if (name, extra) in walked:
                continue
            walked.add((name, extra))
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    sub.marker = None  # evaluated here, in the context of the extra that asked for it
                    queue.append(
                        (sub, f"{dist.metadata['Name']}[{extra}]" if extra else dist.metadata["Name"])
                    )
    return pinned


def render(pinned: dict[str, tuple[str, frozenset[str]]]) -> str:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    lines = [
        "# Pinned runtime dependencies of reliable-ad: [project.dependencies] of pyproject.toml and everything",
        "# they require, at the versions the test suite ran with. Installed by cluster/Dockerfile and",
        "# cluster/launcher-aws.yaml. Do not edit by hand; regenerate with:",
        "#   .venv/bin/python cluster/pin_requirements.py",
        f"# Generated with Python {python} on {sys.platform} {platform.machine()}.",
        "# torch is pinned by public version: the image installs the CUDA build of that version first.",
        "# No extras are written: every distribution an extra pulls in is pinned on its own line, and the",
        "# file doubles as a pip constraints file (the Makefile), where extras are not allowed.",
    ]
    for name in sorted(pinned):
        public = Version(pinned[name][0]).public
        lines.append(f"{name}=={public}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if cluster/requirements.txt is out of date"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"file to write (default: {OUTPUT})")
    args = parser.parse_args(argv)

    roots = read_project_dependencies(REPO / "pyproject.toml")
    text = render(resolve_closure(roots))
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(
                f"{args.output} is out of date; run: .venv/bin/python cluster/pin_requirements.py",
                file=sys.stderr,
            )
            return 1
        return 0
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.output)
    pins = [line for line in text.splitlines() if not line.startswith("#")]
    print(f"wrote {args.output} ({len(pins)} pinned distributions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
