"""What the world build is asked to make: its budget and the bar it must reach.

Holds :class:`BuildConfig`, :data:`FIDELITY_BAR`, :data:`BUILDABLE_TASKS` and
:func:`quick_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llm_gym.assets.rules import RULES

__all__ = ["BUILDABLE_TASKS", "FIDELITY_BAR", "BuildConfig", "quick_config"]

#: the tasks ``--task`` builds alone: each rule task's RM, and the long task's LM and RM
BUILDABLE_TASKS = (*sorted(RULES), "long")

#: the default RM's last layer must reach these (mass ratio, top-1 hit rate, Spearman)
FIDELITY_BAR = {"mass_ratio": 3.0, "top_hit_rate": 0.5, "spearman": 0.3}


@dataclass
class BuildConfig:
    """Every size, step count and seed of the build (the defaults make the shipped world)."""

    seed: int = 0
    n_reviews: int = 30_000
    held_out: int = 1_500
    context: int = 128  # positions of every model: prompt + completion up to 128 tokens
    lm_layers: int = 3
    lm_width: int = 128
    lm_steps: int = 1_500
    lm_batch: int = 24
    lm_lr: float = 3e-3
    rm_width: int = 128
    rm_heads: int = 8
    rm_steps: int = 5_000
    deep_rm_steps: int = 3_000
    rm_lr: float = 1e-3
    rm_batch: int = 32
    n_prompts: int = 500
    eval_completions: int = 512
    eval_new_tokens: int = 32
    threads: int = 1
    # the long task's models (llm-gym build-assets --task long)
    long_context: int = 256  # positions of its LM and RM (prompt + 140-160 new tokens fit)
    long_window: int = 176  # their training windows: up to 168 tokens is all the task shows
    long_lm_steps: int = 400  # fine-tuning of the embedded LM on long_window-token windows
    long_lm_lr: float = 1e-3
    long_rm_steps: int = 1_500  # the long RM, trained from lm_long's weights
    long_rm_lr: float = 3e-4  # rm_lr (1e-3) makes the LM-initialised RM collapse and recover


def quick_config(seed: int = 0) -> BuildConfig:
    """A tiny budget (``--quick``), for testing the build itself.

    >>> quick_config().lm_steps
    20
    """
    return replace(
        BuildConfig(seed=seed),
        n_reviews=400,
        held_out=100,
        lm_steps=20,
        long_lm_steps=20,
        long_rm_steps=20,
        rm_steps=20,
        deep_rm_steps=20,
        eval_completions=32,
        n_prompts=50,
    )
