"""RFFT's loss terms as pure functions."""

from __future__ import annotations

import math

import pytest
import torch

from rfft.losses import consistent_condition_loss, feedback_loss, kl_regularizer, total_loss


def test_feedback_loss_is_minus_mean_log_p_available():
    assert float(feedback_loss(torch.ones(3))) == 0.0
    assert float(feedback_loss(torch.tensor([0.5, 0.25]))) == pytest.approx((math.log(2) + math.log(4)) / 2)


def test_feedback_loss_falls_as_p_available_rises():
    p = torch.tensor([0.2, 0.4], requires_grad=True)
    feedback_loss(p).backward()
    assert torch.all(p.grad < 0)


def test_feedback_loss_is_finite_for_a_zero_probability():
    assert math.isfinite(float(feedback_loss(torch.tensor([0.0, 1.0]))))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        feedback_loss(torch.ones(2, 6))


def test_consistent_condition_is_zero_for_equal_models_and_grows_with_the_gap():
    d = torch.randn(2, 4, 8, 8)
    assert float(consistent_condition_loss(d, d.clone())) == 0.0
    assert float(consistent_condition_loss(d + 1.0, d)) == pytest.approx(1.0)
    assert float(consistent_condition_loss(d + 2.0, d)) == pytest.approx(4.0)


def test_consistent_condition_gradient_reaches_the_student_only():
    student = torch.randn(1, 4, 4, 4, requires_grad=True)
    teacher = torch.randn(1, 4, 4, 4, requires_grad=True)
    consistent_condition_loss(student, teacher).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    assert teacher.grad is None
    with pytest.raises(ValueError, match="same shape"):
        consistent_condition_loss(torch.zeros(1, 4, 4, 4), torch.zeros(2, 4, 4, 4))


def test_kl_regularizer_is_a_mean_squared_distance():
    a = torch.zeros(1, 4, 2, 2)
    assert float(kl_regularizer(a, a)) == 0.0
    assert float(kl_regularizer(a + 3.0, a)) == pytest.approx(9.0)


def test_total_loss_weights_and_skips_terms():
    f_ac, l_cc, kl = torch.tensor(2.0), torch.tensor(0.5), torch.tensor(4.0)
    assert float(total_loss(f_ac, None, beta=0.0)) == 2.0
    assert float(total_loss(f_ac, l_cc, beta=10.0)) == 7.0
    assert float(total_loss(f_ac, l_cc, beta=1.0, kl=kl, kl_weight=0.25)) == 3.5
    with pytest.raises(ValueError, match="l_cc"):
        total_loss(f_ac, None, beta=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        total_loss(f_ac, l_cc, beta=-1.0)
