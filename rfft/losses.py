"""RFFT losses as pure functions (Du et al. 2024, section 4; DESIGN.md 1.4).

- :func:`feedback_loss` F_AC = -mean log p(Available), the RFNet reward turned into a loss.
- :func:`consistent_condition_loss` L_CC: keeps the fine-tuned model's guidance direction
  ``eps(x_t, prompt, control) - eps(x_t, empty, control)`` equal to the original model's.
- :func:`kl_regularizer` (ablation, off by default): squared distance between the fine-tuned and the
  original model's guided noise predictions. For two Gaussian reverse steps with the same variance the
  KL divergence is proportional to the squared distance of their means, i.e. of their eps predictions
  (the KL term of DPOK, Fan et al. 2023), so this is a KL-style penalty on the sampling policy.
- :func:`total_loss` F_AC + beta * L_CC (+ kl_weight * KL).

Norms: "||.||^2" is taken as the mean over every element (batch, channels, latent pixels), so the
scale of beta does not depend on the resolution or the batch size. The paper does not say which
normalisation it uses; with a sum the same beta would be h*w*4 times stronger.
"""

from __future__ import annotations

import torch

# p(Available) is clamped here before the log: a confidently wrong RFNet (p ~ 0) then contributes a
# large but finite loss, and no NaN reaches the optimiser.
MIN_PROBABILITY = 1e-6


def feedback_loss(p_available: torch.Tensor, *, min_probability: float = MIN_PROBABILITY) -> torch.Tensor:
    """F_AC = -mean_i log p_i(Available).

    ``p_available``: ``(B,)`` probabilities in [0, 1] (column 0 of the RFNet scorer's output),
    differentiable w.r.t. the generated image. Returns a scalar >= 0; 0 only if every p is 1.
    Values below ``min_probability`` are clamped (and get no gradient through the clamp).
    """
    if p_available.ndim != 1 or p_available.numel() == 0:
        raise ValueError(f"p_available must be a non-empty (B,) tensor, got shape {tuple(p_available.shape)}")
    return -torch.log(p_available.float().clamp(min=min_probability, max=1.0)).mean()


def consistent_condition_loss(
    student_direction: torch.Tensor,
    teacher_direction: torch.Tensor,
) -> torch.Tensor:
    """L_CC = mean( (d_student - d_teacher)^2 ), d = eps(x_t, prompt, ctrl) - eps(x_t, empty, ctrl).

    ``student_direction``: ``(B, 4, h, w)`` from the model being fine-tuned (carries gradient);
    ``teacher_direction``: the same from the frozen copy of the original UNet + ControlNet at the same
    x_t, t, prompts and control image (no gradient needed). Exactly 0 when the two models are equal.
    """
    _check_same_shape("student_direction", student_direction, "teacher_direction", teacher_direction)
    return (student_direction.float() - teacher_direction.float().detach()).pow(2).mean()


def kl_regularizer(student_noise: torch.Tensor, teacher_noise: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the guided noise predictions of the fine-tuned and original models.

    Both ``(B, 4, h, w)`` at the same x_t and t. Proportional to the KL divergence between the two DDIM
    reverse-step Gaussians (same variance), summed over latent elements, up to a t-dependent factor.
    """
    _check_same_shape("student_noise", student_noise, "teacher_noise", teacher_noise)
    return (student_noise.float() - teacher_noise.float().detach()).pow(2).mean()


def total_loss(
    f_ac: torch.Tensor,
    l_cc: torch.Tensor | None,
    *,
    beta: float,
    kl: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> torch.Tensor:
    """F_AC + beta * L_CC + kl_weight * KL (terms with a zero weight are left out of the graph)."""
    if beta < 0 or kl_weight < 0:
        raise ValueError(f"loss weights must be >= 0, got beta={beta}, kl_weight={kl_weight}")
    loss = f_ac
    if beta > 0:
        if l_cc is None:
            raise ValueError("beta > 0 needs the Consistent-Condition loss l_cc")
        loss = loss + beta * l_cc
    if kl_weight > 0:
        if kl is None:
            raise ValueError("kl_weight > 0 needs the KL term")
        loss = loss + kl_weight * kl
    return loss


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")
