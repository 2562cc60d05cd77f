"""The toy world's reward and judge, the claims benchmark's measures, and the RFFT ``toy`` preset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.toy_claims import against_truth, agreement, kappa
from pipelines.config import GenerateConfig, load_config
from rfft.config import RFFTConfig
from rfft.worker import weights_fingerprint
from rfnet.checkpoint import builtin_names, load_model
from rfnet.config import RFNetConfig
from rfnet.data.scenes import render_sample
from rfnet.scorer import RFNetScorer

HELD_OUT_SEED = 4242  # neither inspector was trained on scenes of this seed


def test_kappa_is_one_for_identical_zero_for_independent_and_negative_for_opposite():
    a = np.array([True, False] * 50)
    assert kappa(a, a) == pytest.approx(1.0)
    assert kappa(a, ~a) == pytest.approx(-1.0)
    b = np.array([True, True, False, False] * 25)
    assert kappa(a, b) == pytest.approx(0.0)


def test_agreement_and_truth_measures_count_the_right_things():
    p = np.full((4, 6), 0.02)
    p[:, 0] = [0.9, 0.1, 0.8, 0.2]
    p[1, 3], p[3, 5] = 0.8, 0.7
    q = p.copy()
    q[2, 0] = 0.3  # the second scorer rejects image 2
    q[2, 4] = 0.6
    a = agreement(p, q, 0.5, 0.5)
    assert a["available_agreement"] == 0.75
    assert a["reward_available_rate"] == 0.5 and a["judge_available_rate"] == 0.25
    assert a["class_agreement"] == 0.75
    t = against_truth(p, np.array([0, 3, 1, 5]), 0.5)
    assert t["available_accuracy"] == 0.75 and t["available_precision"] == 0.5


def test_reward_and_judge_ship_and_are_different_networks():
    assert {"toy_reward", "toy_judge"} <= set(builtin_names())
    reward, judge = (
        RFNetScorer("builtin:toy_reward", device="cpu"),
        RFNetScorer("builtin:toy_judge", device="cpu"),
    )
    assert weights_fingerprint(reward.model) != weights_fingerprint(judge.model)
    # Both are exactly the toy architecture, trained on different painted scenes and seeds.
    metas = []
    for name in ("toy_reward", "toy_judge"):
        _, config, meta = load_model(f"builtin:{name}")
        assert config == load_config(RFNetConfig, preset="toy")
        metas.append(meta["pretrain"])
    assert metas[0]["data"]["generator"] == metas[1]["data"]["generator"] == "toy"
    assert metas[0]["data"]["seed"] != metas[1]["data"]["seed"]
    assert metas[0]["command"] != metas[1]["command"]
    assert load_config(GenerateConfig, preset="toy").inspect.rfnet == "builtin:toy_reward"


@pytest.mark.parametrize("name", ["toy_reward", "toy_judge"])
def test_toy_inspectors_recognise_held_out_painted_defects(name):
    painted = [
        render_sample("toy", label, i, image_size=96, seed=HELD_OUT_SEED)
        for label in range(6)
        for i in range(8)
    ]
    scorer = RFNetScorer(f"builtin:{name}", device="cpu")
    probs = scorer.score_numpy(
        np.stack([p.image for p in painted]), [p.product for p in painted], [p.caption for p in painted]
    )
    labels = np.array([p.label for p in painted])
    truth = against_truth(probs, labels, scorer.threshold)
    assert truth["macro_f1"] >= 0.6, truth  # chance is 1/6
    assert truth["available_accuracy"] >= 0.75, truth


def test_rfft_toy_preset_samples_as_generation_does():
    rfft = load_config(RFFTConfig, preset="toy")
    gen = load_config(GenerateConfig, preset="toy")
    assert rfft.models.base == gen.models.base == "toy"
    assert rfft.prepare == gen.prepare
    assert rfft.prompts == gen.prompts
    assert rfft.sampling.num_inference_steps == gen.generation.num_inference_steps
    assert rfft.sampling.guidance_scale == gen.generation.guidance_scale
    assert rfft.rfnet == gen.inspect.rfnet and rfft.judge not in (None, rfft.rfnet)
    assert rfft.guards.action == "stop"


def test_claims_bench_measures_recurrent_generation_and_steering(tmp_path):
    from bench.toy_claims import main

    out = tmp_path / "claims.json"
    import sys

    argv = sys.argv
    sys.argv = [
        "bench.toy_claims",
        "--parts",
        "inspectors,recurrent",
        "--items",
        "6",
        "--painted-per-class",
        "2",
        "--sheet",
        str(tmp_path / "sheet.png"),
        "--rfft-out",
        str(tmp_path / "rfft"),
        "--out",
        str(out),
    ]
    try:
        main()
    finally:
        sys.argv = argv
    result = json.loads(out.read_text())
    assert result["inspectors"]["painted"]["reward"]["macro_f1"] >= 0
    assert result["inspectors"]["generated_first_attempts_teacher"]["images"] == 6
    assert set(result["recurrent"]) == {"teacher"}  # no RFFT run under --rfft-out
    after = result["recurrent"]["teacher"]["after_attempt"]
    rates = [r["accepted_rate"] for r in after]
    assert len(rates) == 4 and rates == sorted(rates)  # an accepted item stays delivered
    for r in after:
        assert r["judge_available_rate"] <= r["accepted_rate"]
    assert set(result["steering"]["teacher"]) == {"reseed", "defect"}
    first = [result["steering"]["teacher"][m]["after_attempt"][0] for m in ("reseed", "defect")]
    assert first[0] == first[1]  # both modes share the first attempts
    assert (tmp_path / "sheet_teacher.png").stat().st_size > 0
