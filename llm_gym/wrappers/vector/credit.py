"""Vector versions of the redistribution wrappers, for ``LLMCompletionVectorEnv`` and any
``VectorEnv`` with ``NEXT_STEP`` autoreset.

Holds :class:`VectorCreditWrapper`, :class:`SparseReward`, :class:`UniformCredit`
and :class:`AttentionCredit`. Each sub-environment's episode gets the same token
rewards as the single-environment wrapper gives it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from llm_gym.rewards import AttentionRequest
from llm_gym.wrappers.credit import ScoreBaseline, check_beta, redistribute

__all__ = ["AttentionCredit", "SparseReward", "UniformCredit", "VectorCreditWrapper"]


def _info_of(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-environment ``i``'s entries of a vector info dict."""
    return {
        key: value[i]
        for key, value in infos.items()
        if not key.startswith("_") and infos.get(f"_{key}", np.ones(i + 1, dtype=bool))[i]
    }


class VectorCreditWrapper(VectorWrapper):
    """Rewards pass through; ``infos["token_rewards"][i]`` holds env i's credit when it ends."""

    beta: float = 1.0

    def __init__(
        self, env: VectorEnv, baseline: float | str | None = None, baseline_rate: float = 0.01
    ) -> None:
        super().__init__(env)
        # one baseline for all sub-environments; episodes ending in the same step share it
        self.baseline = ScoreBaseline(baseline, baseline_rate)
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(
                f"{type(self).__name__} expects a vector env with NEXT_STEP autoreset, got {mode}"
            )
        self._returns = np.zeros(self.num_envs)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        raise NotImplementedError

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._returns[:] = 0.0
        self._steps[:] = 0
        self._ended[:] = False
        return self.env.reset(**kwargs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        # NEXT_STEP autoreset: an env that ended last call was only reset in this one
        self._returns[self._ended] = 0.0
        self._steps[self._ended] = 0
        stepped = ~self._ended
        self._returns[stepped] += np.asarray(rewards, dtype=np.float64)[stepped]
        self._steps[stepped] += 1
        done = np.asarray(terminated) | np.asarray(truncated)
        baseline = self.baseline.value
        for i in np.flatnonzero(done & stepped):
            info = _info_of(infos, i)
            n_tokens = len(info["completion_ids"]) if "completion_ids" in info else self._steps[i]
            weights = self.credit_weights(info, n_tokens) if self.beta > 0 else np.zeros(n_tokens)
            token_rewards = redistribute(weights, self._returns[i], self.beta, baseline)
            self.baseline.update(float(self._returns[i]))
            if "token_rewards" in infos:
                infos["token_rewards"][i] = token_rewards.tolist()
            else:
                infos = self._add_info(infos, {"token_rewards": token_rewards.tolist()}, i)
        self._ended = done
        return obs, rewards, terminated, truncated, infos


class SparseReward(VectorCreditWrapper, gym.utils.RecordConstructorArgs):
    """Vector :class:`llm_gym.wrappers.SparseReward`: R on each episode's last token.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = SparseReward(gym.make_vec("LLMCompletion-v0", num_envs=2))
        >>> _ = envs.reset(seed=0)
    """

    beta = 0.0

    def __init__(self, env: VectorEnv) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        VectorCreditWrapper.__init__(self, env)


class UniformCredit(VectorCreditWrapper, gym.utils.RecordConstructorArgs):
    """Vector :class:`llm_gym.wrappers.UniformCredit`: R / T per token.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = UniformCredit(gym.make_vec("LLMCompletion-v0", num_envs=2))
        >>> _ = envs.reset(seed=0)
    """

    beta = 1.0

    def __init__(
        self, env: VectorEnv, baseline: float | str | None = None, baseline_rate: float = 0.01
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, baseline=baseline, baseline_rate=baseline_rate
        )
        VectorCreditWrapper.__init__(self, env, baseline, baseline_rate)

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        return np.full(n_tokens, 1.0 / n_tokens)


class AttentionCredit(VectorCreditWrapper, gym.utils.RecordConstructorArgs):
    """Vector :class:`llm_gym.wrappers.AttentionCredit` (ABC).

    The vector env scores every episode that ends in a step in one batched RM
    forward and returns each one's attention in ``infos["rm_attention"]``.

    Args:
        env: a vector env with an ``attention_request`` attribute on its
            unwrapped env (``gym.make_vec("LLMCompletion-v0", ...)``).
        beta, layers, heads, rollout, baseline, baseline_rate: as for the single-env
            wrapper (one running-mean baseline serves every sub-environment).

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = AttentionCredit(gym.make_vec("LLMCompletion-v0", num_envs=2), beta=0.8)
        >>> _ = envs.reset(seed=0)
    """

    def __init__(
        self,
        env: VectorEnv,
        beta: float = 0.8,
        layers: tuple[int, ...] | int = (-1,),
        heads: str = "mean",
        rollout: bool = False,
        baseline: float | str | None = None,
        baseline_rate: float = 0.01,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            beta=beta,
            layers=layers,
            heads=heads,
            rollout=rollout,
            baseline=baseline,
            baseline_rate=baseline_rate,
        )
        VectorCreditWrapper.__init__(self, env, baseline, baseline_rate)
        self.beta = check_beta(beta)
        layers = (layers,) if isinstance(layers, int) else tuple(layers)
        self.request = AttentionRequest(layers=layers, heads=heads, rollout=rollout)
        if not hasattr(env.unwrapped, "attention_request"):
            raise gym.error.Error(
                f"vector AttentionCredit needs {env.unwrapped!r} to have an `attention_request` "
                "attribute and to return infos['rm_attention'] for finished episodes"
            )
        env.unwrapped.attention_request = self.request

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        if "rm_attention" not in info:
            raise gym.error.Error(
                "vector AttentionCredit: a finished episode's info has no 'rm_attention' "
                f"(keys: {sorted(info)}); the vector env must score with its attention_request"
            )
        return np.asarray(info["rm_attention"], dtype=np.float64)
