"""Sampling completions from a trained agent and summarising them.

Holds :func:`sample_completions` (one seeded completion per episode, with its
info) and :func:`evaluate_completions`: mean score and distinct-token ratio of one
completion per prompt, the numbers that show learning and collapse.
"""

from __future__ import annotations

import os
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch

from llm_gym.agents.policy import CausalLMPolicy
from llm_gym.agents.vec_env import GymnasiumVecEnv
from llm_gym.envs.protocol import COMPLETION_IDS, SCORE

__all__ = ["evaluate_completions", "sample_completions"]


def sample_completions(
    model: Any = None,
    n_episodes: int = 64,
    seed: int = 0,
    deterministic: bool = False,
    **env_kwargs: Any,
) -> list[dict[str, Any]]:
    """The last-step info of one sampled completion on each of ``n_episodes`` seeded episodes.

    The one way llm-gym samples completions: episodes of ``LLMCompletion-v0`` (its
    horizon, EOS and ``min_new_tokens`` rules), written side by side by ``model``.
    Episode i is seeded with ``seed + i``, so two models can be compared on the same
    prompts, and sampling draws from a torch generator seeded with ``seed`` without
    touching the global one, so the same call gives the same completions. Each info
    holds ``prompt_ids``, ``completion_ids``, ``score`` and ``text``.

    Args:
        model: an SB3 algorithm or policy (anything with ``predict(obs, deterministic=...)``),
            or a causal LM to sample at temperature 1: a hub id or folder, ``None`` for
            the embedded LM.
        n_episodes: completions to write (one vector env of that many episodes).
        seed: seeds the prompts and the sampling.
        deterministic: greedy decoding instead of sampling.
        **env_kwargs: options of ``LLMCompletion-v0``.

    Example:
        >>> infos = sample_completions(None, n_episodes=3, max_new_tokens=4)
        >>> [len(info["completion_ids"]) for info in infos]
        [4, 4, 4]
        >>> again = sample_completions(None, n_episodes=3, max_new_tokens=4)
        >>> [i["completion_ids"] for i in infos] == [i["completion_ids"] for i in again]
        True
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    venv = GymnasiumVecEnv(gym.make_vec("LLMCompletion-v0", num_envs=n_episodes, **env_kwargs))
    if model is None or isinstance(model, (str, os.PathLike)):
        model = _lm_policy(venv, None if model is None else str(model))
    expected = getattr(model, "observation_space", venv.observation_space)
    if expected != venv.observation_space:
        raise ValueError(
            f"the evaluation env gives observations {venv.observation_space} but the model expects "
            f"{expected}; pass the model's max_prompt_tokens / max_new_tokens as env_kwargs"
        )
    venv.seed(seed)
    finished: list[dict[str, Any] | None] = [None] * n_episodes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        obs = venv.reset()
        while any(info is None for info in finished):
            actions, _ = model.predict(obs, deterministic=deterministic)
            obs, _, dones, infos = venv.step(actions)
            for i in np.flatnonzero(dones):
                if finished[i] is None:
                    finished[i] = infos[i]
    venv.close()
    return finished  # type: ignore[return-value]


def _lm_policy(venv: GymnasiumVecEnv, model: str | None) -> CausalLMPolicy:
    """An untrained CausalLMPolicy over ``model`` for the spaces of ``venv``."""
    task = cast(Any, venv.env.unwrapped).task  # LLMCompletion-v0's vector env holds its task
    n_tokens = len(task.tokenizer) if task.vocab_size > len(task.tokenizer) else None
    return CausalLMPolicy(
        venv.observation_space,
        venv.action_space,
        lambda _: 0.0,
        model=model,
        n_tokens=n_tokens,
    ).eval()


def evaluate_completions(
    model: Any, n_episodes: int = 64, seed: int = 0, deterministic: bool = False, **env_kwargs: Any
) -> dict[str, float]:
    """Sample one completion on each of ``n_episodes`` seeded LLMCompletion-v0 episodes.

    Args:
        model: an SB3 algorithm (or anything with ``predict(obs, deterministic=...)``).
        n_episodes: number of completions, written side by side.
        seed: seeds the prompts (episode i uses ``seed + i``), so two models can be
            compared on the same prompts.
        deterministic: greedy decoding instead of sampling.
        **env_kwargs: options of ``LLMCompletion-v0`` (``max_new_tokens``, ``reward_model``...).

    Returns:
        ``score`` (mean RM score), ``distinct`` (mean distinct-token ratio per
        completion: 1.0 no repeats, near 0 one repeated token), ``length``.

    Example:
        >>> import gymnasium as gym
        >>> from llm_gym.agents import TokenPPO
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = TokenPPO("CausalLMPolicy", env, n_envs=2, n_steps=4)
        >>> sorted(evaluate_completions(model, n_episodes=4, max_new_tokens=4))
        ['distinct', 'length', 'score']
    """
    finished = sample_completions(model, n_episodes, seed, deterministic, **env_kwargs)
    completions = [info[COMPLETION_IDS] for info in finished]
    return {
        "score": float(np.mean([info[SCORE] for info in finished])),
        "distinct": float(np.mean([len(set(c)) / len(c) for c in completions])),
        "length": float(np.mean([len(c) for c in completions])),
    }
