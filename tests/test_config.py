"""Config layering (defaults < preset < file < flags), validation and hashing."""

from __future__ import annotations

import pytest

from jobs.common import build_parser, config_from_args
from jobs.generate import SPEC
from pipelines.config import ConfigError, GenerateConfig, load_config


def test_precedence_defaults_preset_file_flags(tmp_path):
    defaults = GenerateConfig()
    assert defaults.generation.num_inference_steps == 40 and defaults.models.controlnet.endswith("canny")
    tiny = load_config(GenerateConfig, preset="tiny")
    assert tiny.generation.num_inference_steps == 8 and tiny.models.base == "tiny"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: tiny\ngeneration:\n  num_inference_steps: 5\n  batch_size: 3\nseed: 9\n")
    from_file = load_config(GenerateConfig, config_file=cfg_file)
    assert (from_file.generation.num_inference_steps, from_file.seed, from_file.models.base) == (5, 9, "tiny")
    args = build_parser(SPEC).parse_args(
        ["--config", str(cfg_file), "--seed", "11", "--set", "generation.batch_size=7", "--max-attempts", "4"]
    )
    cfg = config_from_args(SPEC, args)
    assert (cfg.seed, cfg.generation.batch_size, cfg.retry.max_attempts) == (11, 7, 4)
    assert cfg.generation.num_inference_steps == 5  # from the file, untouched by flags
    # --preset beats the file's preset key
    args = build_parser(SPEC).parse_args(["--config", str(cfg_file), "--preset", "sd15"])
    assert config_from_args(SPEC, args).models.base == GenerateConfig().models.base


def test_set_null_clears_a_field_a_left_out_flag_does_not():
    from jobs.train_rfnet import SPEC as TRAIN

    parse = build_parser(TRAIN).parse_args
    assert config_from_args(TRAIN, parse(["--preset", "small"])).init_from == "builtin:small"
    cleared = config_from_args(TRAIN, parse(["--preset", "small", "--set", "init_from=null"]))
    assert cleared.init_from is None and cleared.optim.max_train_minutes == 8.0
    # --max-minutes left out keeps the preset's budget; --set can still clear it.
    args = parse(["--preset", "small", "--set", "optim.max_train_minutes=null"])
    assert config_from_args(TRAIN, args).optim.max_train_minutes is None


def test_reliable_derives_from_sd15():
    sd15, reliable = (
        load_config(GenerateConfig, preset="sd15"),
        load_config(GenerateConfig, preset="reliable"),
    )
    assert reliable.models.controlnet == "ZhenbangDu/reliable_controlnet"
    assert reliable.model_copy(update={"models": sd15.models}) == sd15


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"generation.batch_sz": 3}, "generation.batch_sz: Extra inputs are not permitted"),
        ({"generation.batch_size": 0}, "generation.batch_size"),
        ({"prepare.image_scale_range": [0.8, 0.7]}, "image_scale_range"),
        ({"generation.scheduler": "plms"}, "generation.scheduler"),
    ],
)
def test_invalid_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(GenerateConfig, preset="tiny", overrides=overrides)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config(GenerateConfig, preset="huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("generation: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(GenerateConfig, config_file=bad)


def test_check_ready_needs_io_and_an_inspector():
    with pytest.raises(ConfigError, match="missing --catalog, --out"):
        load_config(GenerateConfig, preset="sd15").check_ready()
    cfg = load_config(GenerateConfig, preset="sd15", overrides={"catalog": "c.jsonl", "out": "o"})
    with pytest.raises(ConfigError, match="--no-inspect"):
        cfg.check_ready()
    load_config(GenerateConfig, preset="tiny", overrides={"catalog": "c.jsonl", "out": "o"}).check_ready()


def test_hash_ignores_speed_settings_only():
    base = load_config(GenerateConfig, preset="tiny")
    faster = load_config(
        GenerateConfig,
        preset="tiny",
        overrides={
            "generation.batch_size": 32,
            "generation.concurrency": 4,
            "out": "elsewhere",
            "run.chunk_size": 9,
        },
    )
    assert base.config_hash() == faster.config_hash()
    for key, value in [("seed", 1), ("generation.guidance_scale", 5.0), ("inspect.threshold", 0.4)]:
        changed = load_config(GenerateConfig, preset="tiny", overrides={key: value})
        assert changed.config_hash() != base.config_hash(), key


def test_shipped_job_configs_load():
    from pathlib import Path

    for path in sorted(Path("jobs/configs").glob("generate*.yaml")):
        load_config(GenerateConfig, config_file=path)
