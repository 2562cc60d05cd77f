"""The console script: `--help` lists every subcommand's purpose without importing the jobs,
`--version`, and `--print-config` on every subcommand (the effective config, nothing started)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.cli import load_spec, main
from jobs.common import COMMANDS, build_parser, config_from_args, execute
from pipelines.config import load_config

REPO = Path(__file__).resolve().parents[1]

# Per subcommand: its own flags, and (dotted field, value) they must set in the printed config.
FLAGS = {
    "generate": (["--catalog", "/nowhere/catalog.jsonl", "--seed", "7"], ("seed", 7)),
    "refresh": (["--catalog", "/nowhere/catalog.jsonl", "--max-attempts", "5"], ("retry.max_attempts", 5)),
    "train-rfnet": (["--data", "/nowhere/set", "--epochs", "3"], ("optim.epochs", 3)),
    "rfft": (["--out", "/nowhere/out", "--steps", "9"], ("steps", 9)),
    "evaluate": (["--rfnet", "/nowhere/rfnet", "--data", "/nowhere/set"], ("data", "/nowhere/set")),
    "report": (["--out", "/nowhere/out", "--export-only", "rejected"], ("export_only", "rejected")),
}


def dotted(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def test_help_lists_every_subcommand_with_its_purpose_and_imports_no_job():
    code = (
        "import sys\nfrom jobs.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('jobs.', 'rfnet', 'rfft', 'torch', 'ray'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    *help_lines, imported = proc.stdout.strip().splitlines()
    text = " ".join(" ".join(help_lines).split())
    for name, command in COMMANDS.items():
        assert f"{name} {' '.join(command.help.split())}" in text, name
    assert eval(imported) == ["jobs.cli", "jobs.common"]


def test_version_is_the_project_version(capsys):
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"reliable-ad {version}"
    from pipelines import __version__

    assert __version__ == version


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_print_config_prints_the_effective_config_and_starts_nothing(name, tmp_path, capsys):
    spec = load_spec(name)
    flags, (key, value) = FLAGS[name]
    args = build_parser(spec).parse_args([*flags, "--print-config"])

    def must_not_run(cfg):
        raise AssertionError("--print-config ran the job")

    assert execute(dataclasses.replace(spec, main=must_not_run), args) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert dotted(data, key) == value
    # The printed YAML is the whole config: loaded again with --config it is the same config.
    (tmp_path / "printed.yaml").write_text(printed)
    again = load_config(spec.config_cls, config_file=tmp_path / "printed.yaml")
    assert again == config_from_args(spec, args)
    assert not (tmp_path / "nowhere").exists()


def test_print_config_applies_the_preset_under_the_file_and_the_flags(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("preset: sd15\ngeneration:\n  batch_size: 4\n")
    argv = ["generate", "--config", str(tmp_path / "c.yaml"), "--preset", "tiny", "--batch-size", "2"]
    assert main([*argv, "--set", "generation.num_inference_steps=3", "--print-config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["models"]["base"] == "tiny"  # --preset wins over the file's preset
    assert data["generation"]["batch_size"] == 2  # the flag wins over the file
    assert data["generation"]["num_inference_steps"] == 3 and data["prepare"]["resolution"] == 128
