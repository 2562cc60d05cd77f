"""The differentiable sampler: upstream equivalence with gradients off, and where gradient flows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetInpaintPipeline
from PIL import Image

from pipelines.models import build_random_components
from rfft.sampler import RFFTSampler, paste_product

R = 128  # the tiny canvas


@pytest.fixture(scope="module")
def components():
    return build_random_components("tiny")


def _inputs(batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, R, R, 3), dtype=np.uint8)
    masks = ((rng.random((batch, R, R)) > 0.4) * 255).astype(np.uint8)
    controls = ((rng.random((batch, R, R, 1)) > 0.9) * 255).repeat(3, axis=-1).astype(np.uint8)
    return images, masks, controls


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 3:
        array = array[..., None]
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0


def test_matches_upstream_pipeline_when_grading_is_off(components):
    images, masks, controls = _inputs()
    prompts = ["a red bottle on a marble table", "a shoe in a garden, sunlight"]
    negative = ["blurry, lowres", "watermark"]
    kwargs = dict(num_inference_steps=6, guidance_scale=7.5)
    pipe = StableDiffusionControlNetInpaintPipeline(
        safety_checker=None, feature_extractor=None, requires_safety_checker=False, **components
    )
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt=prompts,
        negative_prompt=negative,
        image=[Image.fromarray(a) for a in images],
        mask_image=[Image.fromarray(a) for a in masks],
        control_image=[Image.fromarray(a) for a in controls],
        height=R,
        width=R,
        controlnet_conditioning_scale=1.0,
        generator=[torch.Generator().manual_seed(s) for s in (11, 12)],
        output_type="pt",
        **kwargs,
    ).images
    sampler = RFFTSampler(**components)
    with torch.no_grad():
        out = sampler(
            prompts,
            _tensor(images),
            _tensor(masks),
            _tensor(controls),
            negative_prompt=negative,
            generator=[torch.Generator().manual_seed(s) for s in (11, 12)],
            **kwargs,
        )
    assert expected.std() > 0.05  # a real image, not a constant
    # Same arithmetic as upstream; only float rounding of differently laid-out inputs differs (~1e-6).
    torch.testing.assert_close(out.image, expected, atol=1e-5, rtol=0)


def test_each_image_depends_only_on_its_own_generator(components):
    images, masks, controls = _inputs(batch=2)
    sampler = RFFTSampler(**components)
    common = dict(num_inference_steps=4, guidance_scale=3.0)
    with torch.no_grad():
        pair = sampler(
            ["a", "b"], _tensor(images), _tensor(masks), _tensor(controls),
            generator=[torch.Generator().manual_seed(s) for s in (5, 6)], **common,
        ).image  # fmt: skip
        second = sampler(
            ["b"], _tensor(images[1:]), _tensor(masks[1:]), _tensor(controls[1:]),
            generator=[torch.Generator().manual_seed(6)], **common,
        ).image  # fmt: skip
    torch.testing.assert_close(pair[1:], second, atol=1e-5, rtol=0)


def test_only_the_graded_step_runs_with_gradient(components):
    images, masks, controls = _inputs(batch=1)
    sampler = RFFTSampler(**components)
    grad_modes: list[bool] = []
    handle = components["controlnet"].register_forward_hook(
        lambda *_: grad_modes.append(torch.is_grad_enabled())
    )
    try:
        out = sampler(
            ["a bottle"],
            _tensor(images),
            _tensor(masks),
            _tensor(controls),
            num_inference_steps=8,
            guidance_scale=7.5,
            generator=[torch.Generator().manual_seed(0)],
            graded_step=5,
        )
    finally:
        handle.remove()
    # Steps 0-4 without gradient, step 5 with it, steps 6-7 never run.
    assert grad_modes == [False] * 5 + [True]
    assert out.timestep == int(sampler.scheduler.timesteps[5])
    assert out.image.requires_grad and not out.latents.requires_grad
    out.image.mean().backward()
    grads = [p.grad for p in components["controlnet"].parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    components["controlnet"].zero_grad(set_to_none=True)


def test_paste_back_passes_gradient_to_background_pixels_only():
    decoded = torch.rand(1, 3, 8, 8, requires_grad=True)
    product = torch.zeros(1, 4, 8, 8)
    product[:, :3] = 0.3
    product[:, 3, 2:6, 2:6] = 1.0  # opaque product
    product[:, 3, 1, 1] = 0.5  # a soft edge pixel
    out = paste_product(decoded, product)
    out.sum().backward()
    grad = decoded.grad[0, 0]
    assert torch.all(grad[2:6, 2:6] == 0)
    assert torch.equal(out[0, :, 2:6, 2:6], product[0, :3, 2:6, 2:6])
    assert grad[0, 0] == 1 and grad[1, 1] == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(graded_step=8), "graded_step"),
        (dict(guidance_scale=0.5), "guidance_scale"),
        (dict(negative_prompt=["only one"]), "negative_prompt"),
    ],
)
def test_bad_arguments_are_named(components, change, message):
    images, masks, controls = _inputs(batch=2)
    sampler = RFFTSampler(**components)
    kwargs = dict(num_inference_steps=8, guidance_scale=7.5) | change
    with pytest.raises(ValueError, match=message):
        sampler(["a", "b"], _tensor(images), _tensor(masks), _tensor(controls), **kwargs)


def test_rejects_non_ddim_schedulers(components):
    from pipelines.models import make_scheduler

    euler = make_scheduler("euler", components["scheduler"].config)
    with pytest.raises(ValueError, match="DDIMScheduler"):
        RFFTSampler(**(components | {"scheduler": euler}))
