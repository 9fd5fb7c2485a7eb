"""Groups of sub-environments that write completions of the same prompts (for RLOO, GRPO).

Holds :class:`PromptGroups`. Sub-environments come in consecutive groups of
``size``; the e-th episode of every member of group g has the same prompt and
horizon, drawn once for the group from the group's own generator (seeded with
the seed of the group's first member, so a seed fixes every group's prompts, and
``size=1`` draws what the member alone would draw). Members run independently:
one that ends early (EOS) starts the group's next episode at once, so the
completions of one prompt are matched by ``(group, group_episode)``, not by step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium.utils import seeding

__all__ = ["PromptGroups"]


class PromptGroups:
    """Which prompt and horizon each member's episode has.

    Args:
        n_envs: sub-environments, a multiple of ``size``.
        size: members per group.
        n_prompts: prompts of the task to draw from.
        new_tokens: the task's ``(min, max)`` horizon range.

    Example:
        >>> groups = PromptGroups(4, 2, n_prompts=10, new_tokens=(3, 5))
        >>> groups.reseed([0, 1, 2, 3]); groups.restart()
        >>> [groups.episode(i)[:2] for i in range(4)]
        [(0, 0), (0, 0), (1, 0), (1, 0)]
        >>> groups.episode(0)[2:] == groups.episode(1)[2:]
        True
    """

    def __init__(self, n_envs: int, size: int, n_prompts: int, new_tokens: tuple[int, int]) -> None:
        if n_envs % size:
            raise ValueError(
                f"num_envs={n_envs} is not a multiple of group_size={size}; expected groups of "
                "equal size"
            )
        self.size, self.n_groups = size, n_envs // size
        self.n_prompts, self.new_tokens = n_prompts, new_tokens
        self._rngs = [seeding.np_random(None)[0] for _ in range(self.n_groups)]
        #: per group, the draws of the episodes some member has not finished yet
        self._draws: list[dict[int, tuple[int, int]]] = [{} for _ in range(self.n_groups)]
        self._drawn = np.zeros(self.n_groups, dtype=np.int64)  # episodes drawn so far
        self._next = np.zeros(self.n_groups, dtype=np.int64)  # the next fresh group episode
        self._episode = np.zeros(n_envs, dtype=np.int64)  # each member's current group episode

    def reseed(self, seeds: Sequence[int | None]) -> None:
        """Seed group g's generator with its first member's seed; episodes count from 0."""
        for g in range(self.n_groups):
            self._rngs[g] = seeding.np_random(seeds[g * self.size])[0]
            self._draws[g] = {}
            self._drawn[g] = 0
            self._next[g] = 0

    def restart(self) -> None:
        """Every group starts a fresh episode, all members together (a full reset)."""
        for g in range(self.n_groups):
            members = slice(g * self.size, (g + 1) * self.size)
            self._episode[members] = self._next[g]
            self._next[g] += 1

    def advance(self, env: int) -> None:
        """``env`` starts its group's next episode (it ended, or was reset alone)."""
        g = env // self.size
        self._episode[env] += 1
        self._next[g] = max(self._next[g], self._episode[env] + 1)

    def episode(self, env: int) -> tuple[int, int, int, int]:
        """``(group, group_episode, prompt_index, horizon)`` of ``env``'s current episode."""
        g, e = env // self.size, int(self._episode[env])
        draws = self._draws[g]
        low, high = self.new_tokens
        while self._drawn[g] <= e:  # in episode order, whichever member asks first
            index = int(self._rngs[g].integers(self.n_prompts))
            draws[int(self._drawn[g])] = (index, int(self._rngs[g].integers(low, high + 1)))
            self._drawn[g] += 1
        oldest = int(self._episode[g * self.size : (g + 1) * self.size].min())
        for done in [k for k in draws if k < oldest]:
            del draws[done]
        return (g, e, *draws[e])
