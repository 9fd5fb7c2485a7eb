"""UniformCredit: the return R spread evenly, r_t = R / T."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.wrappers.credit import CreditWrapper

__all__ = ["UniformCredit"]


class UniformCredit(CreditWrapper, gym.utils.RecordConstructorArgs):
    """Every completion token gets R / T (the paper's "uniform" baseline).

    Needs nothing from the environment beyond its rewards (T is
    ``len(info["completion_ids"])`` when present, else the episode's steps).

    Args:
        env: a token environment.
        baseline: the part of R kept on the last token, only R - b being spread
            (:class:`~llm_gym.wrappers.ScoreBaseline`): ``None`` (the paper's
            form), a number, or ``"running_mean"`` of earlier scores.
        baseline_rate: rate of the running mean.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = UniformCredit(gym.make("LLMCompletion-v0"))
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, reward, done, _, info = env.step(env.action_space.sample())
        >>> len(set(info["token_rewards"])) == 1
        True
    """

    beta = 1.0

    def __init__(
        self, env: gym.Env, baseline: float | str | None = None, baseline_rate: float = 0.01
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, baseline=baseline, baseline_rate=baseline_rate
        )
        CreditWrapper.__init__(self, env, baseline, baseline_rate)

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        return np.full(n_tokens, 1.0 / n_tokens)
