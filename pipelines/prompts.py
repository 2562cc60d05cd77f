"""The prompt pool: a template and a colour per attempt, drawn from the attempt's seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipelines.config import PromptConfig


@dataclass(frozen=True)
class PromptChoice:
    prompt: str
    negative_prompt: str
    template_index: int
    color: str | None  # None when the template has no {color} placeholder


def render(prompts: PromptConfig, template_index: int, color: str | None) -> PromptChoice:
    t = prompts.templates[template_index]
    text = t.prompt.format(color=color) if "{color}" in t.prompt else t.prompt
    return PromptChoice(text, t.negative_prompt, template_index, color if "{color}" in t.prompt else None)


def choose_prompt(
    prompts: PromptConfig,
    seed: int,
    *,
    grounded_only: bool = False,
    avoid_template: int | None = None,
    avoid_color: str | None = None,
) -> PromptChoice:
    """Pick a template and colour as a pure function of ``seed`` and the constraints.

    ``grounded_only`` restricts to templates that give the product a surface; ``avoid_*`` exclude the
    previous attempt's choice (used by defect-steered retries). Constraints that would leave nothing
    to choose from are dropped, in that order of priority.
    """
    rng = random.Random(seed)
    indices = list(range(len(prompts.templates)))
    if grounded_only:
        grounded = [i for i in indices if prompts.templates[i].grounded]
        indices = grounded or indices
    if avoid_template is not None and len(indices) > 1:
        indices = [i for i in indices if i != avoid_template] or indices
    index = rng.choice(indices)
    colors = [c for c in prompts.colors if c != avoid_color] or list(prompts.colors)
    color = rng.choice(colors) if colors else None
    return render(prompts, index, color)
