"""Measuring what the build made: LM perplexity, the LM's own completions, each RM's fidelity.

Holds :func:`perplexity`, :func:`pearson`, :func:`held_out_windows`,
:func:`sample_eval_completions` (the
LM's completions, from the one sampler :func:`llm_gym.agents.sample_completions`)
and :func:`measure_reward_model` (Pearson with VADER, and per layer the credit
fidelity of the reference ABC read-out
:func:`~llm_gym.rewards.attention.reference_attention`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from llm_gym.assets.build.config import BuildConfig
from llm_gym.assets.build.corpus import windows
from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel
from llm_gym.rewards.attention import reference_attention
from llm_gym.rewards.fidelity import fidelity_metrics
from llm_gym.rewards.loading import load_tokenizer

__all__ = [
    "held_out_windows",
    "measure_reward_model",
    "pearson",
    "perplexity",
    "sample_eval_completions",
]


def pearson(a: Any, b: Any) -> float:
    """Pearson correlation of two sequences of numbers.

    >>> pearson([1, 2, 3], [2, 4, 7])
    0.9933992677987828
    """
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


@torch.no_grad()
def perplexity(lm: Any, stream: np.ndarray, starts: np.ndarray, cfg: BuildConfig) -> float:
    """The LM's perplexity on 64 full-context windows of a (held-out) stream."""
    rng = np.random.default_rng(cfg.seed + 99)
    ids = torch.from_numpy(windows(stream, starts, rng, 64, cfg.context))
    return float(torch.exp(lm(input_ids=ids, labels=ids).loss))


def sample_eval_completions(
    cfg: BuildConfig,
    lm_dir: Path,
    tokenizer_dir: Path,
    prompts: list[str],
    max_prompt_tokens: int,
    new_tokens: int | tuple[int, int] | None = None,
    min_new_tokens: int = 0,
) -> CompletionBatch:
    """``cfg.eval_completions`` seeded completions of the LM at temperature 1, as the env makes
    them (a completion ends at EOS, once it has ``min_new_tokens``, or after ``new_tokens``
    tokens, an int or a (min, max) range drawn per episode; default ``cfg.eval_new_tokens``)."""
    from llm_gym.agents import sample_completions

    infos = sample_completions(
        str(lm_dir),
        n_episodes=cfg.eval_completions,
        seed=cfg.seed,
        tokenizer=str(tokenizer_dir),
        prompts=prompts,
        task=None,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=new_tokens or cfg.eval_new_tokens,
        min_new_tokens=min_new_tokens,
        reward_model=lambda text: 0.0,  # the build scores the completions itself
        device="cpu",
    )
    return CompletionBatch(
        [np.asarray(info["prompt_ids"], dtype=np.int64) for info in infos],
        [np.asarray(info["completion_ids"], dtype=np.int64) for info in infos],
        load_tokenizer(str(tokenizer_dir)),
    )


def held_out_windows(
    stream: np.ndarray, starts: np.ndarray, cfg: BuildConfig, lengths: tuple[int, int] = (6, 40)
) -> list[np.ndarray]:
    """1000 held-out windows of ``lengths`` tokens (inclusive), on which each RM's scores meet
    its target's (the long task's RM: windows as long as its texts)."""
    rng = np.random.default_rng(cfg.seed + 123)
    low, high = lengths
    return [
        windows(stream, starts, rng, 1, int(rng.integers(low, high + 1)))[0] for _ in range(1000)
    ]


def measure_reward_model(
    rm_dir: Path,
    held_out: list[np.ndarray],
    held_out_vader: np.ndarray,
    samples: CompletionBatch,
    samples_vader: np.ndarray,
    relevance: list[np.ndarray],
    target: str = "vader",
) -> dict[str, Any]:
    """The saved RM's report: size, Pearson with its target, and the fidelity of each credit map.

    ``held_out_vader`` and ``samples_vader`` are the target's scores (VADER's for the
    sentiment models, a task's rule for the others); ``target`` names it in the keys.

    Pearson is measured on the ``held_out`` windows and on the LM's completions
    ``samples``. The credit maps are each layer's scoring-row head-mean attention
    (the reference read-out, one layer at a time), the mean of those, and uniform
    credit, measured against ``relevance`` on ``samples``.
    """
    rm = HFRewardModel(str(rm_dir), device="cpu")
    held = CompletionBatch([h[:1] for h in held_out], [h[1:] for h in held_out], samples.tokenizer)
    n_layers = rm.model.config.num_hidden_layers
    per_layer = [
        reference_attention(rm, samples, AttentionRequest((layer,))) for layer in range(n_layers)
    ]
    scores = per_layer[0].scores
    # every read-out was asked for attention, so each output holds it
    attention = [cast(list[np.ndarray], out.attention) for out in per_layer]
    fidelity = {
        f"layer_{layer}": fidelity_metrics(rows, relevance).as_dict()
        for layer, rows in enumerate(attention)
    }
    mean_of_layers = [np.mean([rows[i] for rows in attention], axis=0) for i in range(len(samples))]
    fidelity["mean_of_layers"] = fidelity_metrics(mean_of_layers, relevance).as_dict()
    fidelity["uniform"] = fidelity_metrics(
        [np.full(len(c), 1 / len(c)) for c in samples.completion_ids], relevance
    ).as_dict()
    return {
        "layers": n_layers,
        "width": rm.model.config.n_embd,
        "params": rm.model.num_parameters(),
        f"held_out_pearson_{target}": pearson(rm(held).scores, held_out_vader),
        f"policy_samples_pearson_{target}": pearson(scores, samples_vader),
        "policy_samples_mean_score": float(np.mean(scores)),
        "policy_samples_score_std": float(np.std(scores)),
        "fidelity": fidelity,
    }
