"""Vector versions of the redistribution wrappers, for ``LLMCompletionVectorEnv`` and any
``VectorEnv`` with ``NEXT_STEP`` autoreset.

Holds :class:`VectorCreditWrapper`, :class:`SparseReward`, :class:`UniformCredit`,
:class:`RelevanceCredit` and :class:`AttentionCredit`. Each sub-environment's episode gets the same token
rewards as the single-environment wrapper gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from llm_gym.envs.protocol import (
    ATTENTION_METADATA,
    COMPLETION_IDS,
    CREDIT_MAP,
    PROMPT_IDS,
    RM_ATTENTION,
    SCORE,
    TOKEN_REWARDS,
    with_attention_request,
)
from llm_gym.rewards import AttentionRequest
from llm_gym.wrappers.credit import (
    ScoreBaseline,
    check_beta,
    check_credit_weights,
    credit_map,
    episode_ids,
    redistribute,
)
from llm_gym.wrappers.relevance_credit import relevance_weights

__all__ = [
    "AttentionCredit",
    "info_entry",
    "RelevanceCredit",
    "SparseReward",
    "UniformCredit",
    "VectorCreditWrapper",
]


def info_entry(infos: dict[str, Any], key: str, i: int | np.integer[Any]) -> Any:
    """Sub-environment ``i``'s value of ``key`` in a vector info dict, or None.

    >>> info_entry({"score": np.array([0.0, 2.0]), "_score": np.array([False, True])}, "score", 1)
    np.float64(2.0)
    """
    if key not in infos or not infos.get(f"_{key}", np.ones(i + 1, dtype=bool))[i]:
        return None
    return infos[key][i]


class VectorCreditWrapper(VectorWrapper):
    """Rewards pass through; ``infos["token_rewards"][i]`` holds env i's credit when it ends.

    Subclasses set :attr:`beta` and implement :meth:`credit_weights`.
    """

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

    def credit_weights(
        self, infos: dict[str, Any], i: int | np.integer[Any], n_tokens: int
    ) -> np.ndarray:
        """Weights over sub-environment ``i``'s ``n_tokens`` completion tokens, summing to 1."""
        raise NotImplementedError

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        mask = (kwargs.get("options") or {}).get("reset_mask")
        which = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        self._returns[which] = 0.0
        self._steps[which] = 0
        self._ended[which] = False
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
            completion = info_entry(infos, COMPLETION_IDS, i)
            n_tokens = len(completion) if completion is not None else int(self._steps[i])
            weights = np.zeros(n_tokens)
            if self.beta > 0:
                weights = check_credit_weights(
                    self.credit_weights(infos, i, n_tokens),
                    n_tokens,
                    f"vector {type(self).__name__}",
                )
            token_rewards = redistribute(weights, self._returns[i], self.beta, baseline)
            self.baseline.update(float(self._returns[i]))
            credit = {
                TOKEN_REWARDS: token_rewards.tolist(),
                CREDIT_MAP: credit_map(weights, self.beta).tolist(),
            }
            for key, value in credit.items():
                if key in infos:
                    infos[key][i], infos[f"_{key}"][i] = value, True
                else:
                    infos = self._add_info(infos, {key: value}, int(i))
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

    def credit_weights(
        self, infos: dict[str, Any], i: int | np.integer[Any], n_tokens: int
    ) -> np.ndarray:
        return np.full(n_tokens, 1.0 / n_tokens)


class RelevanceCredit(VectorCreditWrapper, gym.utils.RecordConstructorArgs):
    """Vector :class:`llm_gym.wrappers.RelevanceCredit`: R spread by a known per-token relevance.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym import assets
        >>> envs = RelevanceCredit(gym.make_vec("LLMCompletion-v0", num_envs=2),
        ...                        lambda prompt, completion: assets.token_relevance(completion))
        >>> _ = envs.reset(seed=0)
    """

    def __init__(
        self,
        env: VectorEnv,
        relevance: Callable[[np.ndarray, np.ndarray], np.ndarray],
        beta: float = 0.8,
        baseline: float | str | None = None,
        baseline_rate: float = 0.01,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, relevance=relevance, beta=beta, baseline=baseline, baseline_rate=baseline_rate
        )
        VectorCreditWrapper.__init__(self, env, baseline, baseline_rate)
        self.weights_of = relevance_weights(relevance, "vector RelevanceCredit")
        self.beta = check_beta(beta)

    def credit_weights(
        self, infos: dict[str, Any], i: int | np.integer[Any], n_tokens: int
    ) -> np.ndarray:
        info = {key: info_entry(infos, key, i) for key in (PROMPT_IDS, COMPLETION_IDS)}
        prompt, completion = episode_ids(
            {k: v for k, v in info.items() if v is not None}, "vector RelevanceCredit"
        )
        return self.weights_of(prompt, completion, n_tokens)


class AttentionCredit(VectorCreditWrapper, gym.utils.RecordConstructorArgs):
    """Vector :class:`llm_gym.wrappers.AttentionCredit` (ABC).

    Asks for the reward model's attention at every reset (the ``"rm_attention"``
    reset option of :mod:`llm_gym.envs.protocol`); the vector env scores every
    episode that ends in a step in one batched RM forward and returns each one's
    attention in ``infos["rm_attention"]``.

    Args:
        env: a vector env that declares ``metadata["rm_attention"]``
            (``gym.make_vec("LLMCompletion-v0", ...)`` with a transformer RM).
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
        if env.metadata.get(ATTENTION_METADATA) is False:
            raise TypeError(
                f"vector AttentionCredit: the reward model of {env.unwrapped!r} has no attention "
                "weights; ABC needs a transformer reward model such as HFRewardModel"
            )
        if not env.metadata.get(ATTENTION_METADATA, False):
            raise gym.error.Error(
                f"vector AttentionCredit needs {env.unwrapped!r} to declare "
                f"metadata[{ATTENTION_METADATA!r}] (it answers the 'rm_attention' reset option "
                "with infos['rm_attention'], see llm_gym.envs.protocol) and a reward model "
                "with attention"
            )

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        kwargs["options"] = with_attention_request(kwargs.get("options"), self.request)
        return super().reset(**kwargs)

    def credit_weights(
        self, infos: dict[str, Any], i: int | np.integer[Any], n_tokens: int
    ) -> np.ndarray:
        weights = info_entry(infos.get(RM_ATTENTION, {}), self.request.key, i)
        if weights is None:
            if info_entry(infos, SCORE, i) is None:
                weights = np.zeros(n_tokens)
                weights[-1] = 1.0
                return weights  # cut off before the env scored it: the return stays where it fell
            raise gym.error.Error(
                f"vector AttentionCredit: sub-environment {i}'s finished episode has no "
                f"infos[{RM_ATTENTION!r}][{self.request.key!r}] (keys: {sorted(infos)}); the "
                "vector env must answer the 'rm_attention' reset option"
            )
        return np.asarray(weights, dtype=np.float64)
