"""The reward-hacking guard end to end on Ray Train (tiny preset, CPU): an aggressive run (beta = 0,
a large learning rate) judged by an independent RFNet that disagrees with the reward is stopped and
exports the best step by the judge; ``warn`` mode runs on; metrics.json carries the guard's contract."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from jobs.rfft import main
from pipelines.config import load_config
from pipelines.models import build_random_components
from rfft.config import RFFTConfig
from rfft.worker import RFFTWorker
from rfnet.checkpoint import load_model, save_rfnet

pytestmark = [pytest.mark.ray, pytest.mark.slow]

AGGRESSIVE = {
    "data.num_procedural": 6,
    "data.num_eval_products": 2,
    "data.eval_repeats": 4,  # 4 seeds per held-out product: diversity across the seeds of one product
    "eval.batch_size": 8,
    "eval.every": 2,
    "checkpoint_every": 1,
    "checkpoints_to_keep": 10,
    "loss.beta": 0.0,
    "optim.lr": 3e-2,
    "guards.max_reward_judge_gap": 0.05,  # one image of the 8 held-out ones is 0.125
    "guards.patience": 1,
    "scaling.cpus_per_worker": 1.0,
}


def save_indifferent_judge(directory) -> str:
    """A real RFNet checkpoint (the tiny architecture, saved as ``train-rfnet`` saves one) whose verdict
    ignores the image: a zero head, so p_available is the same ~0.07 for every input, under its 0.5
    threshold. Whatever the reward teaches the ControlNet, this judge's available rate stays 0."""
    model, config, _ = load_model("tiny")
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[0] = -1.0
    save_rfnet(model, config, str(directory), meta={"threshold": 0.5})
    return str(directory)


def rising_threshold(before: dict[str, float], after: dict[str, float]) -> float:
    """The reward threshold between two held-out evaluations that counts the most images as risen
    (ties: the widest margin), so the reward's available rate rises by one image or more."""
    values = sorted({*before.values(), *after.values()})
    best = None
    for low, high in itertools.pairwise(values):
        t = (low + high) / 2
        gain = sum(p >= t for p in after.values()) - sum(p >= t for p in before.values())
        if best is None or (gain, high - low) > best[:2]:
            best = (gain, high - low, t)
    assert best is not None and best[0] >= 1 and best[1] > 1e-4, (before, after)
    return best[2]


@pytest.fixture(scope="module")
def aggressive(tmp_path_factory) -> dict:
    """The aggressive overrides with the judge and a reward threshold its first two steps cross.

    The tiny ControlNet moves held-out p_available by ~0.01 in two steps, so the threshold is placed
    where those steps, run here in-process (the Ray workers repeat them exactly), raise the rate.
    """
    overrides = AGGRESSIVE | {"judge": save_indifferent_judge(tmp_path_factory.mktemp("judge"))}
    worker = RFFTWorker(load_config(RFFTConfig, preset="tiny", overrides=overrides))
    first = worker.evaluate()
    assert first["judge_available_rate"] == 0.0
    worker.train_step()
    worker.train_step()
    second = worker.evaluate()
    assert second["judge_available_rate"] == 0.0
    return overrides | {"rfnet_threshold": rising_threshold(first["per_product"], second["per_product"])}


def config(out, overrides: dict, **more) -> RFFTConfig:
    return load_config(RFFTConfig, preset="tiny", overrides=overrides | {"out": str(out)} | more)


def exported(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "controlnet" / "diffusion_pytorch_model.safetensors"))


def checkpoint_weights(out, step: int) -> dict[str, torch.Tensor]:
    directory = out / "checkpoints" / f"checkpoint-{step:06d}" / "controlnet"
    return load_file(str(directory / "diffusion_pytorch_model.safetensors"))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_contract(metrics: dict) -> None:
    """The metrics.json keys the guard and the judge add, with their types."""
    for key in (
        "judge_available_rate_before",
        "judge_available_rate_after",
        "diversity_before",
        "diversity_after",
    ):
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0, key
    assert isinstance(metrics["drift_after"], float) and metrics["drift_after"] >= 0.0
    guard = metrics["guard"]
    assert guard["mode"] in ("stop", "warn") and isinstance(guard["stopped"], bool)
    assert isinstance(guard["kept_step"], int) and guard["kept_by"] == "judge"
    assert guard["stop_step"] is None or isinstance(guard["stop_step"], int)
    assert guard["reason"] is None or isinstance(guard["reason"], str)
    assert guard["diversity_basis"] == "seeds"
    assert metrics["judge"]["threshold"] == 0.5 and len(metrics["judge"]["fingerprint"]) == 16


def test_an_aggressive_run_is_stopped_and_exports_the_best_step_by_the_judge(
    ray_cluster, tmp_path, aggressive
):
    out = tmp_path / "stopped"
    assert main(config(out, aggressive, steps=6)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    check_contract(metrics)
    guard = metrics["guard"]
    assert guard["mode"] == "stop" and guard["stopped"] and metrics["stopped_early"]
    assert guard["stop_step"] == 2 and metrics["steps_completed"] == 2  # of 6
    assert "judge" in guard["reason"] and guard["reward_judge_gap_after"] == 0.0
    assert metrics["evals"][-1]["reward_judge_gap"] > 0.05
    assert metrics["evals"][-1]["available_rate"] > metrics["available_rate_before"]
    # The judge never moved: every evaluation ties and the earliest, step 0 (the teacher), is kept.
    assert guard["kept_step"] == 0 and metrics["eval_step_after"] == 0
    assert metrics["drift_after"] == 0.0 and metrics["evals"][-1]["drift"] > 0.0
    original = build_random_components("tiny")["controlnet"].state_dict()
    assert same(exported(out), original)
    assert not same(exported(out), checkpoint_weights(out, 2))


def test_warn_mode_logs_the_gap_and_trains_to_the_end(ray_cluster, tmp_path, aggressive):
    out = tmp_path / "warned"
    assert main(config(out, aggressive, steps=4, **{"guards.action": "warn"})) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    check_contract(metrics)
    guard = metrics["guard"]
    assert guard["mode"] == "warn" and not guard["stopped"] and guard["stop_step"] is None
    assert metrics["steps_completed"] == 4 and guard["kept_step"] == 4
    assert any("judge" in w for w in metrics["guards"]["warnings"])
    assert same(exported(out), checkpoint_weights(out, 4))
    assert math.isfinite(metrics["drift_after"]) and metrics["drift_after"] > 0.0
