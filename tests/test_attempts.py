"""Attempt planning (seeds, steering) and the per-item decision, as pure functions."""

from __future__ import annotations

from pipelines.attempts import SHAPE_NEGATIVE, PreviousAttempt, attempt_seed, plan_attempt
from pipelines.catalog import CatalogItem
from pipelines.config import GenerateConfig, load_config
from pipelines.items import ItemState, decide, next_plan

CFG = load_config(GenerateConfig, preset="tiny")
ITEM = CatalogItem(row=1, sku_id="S1", image="/x/a.png", caption="a mug")


def prev(attempt, label, plan):
    return PreviousAttempt(attempt, label, plan.template, plan.color, plan.image_scale)


def test_seed_is_pure_function_of_run_seed_sku_attempt():
    assert attempt_seed(0, "S1", 1) == attempt_seed(0, "S1", 1)
    seeds = {attempt_seed(r, s, a) for r in (0, 1) for s in ("S1", "S2") for a in (1, 2, 3)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    assert plan_attempt(ITEM, 2, CFG).seed == attempt_seed(CFG.seed, "S1", 2)
    row_seed = CatalogItem(row=1, sku_id="S1", image="/x/a.png", seed=42)
    assert plan_attempt(row_seed, 1, CFG).seed == attempt_seed(42, "S1", 1)


def test_plans_are_reproducible_and_in_range():
    for attempt in (1, 2, 3):
        a, b = plan_attempt(ITEM, attempt, CFG), plan_attempt(ITEM, attempt, CFG)
        assert a == b
        lo, hi = CFG.prepare.image_scale_range
        assert lo <= a.image_scale <= hi
        assert "{color}" not in a.prompt


def test_size_mismatch_moves_the_scale_far_from_tried_ones():
    p1 = plan_attempt(ITEM, 1, CFG)
    p2 = plan_attempt(ITEM, 2, CFG, [prev(1, "size_mismatch", p1)])
    lo, hi = CFG.prepare.image_scale_range
    assert p2.steer == "image_scale"
    assert p2.image_scale in (lo, hi) and abs(p2.image_scale - p1.image_scale) >= (hi - lo) / 2 - 1e-6
    assert (p2.template, p2.color, p2.prompt) == (p1.template, p1.color, p1.prompt)  # scene kept
    p3 = plan_attempt(ITEM, 3, CFG, [prev(1, "size_mismatch", p1), prev(2, "size_mismatch", p2)])
    assert min(abs(p3.image_scale - p.image_scale) for p in (p1, p2)) > 0.02


def test_defect_specific_steering():
    p1 = plan_attempt(ITEM, 1, CFG)
    space = plan_attempt(ITEM, 2, CFG, [prev(1, "space_mismatch", p1)])
    assert CFG.prompts.templates[space.template].grounded and space.template != p1.template
    indis = plan_attempt(ITEM, 2, CFG, [prev(1, "indistinctiveness", p1)])
    assert indis.template != p1.template and indis.color != p1.color
    assert indis.image_scale == space.image_scale == p1.image_scale  # not implicated: kept
    assert space.color == p1.color
    shape = plan_attempt(ITEM, 2, CFG, [prev(1, "shape_hallucination", p1)])
    assert shape.negative_prompt.endswith(SHAPE_NEGATIVE) and shape.template != p1.template


def test_reseed_mode_ignores_verdicts():
    reseed = CFG.model_copy(update={"retry": CFG.retry.model_copy(update={"steering": "reseed"})})
    p1 = plan_attempt(ITEM, 1, reseed)
    steered = plan_attempt(ITEM, 2, reseed, [prev(1, "size_mismatch", p1)])
    assert steered == plan_attempt(ITEM, 2, reseed) and steered.steer == ""


def test_catalog_prompt_is_kept():
    item = CatalogItem(row=1, sku_id="S1", image="/x/a.png", prompt="on a beach", negative_prompt="ugly")
    p2 = plan_attempt(item, 2, CFG, [prev(1, "indistinctiveness", plan_attempt(item, 1, CFG))])
    assert (p2.prompt, p2.negative_prompt, p2.template) == ("on a beach", "ugly", -1)


# ---- decide ---------------------------------------------------------------------------------------


def state(*attempts):
    st = ItemState(ITEM)
    for i, (accepted, p, err) in enumerate(attempts, start=1):
        st.attempts[i] = {
            "attempt": i,
            "accepted": accepted,
            "p_available": p,
            "error": err,
            "label": "available" if accepted else "size_mismatch",
            "image": f"img{i}",
            "content_hash": "h",
        }
    return st


def test_decide_accepted_exhausted_pending_error():
    assert decide(state((False, 0.1, "")), CFG) is None  # pending: attempts left
    r = decide(state((False, 0.1, ""), (True, 0.8, "")), CFG)
    assert (r["status"], r["attempts"], r["image"]) == ("accepted", 2, "img2")
    r = decide(state((False, 0.1, ""), (False, 0.3, ""), (False, 0.2, "")), CFG)
    assert (r["status"], r["image"], r["label"]) == ("exhausted", "img2", "size_mismatch")  # the best attempt
    r = decide(
        state((False, None, "generation failed: boom"), (False, 0.2, ""), (False, None, "write failed: x")),
        CFG,
    )
    assert (r["status"], r["image"]) == ("exhausted", "img2")
    r = decide(state(*[(False, None, "generation failed: boom")] * 3), CFG)
    assert r["status"] == "error" and "all 3 attempts failed" in r["error"]
    r = decide(state((False, None, "invalid input: image not found: /x/a.png")), CFG)
    assert (r["status"], r["error"]) == ("error", "image not found: /x/a.png")  # permanent: no retry


def test_decide_without_inspection():
    no_inspect = load_config(GenerateConfig, preset="tiny", overrides={"inspect.enabled": False})
    r = decide(state((False, None, "")), no_inspect)
    assert (r["status"], r["attempts"]) == ("generated", 1)


# ---- the next attempt --------------------------------------------------------------------------------


def test_next_plan_continues_the_history_with_the_planned_seed():
    st = ItemState(ITEM)
    assert next_plan(st, CFG) == plan_attempt(ITEM, 1, CFG)
    p1 = plan_attempt(ITEM, 1, CFG)
    st.attempts[1] = {
        "attempt": 1,
        "error": "",
        "accepted": False,
        "label": "size_mismatch",
        "template": p1.template,
        "color": p1.color,
        "image_scale": p1.image_scale,
    }
    p2 = next_plan(st, CFG)
    assert p2 == plan_attempt(ITEM, 2, CFG, [prev(1, "size_mismatch", p1)])
    assert p2.attempt == 2 and p2.steer == "image_scale" and p2.seed == attempt_seed(CFG.seed, "S1", 2)
    # a failed attempt carries no verdict: the retry is a plain reseed
    st.attempts[1] = {**st.attempts[1], "error": "generation failed: x"}
    assert next_plan(st, CFG).steer == ""
