"""Per-token credit for stable-baselines3 on-policy algorithms.

Holds :class:`TokenRewardCallback`, which writes each finished episode's
``info["token_rewards"]`` onto the transitions stored in the rollout buffer
before advantages are computed, and logs completion statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

__all__ = ["TokenRewardCallback"]


@dataclass
class _Episode:
    """One environment's episode in progress: where its steps went and what they earned."""

    positions: list[int | None] = field(default_factory=list)  # buffer row; None: an older rollout
    streamed: list[float] = field(default_factory=list)  # reward stored for the step so far
    penalties: list[float] = field(default_factory=list)  # per-step penalty (e.g. KL), kept as is
    earlier_penalty: float = 0.0  # rollout penalties charged to its steps in earlier rollouts


class TokenRewardCallback(BaseCallback):
    """Apply ``info["token_rewards"]`` in stock on-policy algorithms (PPO, A2C, MaskablePPO...).

    stable-baselines3 calls ``callback.on_step()`` after ``env.step`` and before
    ``rollout_buffer.add``, with the step's ``rewards`` array in ``locals``. When an
    episode ends, this callback overwrites the rewards already stored for its
    earlier steps in the rollout buffer and the pending reward of its last step, so
    GAE sees the per-token rewards.

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
        self._episodes: list[_Episode] = []
        self._finished: list[dict[str, float]] = []
        # per finished episode: (env, its first and last buffer rows, penalty of earlier rollouts)
        self._spans: list[tuple[int, int, int, float]] = []

    # ------------------------------------------------------------ lifecycle
    def _init_callback(self) -> None:
        if not isinstance(self.model, OnPolicyAlgorithm):
            raise TypeError(
                f"TokenRewardCallback needs an on-policy algorithm with a rollout buffer, "
                f"got {type(self.model).__name__}"
            )
        if len(self._episodes) != self.model.n_envs:
            self.reset_episodes()

    def reset_episodes(self) -> None:
        """Forget episodes in progress (call when the environments are reset)."""
        self._episodes = [_Episode() for _ in range(self.model.n_envs)]

    def _on_training_start(self) -> None:
        if self.model.num_timesteps == 0:  # learn() just reset the environments
            self.reset_episodes()

    def _on_rollout_start(self) -> None:
        self._finished = []
        self._spans = []
        for episode in self._episodes:
            episode.positions = [None] * len(episode.positions)

    # -------------------------------------------------------------- stepping
    def step_penalties(self) -> np.ndarray | None:
        """Per-environment penalty subtracted from this step's reward (subclasses: KL)."""
        return None

    def _on_step(self) -> bool:
        rewards: np.ndarray = self.locals["rewards"]
        dones = self.locals["dones"]
        infos = self.locals["infos"]
        rewards *= self.reward_scale
        streamed = rewards.astype(np.float64)
        penalties = self.step_penalties()
        if penalties is not None:
            rewards -= penalties.astype(rewards.dtype)
        position = self.model.rollout_buffer.pos
        for i, episode in enumerate(self._episodes):
            episode.positions.append(position)
            episode.streamed.append(float(streamed[i]))
            episode.penalties.append(0.0 if penalties is None else float(penalties[i]))
            if dones[i]:
                token_rewards = infos[i].get("token_rewards")
                if token_rewards is not None:
                    self._apply(
                        i, episode, np.asarray(token_rewards, np.float64) * self.reward_scale
                    )
                self._finished.append(self._summary(episode, infos[i]))
                inside = sum(p is not None for p in episode.positions)
                self._spans.append((i, position - inside + 1, position, episode.earlier_penalty))
                self._episodes[i] = _Episode()
        return True

    def apply_rollout_penalties(self, penalties: np.ndarray) -> None:
        """Subtract a whole rollout's per-step penalties (``(n_steps, n_envs)``) from its rewards.

        For penalties known only once the rollout is collected (e.g. a KL penalty
        computed in one batched forward). Call it after the last step is stored
        and before advantages are computed; the episode summaries' ``penalty``
        then include it (steps of an episode in earlier rollouts too).
        """
        buffer = self.model.rollout_buffer
        buffer.rewards -= penalties.astype(buffer.rewards.dtype)
        for summary, (i, first, last, earlier) in zip(self._finished, self._spans, strict=True):
            summary["penalty"] += earlier + float(penalties[first : last + 1, i].sum())
        for i, episode in enumerate(self._episodes):
            inside = sum(p is not None for p in episode.positions)
            if inside:
                episode.earlier_penalty += float(penalties[len(penalties) - inside :, i].sum())

    def _apply(self, env_index: int, episode: _Episode, token_rewards: np.ndarray) -> None:
        buffer_rewards = self.model.rollout_buffer.rewards
        pending = self.locals["rewards"]
        steps = len(episode.positions)
        carry = float(token_rewards[: max(len(token_rewards) - steps, 0)].sum())
        token_rewards = token_rewards[-steps:]
        offset = steps - len(token_rewards)
        first_in_buffer = True
        for j, position in enumerate(episode.positions):
            if j < offset:
                continue
            token_reward = float(token_rewards[j - offset])
            if position is None:
                carry += token_reward - episode.streamed[j]
                continue
            value = token_reward - episode.penalties[j]
            if first_in_buffer:
                value += carry
                first_in_buffer = False
            if j == steps - 1:
                pending[env_index] = value
            else:
                buffer_rewards[position, env_index] = value

    def _summary(self, episode: _Episode, info: dict) -> dict[str, float]:
        summary = {
            "length": float(len(episode.positions)),
            "penalty": float(sum(episode.penalties)),
        }
        if "score" in info:
            summary["score"] = float(info["score"])
        completion = info.get("completion_ids")
        if completion:
            summary["distinct"] = len(set(completion)) / len(completion)
        token_rewards = info.get("token_rewards")
        if token_rewards is not None and len(token_rewards):
            values = np.asarray(token_rewards, np.float64)
            summary["token_reward_std"] = float(values.std())
            summary["token_reward_absmax"] = float(np.abs(values).max())
            summary["token_reward_nonzero"] = float(np.mean(values != 0))
        return summary

    def _on_rollout_end(self) -> None:
        if not self._finished:
            return
        for key, name in [
            ("score", "rollout/score_mean"),
            ("length", "rollout/completion_length"),
            ("distinct", "rollout/distinct_token_ratio"),
            ("token_reward_std", "rollout/token_reward_std"),
            ("token_reward_absmax", "rollout/token_reward_absmax"),
            ("token_reward_nonzero", "rollout/token_reward_nonzero_frac"),
        ]:
            values = [summary[key] for summary in self._finished if key in summary]
            if values:
                self.logger.record(name, float(np.mean(values)))
        self.logger.record("rollout/episodes", len(self._finished))

    @property
    def finished_episodes(self) -> list[dict[str, float]]:
        """Summaries (score, length, distinct-token ratio, penalty) of the last rollout."""
        return list(self._finished)
