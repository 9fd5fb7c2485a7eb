"""Per-token credit for stock stable-baselines3 on-policy algorithms.

Holds :class:`TokenRewardCallback`, which writes each finished episode's
``info["token_rewards"]`` onto the transitions stored in the rollout buffer
before advantages are computed, and logs completion statistics. llm-gym's own
agents do this in their rollout buffer (:mod:`llm_gym.agents.buffers`); a
callback is the only place a stock algorithm lets it happen.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from llm_gym.agents.credit import EpisodeCredit
from llm_gym.agents.statistics import episode_summary, rollout_statistics
from llm_gym.envs.protocol import TOKEN_REWARDS

__all__ = ["TokenRewardCallback"]


class TokenRewardCallback(BaseCallback):
    model: OnPolicyAlgorithm  # checked by _init_callback
    """Apply ``info["token_rewards"]`` in stock on-policy algorithms (PPO, A2C, MaskablePPO...).

    stable-baselines3 calls ``callback.on_step()`` after ``env.step`` and before
    ``rollout_buffer.add``, with the step's ``rewards`` array in ``locals``. When an
    episode ends, this callback overwrites the rewards already stored for its
    earlier steps in the rollout buffer and the pending reward of its last step, so
    GAE sees the per-token rewards. (:class:`~llm_gym.agents.TokenPPO` needs no
    callback: its rollout buffer applies the credit.)

    Limits, stated plainly:

    - Steps taken in an earlier rollout were already trained on with the reward the
      environment streamed at the time. Their missing credit (token reward minus
      streamed reward) is added to the episode's first step in the current
      rollout, so each trajectory's return is kept (exactly with ``gamma=1``) but
      that credit lands later than the token that earned it. Choose ``n_steps`` a
      multiple of the completion length to make this rare.
    - It assumes one environment step per completion token (true of
      ``LLMCompletion-v0`` and the reward wrappers); if ``token_rewards`` has more
      entries than steps seen, the extra leading credit goes to the first step.
    - Rewards normalised by ``VecNormalize(norm_reward=True)`` are not comparable
      with ``token_rewards``; do not combine the two.
    - Only on-policy algorithms with a ``rollout_buffer`` (shape ``(n_steps, n_envs)``).

    Args:
        reward_scale: multiplies every environment and token reward before storage.
        verbose: SB3 verbosity level.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from stable_baselines3 import PPO
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0)
        >>> model = model.learn(8, callback=TokenRewardCallback())
    """

    def __init__(self, reward_scale: float = 1.0, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.reward_scale = float(reward_scale)
        self._credit: EpisodeCredit | None = None
        self._finished: list[dict[str, float]] = []

    def _init_callback(self) -> None:
        if not isinstance(self.model, OnPolicyAlgorithm):
            raise TypeError(
                f"TokenRewardCallback needs an on-policy algorithm with a rollout buffer, "
                f"got {type(self.model).__name__}"
            )
        if self._credit is None or self._credit.n_envs != self.model.n_envs:
            self.reset_episodes()

    def reset_episodes(self) -> None:
        """Forget episodes in progress (call when the environments are reset)."""
        self._credit = EpisodeCredit(self.model.n_envs)

    def _on_training_start(self) -> None:
        if self.model.num_timesteps == 0:  # learn() just reset the environments
            self.reset_episodes()

    def _on_rollout_start(self) -> None:
        self._finished = []
        cast(EpisodeCredit, self._credit).new_rollout()  # made by _init_callback

    def _on_step(self) -> bool:
        rewards: np.ndarray = self.locals["rewards"]
        rewards *= self.reward_scale
        row = self.model.rollout_buffer.pos  # where SB3 stores this step next
        credit = cast(EpisodeCredit, self._credit)  # made by _init_callback
        for episode in credit.step(row, rewards, self.locals["dones"]):
            info = self.locals["infos"][episode.env]
            token_rewards = info.get(TOKEN_REWARDS)
            if token_rewards is not None:
                scaled = np.asarray(token_rewards, np.float64) * self.reward_scale
                for target, reward in episode.credit(scaled):
                    if target == row:
                        rewards[episode.env] = reward
                    else:
                        self.model.rollout_buffer.rewards[target, episode.env] = reward
            self._finished.append(episode_summary(info, episode.length))
        return True

    def _on_rollout_end(self) -> None:
        for key, value in rollout_statistics(self._finished).items():
            self.logger.record(f"rollout/{key}", value)

    @property
    def finished_episodes(self) -> list[dict[str, float]]:
        """Summaries (score, length, distinct-token ratio, ...) of the last rollout's episodes."""
        return list(self._finished)
