"""The rfft job's configuration: presets, flags, resume guard, readiness checks."""

from __future__ import annotations

import shlex

import pytest

from jobs.rfft import SPEC
from pipelines.config import ConfigError, load_config
from rfft.config import RFFTConfig


def config(out, **overrides) -> RFFTConfig:
    return load_config(RFFTConfig, preset="tiny", overrides={"out": str(out)} | overrides)


def test_resuming_with_a_changed_config_is_refused_before_training(tmp_path):
    from rfft.trainer import check_run_config

    check_run_config(config(tmp_path, steps=1))
    check_run_config(config(tmp_path, **{"loss.beta": 0.0}))  # no checkpoint yet: replaced
    check_run_config(config(tmp_path, steps=1))
    (tmp_path / "checkpoints" / "checkpoint-000001").mkdir(parents=True)
    check_run_config(config(tmp_path, steps=5))  # more steps: a resume, allowed
    with pytest.raises(ConfigError, match=r"loss\.beta"):
        check_run_config(config(tmp_path, **{"loss.beta": 0.0}))


def test_cli_flags_map_onto_the_config():
    from jobs.common import build_parser, config_from_args

    argv = shlex.split("--preset tiny --out o --steps 7 --beta 0.5 --workers 2 --rfnet tiny")
    args = build_parser(SPEC).parse_args(argv)
    cfg = config_from_args(SPEC, args)
    assert (cfg.out, cfg.steps, cfg.loss.beta, cfg.scaling.workers, cfg.rfnet) == ("o", 7, 0.5, 2, "tiny")


def test_presets_derive_from_the_paper_setup():
    paper = load_config(RFFTConfig, preset="sd15")
    assert (paper.optim.lr, paper.optim.batch_size, paper.optim.grad_accum) == (1e-5, 4, 4)
    assert (
        paper.sampling.num_inference_steps,
        paper.sampling.guidance_scale,
        paper.sampling.graded_last_k,
    ) == (40, 7.5, 10)
    tiny = load_config(RFFTConfig, preset="tiny")
    assert tiny.models.base == "tiny" and tiny.prepare.resolution == 128
    assert tiny.sampling.guidance_scale == paper.sampling.guidance_scale  # derived, not copied


def test_graded_window_larger_than_the_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="graded_last_k"):
        load_config(RFFTConfig, preset="tiny", overrides={"sampling.graded_last_k": 9})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"out": None}, "--out"),
        ({"rfnet": None}, "--rfnet"),
        ({"data": {"num_eval_products": 30}}, "num_eval_products"),
    ],
)
def test_check_ready_names_what_is_missing(tmp_path, overrides, message):
    cfg = config(tmp_path)
    cfg = (
        RFFTConfig.model_validate(cfg.to_dict() | overrides)
        if "data" in overrides
        else cfg.model_copy(update=overrides)
    )
    with pytest.raises(ConfigError, match=message):
        cfg.check_ready()


def test_an_unreadable_catalog_fails_before_ray_starts(tmp_path):
    from rfft.trainer import check_catalog

    with pytest.raises(ConfigError, match="cannot be read"):
        check_catalog(config(tmp_path, **{"data.catalog": str(tmp_path / "missing.jsonl")}))


def test_relative_local_paths_reach_the_workers_absolute(tmp_path, monkeypatch):
    from rfft.trainer import absolute_local_paths

    (tmp_path / "rfnet-dir").mkdir()
    (tmp_path / "tiny").mkdir()  # a directory named like a preset does not shadow the preset
    monkeypatch.chdir(tmp_path)
    cfg = absolute_local_paths(config("out", rfnet="rfnet-dir"))
    assert cfg.rfnet == str(tmp_path / "rfnet-dir")
    assert (cfg.models.base, cfg.models.controlnet) == ("tiny", "tiny")
    assert absolute_local_paths(config("out", rfnet="tiny")).rfnet == "tiny"
    assert absolute_local_paths(config("out", rfnet="s3://bucket/rfnet")).rfnet == "s3://bucket/rfnet"
