"""Vector :class:`~llm_gym.wrappers.PotentialShaping`, for ``NEXT_STEP`` vector token envs.

Holds :class:`PotentialShaping`. Each sub-environment's episode gets the shaped
rewards and token rewards the single-environment wrapper gives it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from llm_gym.envs.protocol import CREDIT_MAP, PROMPT_IDS, TOKEN_REWARDS
from llm_gym.wrappers.shaping import Potential, RewardModelPotential
from llm_gym.wrappers.vector.credit import info_entry

__all__ = ["PotentialShaping"]


class PotentialShaping(VectorWrapper, gym.utils.RecordConstructorArgs):
    """r'_t = r_t + gamma * Phi(s_{t+1}) - Phi(s_t) for every sub-environment.

    Args:
        env: a vector token environment with ``NEXT_STEP`` autoreset whose reset infos
            hold ``"prompt_ids"`` (``gym.make_vec("LLMCompletion-v0", ...)``).
        potential: ``Phi(prompt_ids, prefix_ids) -> float``, or ``"reward_model"`` for
            :class:`~llm_gym.wrappers.RewardModelPotential` on the environment's reward
            model (one incremental scorer per sub-environment).
        gamma: the learner's discount factor.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = PotentialShaping(gym.make_vec("LLMCompletion-v0", num_envs=2, max_new_tokens=3),
        ...                         lambda prompt, prefix: 0.1 * len(prefix))
        >>> _ = envs.reset(seed=0)
        >>> _ = envs.action_space.seed(0)  # sampled actions can be EOS; these are not
        >>> for _ in range(3):
        ...     _, rewards, terminated, _, infos = envs.step(envs.action_space.sample())
        >>> bool(terminated.all()), len(infos["token_rewards"][0])
        (True, 3)
    """

    def __init__(self, env: VectorEnv, potential: Potential | str, gamma: float = 1.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, potential=potential, gamma=gamma)
        VectorWrapper.__init__(self, env)
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"vector PotentialShaping expects NEXT_STEP autoreset, got {mode}")
        if potential == "reward_model":
            # LLMCompletion-v0's vector env, or any other with these two attributes
            base: Any = env.unwrapped
            missing = [n for n in ("reward_model", "tokenizer") if not hasattr(base, n)]
            if missing:
                raise gym.error.Error(
                    f"potential='reward_model' needs the vector environment's {missing[0]!r} "
                    "attribute; pass a potential function instead"
                )
            self.potentials: list[Potential] = [
                RewardModelPotential(base.reward_model, base.tokenizer)
                for _ in range(self.num_envs)
            ]
        elif callable(potential):
            self.potentials = [potential] * self.num_envs
        else:
            raise ValueError(
                f"potential must be a function (prompt_ids, prefix_ids) -> float or "
                f"'reward_model', got {potential!r}"
            )
        self.gamma = float(gamma)
        self._prompts = [np.zeros(0, dtype=np.int64) for _ in range(self.num_envs)]
        self._prefixes: list[list[int]] = [[] for _ in range(self.num_envs)]
        self._shaping: list[list[float]] = [[] for _ in range(self.num_envs)]
        self._rewards: list[list[float]] = [[] for _ in range(self.num_envs)]
        self._phi = np.zeros(self.num_envs)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def _start(self, i: int, infos: dict[str, Any]) -> None:
        prompt = info_entry(infos, PROMPT_IDS, i)
        if prompt is None:
            raise gym.error.Error(
                "vector PotentialShaping needs the prompt of every episode in the reset infos "
                f"(infos[{PROMPT_IDS!r}]); got keys {sorted(infos)}"
            )
        self._prompts[i] = np.asarray(prompt, dtype=np.int64).reshape(-1)
        self._prefixes[i], self._shaping[i], self._rewards[i] = [], [], []
        self._phi[i] = float(self.potentials[i](self._prompts[i], np.zeros(0, dtype=np.int64)))
        self._ended[i] = False

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, infos = self.env.reset(**kwargs)
        mask = (kwargs.get("options") or {}).get("reset_mask")
        for i in range(self.num_envs) if mask is None else np.flatnonzero(mask):
            self._start(int(i), infos)
        return obs, infos

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        rewards = np.array(rewards, dtype=np.float64)
        actions = np.asarray(actions).reshape(self.num_envs)
        for i in range(self.num_envs):
            if self._ended[i]:  # NEXT_STEP autoreset: this step only reset it
                self._start(i, infos)
                continue
            self._prefixes[i].append(int(actions[i]))
            prefix = np.asarray(self._prefixes[i], dtype=np.int64)
            phi_next = 0.0 if terminated[i] else float(self.potentials[i](self._prompts[i], prefix))
            shaping = self.gamma * phi_next - self._phi[i]
            self._phi[i] = phi_next
            self._shaping[i].append(shaping)
            self._rewards[i].append(float(rewards[i]))
            rewards[i] += shaping
            if terminated[i] or truncated[i]:
                inner = info_entry(infos, TOKEN_REWARDS, i)
                inner = self._rewards[i] if inner is None else inner
                if len(inner) != len(self._shaping[i]):
                    raise gym.error.Error(
                        f"vector PotentialShaping got {len(inner)} token rewards from "
                        f"sub-environment {i} for an episode of {len(self._shaping[i])} steps"
                    )
                shaped = (np.asarray(inner, dtype=np.float64) + self._shaping[i]).tolist()
                if TOKEN_REWARDS in infos:
                    infos[TOKEN_REWARDS][i], infos[f"_{TOKEN_REWARDS}"][i] = shaped, True
                else:
                    infos = self._add_info(infos, {TOKEN_REWARDS: shaped}, i)
                if CREDIT_MAP in infos:  # shaping is not a redistribution of the score
                    infos[f"_{CREDIT_MAP}"][i] = False
        self._ended = np.asarray(terminated) | np.asarray(truncated)
        return obs, rewards, terminated, truncated, infos
