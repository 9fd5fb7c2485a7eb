"""SparseReward: the RLHF baseline, the whole return R on the last token."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.wrappers.credit import CreditWrapper

__all__ = ["SparseReward"]


class SparseReward(CreditWrapper, gym.utils.RecordConstructorArgs):
    """Token rewards are 0 for every token and the episode return R on the last.

    Needs nothing from the environment beyond its rewards.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = SparseReward(gym.make("LLMCompletion-v0"))
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, reward, done, _, info = env.step(env.action_space.sample())
        >>> info["token_rewards"][-1] == reward and sum(info["token_rewards"]) == reward
        True
    """

    beta = 0.0

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        CreditWrapper.__init__(self, env)

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        return np.zeros(n_tokens)
