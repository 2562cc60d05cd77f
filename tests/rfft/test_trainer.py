"""The RFFT training step on tiny real components, in-process (no Ray): what changes, L_CC, F_AC,
gradient accumulation, evaluation and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch

from pipelines.config import load_config
from rfft.config import RFFTConfig
from rfft.worker import RFFTWorker

SMALL = {"data.num_procedural": 6, "data.num_eval_products": 2, "eval.batch_size": 2}


def make_worker(**overrides) -> RFFTWorker:
    return RFFTWorker(load_config(RFFTConfig, preset="tiny", overrides=SMALL | overrides))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A worker trained for two steps, with snapshots taken along the way and a step-1 checkpoint."""
    worker = make_worker()
    frozen = {
        "unet": worker.sampler.unet,
        "vae": worker.sampler.vae,
        "text_encoder": worker.sampler.text_encoder,
        "teacher": worker.teacher,
        "rfnet": worker.reward.scorer.model,
    }
    before = {name: snapshot(m) for name, m in frozen.items()}
    student_0 = snapshot(worker.student)
    first = worker.train_step()
    student_1 = snapshot(worker.student)
    checkpoint = tmp_path_factory.mktemp("rfft-checkpoint")
    worker.save(checkpoint)
    second = worker.train_step()
    return {
        "worker": worker,
        "frozen": frozen,
        "before": before,
        "student": (student_0, student_1, snapshot(worker.student)),
        "records": (first, second),
        "checkpoint": checkpoint,
    }


def test_a_step_updates_the_controlnet_only(trained):
    worker = trained["worker"]
    student_0, student_1, _ = trained["student"]
    moved = changed(student_0, worker.student) and [
        k for k in student_0 if not torch.equal(student_0[k], student_1[k])
    ]
    assert len(moved) > 0.9 * len(student_0)  # (nearly) every ControlNet tensor moved
    for name, module in trained["frozen"].items():
        assert changed(trained["before"][name], module) == [], f"{name} must stay frozen"
        assert not any(p.requires_grad for p in module.parameters()), f"{name} must not take gradient"


def test_l_cc_is_exactly_zero_before_the_first_update_and_positive_after(trained):
    first, second = trained["records"]
    assert first["l_cc"] == 0.0
    assert second["l_cc"] > 0.0
    assert first["grad_norm"] > 0.0 and first["f_ac"] > 0.0


def test_resume_from_a_checkpoint_continues_identically(trained):
    resumed = make_worker()
    resumed.restore(trained["checkpoint"])
    assert resumed.step == 1 and resumed.history == [trained["records"][0]]
    record = resumed.train_step()
    expected = trained["records"][1]
    assert record["step"] == 2
    assert record["f_ac"] == pytest.approx(expected["f_ac"], abs=1e-6)
    for key, value in trained["student"][2].items():
        torch.testing.assert_close(resumed.student.state_dict()[key], value, atol=1e-7, rtol=0)


def test_resume_with_another_config_is_refused(trained):
    other = make_worker(**{"loss.beta": 0.5})
    with pytest.raises(ValueError, match="config hash"):
        other.restore(trained["checkpoint"])


def test_f_ac_falls_on_a_fixed_batch():
    worker = make_worker(**{"optim.lr": 3e-3})
    batch = worker.batch_for(step=1, micro=0)
    losses = [worker.step_on_batches([batch], graded_step=6, lr=3e-3)["f_ac"] for _ in range(6)]
    assert min(losses[-3:]) < losses[0] - 0.05, losses


def test_gradient_accumulation_matches_one_larger_batch():
    whole, split = make_worker(), make_worker()
    batch = whole.batch_for(step=1, micro=0)
    halves = []
    for k in range(2):
        half = split.batch_for(step=1, micro=0)
        for field in ("sku_ids", "prompt", "negative_prompt", "caption", "seeds"):
            setattr(half, field, getattr(half, field)[k : k + 1])
        for field in ("image", "mask_image", "control_image", "product", "product_mask"):
            setattr(half, field, getattr(half, field)[k : k + 1])
        halves.append(half)
    a = whole.step_on_batches([batch], graded_step=5, lr=1e-3)
    b = split.step_on_batches(halves, graded_step=5, lr=1e-3)
    assert a["f_ac"] == pytest.approx(b["f_ac"], rel=1e-5)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # After one AdamW step exp_avg = (1 - beta1) * (clipped) gradient: compare the gradients
    # themselves (the weights' first Adam step is ~lr * sign(g), which amplifies rounding in near-zero g).
    for (name, p_whole), p_split in zip(
        whole.student.named_parameters(), split.student.parameters(), strict=True
    ):
        g_whole = whole.optimizer.state[p_whole]["exp_avg"]
        g_split = split.optimizer.state[p_split]["exp_avg"]
        torch.testing.assert_close(
            g_split, g_whole, rtol=1e-3, atol=1e-4 * float(g_whole.abs().max()), msg=name
        )


def test_evaluation_reports_rfnet_verdicts_and_guards(trained):
    metrics = trained["worker"].evaluate()
    assert metrics["images"] == 2 and metrics["step"] == 2
    assert 0.0 < metrics["p_available"] < 1.0
    assert metrics["product_pixels_changed"] == 0.0
    assert metrics["background_diversity"] > 0.0 and metrics["background_detail"] > 0.0
    assert metrics["l_cc_recent"] > 0.0
