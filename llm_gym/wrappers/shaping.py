"""PotentialShaping: Ng-Harada-Russell shaping with a potential of the token prefix.

Holds :class:`PotentialShaping` and :class:`RewardModelPotential` (the reward
model's score of the prefix, a RED-style prefix-difference reward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.envs.protocol import CREDIT_MAP, PROMPT_IDS, TOKEN_REWARDS
from llm_gym.rewards import PrefixScorer, RewardModel

__all__ = ["PotentialShaping", "RewardModelPotential"]

Potential = Callable[[np.ndarray, np.ndarray], float]


class RewardModelPotential:
    """Phi(prompt, prefix) = scale * RM score of the prompt with the completion prefix so far.

    With it, the shaped rewards of an episode sum to R - Phi(s_0): each token is
    credited with how much it moved the reward model's score (RED-style). The
    scores come from a :class:`~llm_gym.rewards.PrefixScorer`: for a
    decoder :class:`~llm_gym.rewards.HFRewardModel` that reads the environment's
    token ids, consecutive prefixes are scored incrementally with a KV cache, so
    an episode costs about one RM forward; otherwise each call is one RM forward.

    Args:
        reward_model: any :class:`~llm_gym.rewards.RewardModel`.
        tokenizer: the environment's tokenizer (to build the batch).
        scale: multiplies the score.

    Example:
        >>> import numpy as np, llm_gym.assets
        >>> from llm_gym.rewards import HFRewardModel
        >>> from llm_gym.rewards.loading import load_tokenizer
        >>> rm = HFRewardModel(llm_gym.assets.reward_model_path("default"), device="cpu")
        >>> phi = RewardModelPotential(rm, load_tokenizer(str(llm_gym.assets.TOKENIZER_DIR)))
        >>> phi.incremental, isinstance(phi(np.array([5, 10]), np.array([11])), float)
        (True, True)
    """

    def __init__(self, reward_model: RewardModel, tokenizer: Any, scale: float = 1.0) -> None:
        self.reward_model, self.tokenizer, self.scale = reward_model, tokenizer, float(scale)
        self.scorer = PrefixScorer(reward_model, tokenizer)

    @property
    def incremental(self) -> bool:
        """Whether consecutive prefixes are scored from a KV cache."""
        return self.scorer.incremental

    def __call__(self, prompt_ids: np.ndarray, prefix_ids: np.ndarray) -> float:
        return self.scale * self.scorer(prompt_ids, prefix_ids)


class PotentialShaping(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """r'_t = r_t + gamma * Phi(s_{t+1}) - Phi(s_t), with Phi(terminal) = 0.

    s_t is the prompt plus the first t completion tokens; the action of each
    step is the token appended. The shaped reward is returned at every step (it
    is known then), so a stock learner sees it; ``info["token_rewards"]`` on the
    last step is the inner environment's ``info["token_rewards"]`` (else its
    reward stream) plus the shaping terms: over a plain sparse environment,
    exactly the returned stream. The
    discounted return changes by the constant -Phi(s_0), so the optimal policy is
    unchanged for the same ``gamma``.

    Composes with the redistribution wrappers inside it
    (``PotentialShaping(AttentionCredit(env), phi)``): their token credit gets
    the shaping terms added. Truncated episodes keep Phi of their last state.

    Args:
        env: a token environment whose actions are token ids. The prompt is read
            from reset's ``info["prompt_ids"]``, else the environment's
            ``prompt_ids`` attribute, else taken as empty.
        potential: ``Phi(prompt_ids, prefix_ids) -> float``, or ``"reward_model"``
            for :class:`RewardModelPotential` on the environment's RM and tokenizer.
        gamma: the learner's discount factor.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = PotentialShaping(gym.make("LLMCompletion-v0"), lambda p, c: 0.1 * len(c))
        >>> _ = env.reset(seed=0)
        >>> done, shaped = False, []
        >>> while not done:
        ...     _, reward, done, _, info = env.step(env.action_space.sample())
        ...     shaped.append(reward)
        >>> shaped == info["token_rewards"]
        True
    """

    def __init__(self, env: gym.Env, potential: Potential | str, gamma: float = 1.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, potential=potential, gamma=gamma)
        gym.Wrapper.__init__(self, env)
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if potential == "reward_model":
            missing = [n for n in ("reward_model", "tokenizer") if not env.has_wrapper_attr(n)]
            if missing:
                raise gym.error.Error(
                    f"potential='reward_model' needs the environment's {missing[0]!r} attribute; "
                    "pass a potential function instead"
                )
            potential = RewardModelPotential(
                env.get_wrapper_attr("reward_model"), env.get_wrapper_attr("tokenizer")
            )
        elif not callable(potential):
            raise ValueError(
                f"potential must be a function (prompt_ids, prefix_ids) -> float or "
                f"'reward_model', got {potential!r}"
            )
        self.potential: Potential = potential
        self.gamma = float(gamma)
        self._prompt = np.zeros(0, dtype=np.int64)
        self._prefix: list[int] = []
        self._phi = 0.0
        self._shaping: list[float] = []
        self._rewards: list[float] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if PROMPT_IDS in info:
            prompt = info[PROMPT_IDS]
        elif self.env.has_wrapper_attr("prompt_ids"):
            prompt = self.env.get_wrapper_attr("prompt_ids")
        else:
            prompt = []
        self._prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
        self._prefix, self._shaping, self._rewards = [], [], []
        self._phi = float(self.potential(self._prompt, np.zeros(0, dtype=np.int64)))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._prefix.append(int(action))
        prefix = np.asarray(self._prefix, dtype=np.int64)
        phi_next = 0.0 if terminated else float(self.potential(self._prompt, prefix))
        shaping = self.gamma * phi_next - self._phi
        self._phi = phi_next
        self._shaping.append(shaping)
        self._rewards.append(float(reward))
        if terminated or truncated:
            inner = info.get(TOKEN_REWARDS, self._rewards)
            if len(inner) != len(self._shaping):
                raise gym.error.Error(
                    f"PotentialShaping got {len(inner)} token rewards from the inner environment "
                    f"for an episode of {len(self._shaping)} steps; expected one per step"
                )
            info[TOKEN_REWARDS] = (np.asarray(inner, dtype=np.float64) + self._shaping).tolist()
            info.pop(CREDIT_MAP, None)  # shaping is not a redistribution of the score
        return obs, float(reward) + shaping, terminated, truncated, info
