"""`bench/gpu_rfft.py --smoke`: the GPU benchmark's code path on the CPU with tiny models."""

from __future__ import annotations

import json

import pytest

from bench.gpu_rfft import main


@pytest.mark.slow
def test_smoke_run_reports_every_field(tmp_path, capsys):
    out = tmp_path / "gpu_rfft.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["plan"]["preset"] == "tiny" and result["placement"]["device"] == "cpu"
    for key in ("reward_step", "rfft_step"):
        assert result[key]["mean_s"] > 0 and len(result[key]["times_s"]) == result["plan"]["repeats"]
    assert result["rfft_step"]["loss_finite"] is True
    assert set(result["ratios"]) == {"rfft_step_over_reward_step", "reward_step_over_anchor"}
    assert "RFFT step" in capsys.readouterr().out
