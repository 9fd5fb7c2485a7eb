"""Carrying each episode's token rewards onto the transitions stored for it.

Holds :class:`EpisodeCredit`, which remembers, per environment, the buffer row of
every step of the episode in progress and the reward streamed for it, and turns
a finished episode's ``info["token_rewards"]`` into the reward each of its
stored rows should hold. :class:`~llm_gym.agents.buffers.TokenCreditBuffer`
applies it before advantages are computed; :class:`~llm_gym.agents.TokenRewardCallback`
applies it for stock stable-baselines3 algorithms.

Steps an episode took in an earlier rollout were already trained on with the
reward streamed then. Their missing credit (token reward minus streamed reward)
goes to the episode's first step in the current rollout: every episode keeps its
return (exactly with ``gamma = 1``) and no credit is lost or counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EpisodeCredit", "FinishedEpisode"]


@dataclass
class FinishedEpisode:
    """One environment's episode: where its steps went and what they streamed."""

    env: int
    #: buffer row of each step; None for a step stored in an earlier rollout
    rows: list[int | None] = field(default_factory=list)
    streamed: list[float] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.rows)

    def credit(self, token_rewards: Sequence[float] | np.ndarray) -> list[tuple[int, float]]:
        """``(row, reward)`` for the steps stored in the current rollout.

        ``token_rewards`` has one entry per step (extra leading entries, beyond the
        steps seen, are carried like earlier-rollout credit; with fewer entries
        the first steps keep their streamed reward).

        >>> episode = FinishedEpisode(0, rows=[None, 0, 1], streamed=[0.0, 0.0, 0.0])
        >>> episode.credit([0.5, 0.25, 0.25])
        [(0, 0.75), (1, 0.25)]
        """
        steps = self.length
        rewards = np.asarray(token_rewards, dtype=np.float64)
        carry = float(rewards[: max(len(rewards) - steps, 0)].sum())
        rewards = rewards[-steps:] if steps else rewards[:0]
        offset = steps - len(rewards)
        writes: list[tuple[int, float]] = []
        for j, row in enumerate(self.rows):
            if j < offset:
                continue
            reward = float(rewards[j - offset])
            if row is None:
                carry += reward - self.streamed[j]
                continue
            if not writes:
                reward += carry
            writes.append((row, reward))
        return writes


class EpisodeCredit:
    """The episodes in progress of ``n_envs`` environments.

    Args:
        n_envs: number of environments stepped together.

    Example:
        >>> credit = EpisodeCredit(2)
        >>> credit.step(0, np.array([0.0, 0.0]), np.array([False, False]))
        []
        >>> [e.rows for e in credit.step(1, np.array([0.0, 2.0]), np.array([False, True]))]
        [[0, 1]]
    """

    def __init__(self, n_envs: int) -> None:
        self.n_envs = n_envs
        self.forget()

    def forget(self) -> None:
        """Drop the episodes in progress (the environments were reset)."""
        self._episodes = [FinishedEpisode(i) for i in range(self.n_envs)]

    def new_rollout(self) -> None:
        """The buffer was emptied: earlier steps of the episodes in progress have no row."""
        for episode in self._episodes:
            episode.rows = [None] * len(episode.rows)

    def in_rollout(self, env: int) -> int:
        """How many steps of ``env``'s episode in progress are in the current rollout."""
        return sum(row is not None for row in self._episodes[env].rows)

    def step(self, row: int, streamed: np.ndarray, dones: np.ndarray) -> list[FinishedEpisode]:
        """Record one step of every environment at buffer ``row``; return the episodes it ended."""
        finished = []
        for i, episode in enumerate(self._episodes):
            episode.rows.append(row)
            episode.streamed.append(float(streamed[i]))
            if dones[i]:
                finished.append(episode)
                self._episodes[i] = FinishedEpisode(i)
        return finished
