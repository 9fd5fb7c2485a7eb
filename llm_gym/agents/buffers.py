"""Rollout buffers of the token agents: token credit before GAE, minibatches of whole episodes.

Holds :class:`TokenCreditBuffer` (a mixin for stable-baselines3 rollout buffers),
:class:`TokenRolloutBuffer` (shuffled single transitions, as SB3's
``DictRolloutBuffer``) and :class:`EpisodeRolloutBuffer` (minibatches of whole
episodes, TokenPPO's default).

What a token-credit buffer adds to SB3's: the agent tells it, after each step,
which episodes ended and their ``info["token_rewards"]``
(:meth:`~TokenCreditBuffer.end_episodes`), and may set a per-transition penalty
(the KL term, :attr:`~TokenCreditBuffer.penalties`). ``compute_returns_and_advantage``
then writes each finished episode's token rewards onto its stored transitions
(:mod:`llm_gym.agents.credit`: credit of steps stored in an earlier rollout goes to
the episode's first step in this one), adds the value bootstrap of episodes cut
by a time limit, subtracts the penalties, and runs SB3's GAE.

Episode minibatches: stock SB3 shuffles single transitions into minibatches, so
each transition of an episode needs its own forward over its window. Here a
minibatch is made of whole environment columns (consecutive steps of one
environment, i.e. whole episodes when ``n_steps`` is a multiple of the completion
length), in a random column order every epoch. With
:class:`~llm_gym.agents.CausalLMPolicy`, whose update forward shares one window
forward among the steps of an episode, a minibatch then costs about one forward
per episode instead of one per token.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples

from llm_gym.agents.credit import EpisodeCredit, FinishedEpisode

__all__ = ["EpisodeMinibatches", "EpisodeRolloutBuffer", "TokenCreditBuffer", "TokenRolloutBuffer"]

if TYPE_CHECKING:
    # the mixins run inside an SB3 DictRolloutBuffer: type them as one
    _BufferBase = DictRolloutBuffer
else:
    _BufferBase = object


class TokenCreditBuffer(_BufferBase):
    """Mixin for an SB3 ``DictRolloutBuffer``: token credit and penalties before GAE.

    Attributes:
        penalties: ``(n_steps, n_envs)`` amounts subtracted from the stored rewards
            before advantages are computed (the KL term), or None; cleared by ``reset``.
        timeout_bootstrap: ``(n_steps, n_envs)`` value bootstrap added to the last
            reward of episodes cut by a time limit (SB3's timeout handling).
    """

    buffer_size: int
    n_envs: int
    pos: int
    rewards: np.ndarray

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.credit = EpisodeCredit(self.n_envs)

    def reset(self) -> None:
        super().reset()
        self.penalties: np.ndarray | None = None
        self.timeout_bootstrap = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        #: the episodes that ended in this rollout: (episode, token rewards or None, info)
        self.finished: list[tuple[FinishedEpisode, np.ndarray | None, dict[str, Any]]] = []
        if hasattr(self, "credit"):
            self.credit.new_rollout()

    def end_episodes(
        self,
        dones: np.ndarray,
        token_rewards: Sequence[np.ndarray | None],
        infos: Sequence[dict[str, Any]] | None = None,
    ) -> list[FinishedEpisode]:
        """After ``add``: note the step just stored and the token rewards of the episodes it ended.

        ``token_rewards[i]`` is env i's finished episode's credit (already scaled as
        the stored rewards are), or None to keep its streamed rewards; ``infos`` are
        the step's infos, kept with the finished episodes (:attr:`finished`).
        """
        finished = self.credit.step(self.pos - 1, self.rewards[self.pos - 1], dones)
        for episode in finished:
            credit = token_rewards[episode.env]
            info = {} if infos is None else infos[episode.env]
            self.finished.append(
                (episode, None if credit is None else np.asarray(credit, dtype=np.float64), info)
            )
        return finished

    def add_timeout_bootstrap(self, env: int | np.integer[Any], value: float) -> None:
        """Bootstrap the step just stored for ``env`` with ``value`` (its episode was cut)."""
        self.timeout_bootstrap[self.pos - 1, env] += value

    def apply_credit(self) -> None:
        """Write the finished episodes' token rewards, bootstraps and penalties onto the rewards."""
        for episode, token_rewards, _ in self.finished:
            if token_rewards is not None:
                for row, reward in episode.credit(token_rewards):
                    self.rewards[row, episode.env] = reward
        self.rewards += self.timeout_bootstrap
        if self.penalties is not None:
            self.rewards -= self.penalties.astype(self.rewards.dtype)

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        self.apply_credit()
        super().compute_returns_and_advantage(last_values, dones)


class TokenRolloutBuffer(TokenCreditBuffer, DictRolloutBuffer):
    """SB3's ``DictRolloutBuffer`` (shuffled single transitions) with token credit.

    Takes the arguments of :class:`~stable_baselines3.common.buffers.DictRolloutBuffer`.
    """


class EpisodeMinibatches(_BufferBase):
    """Mixin for an SB3 ``DictRolloutBuffer``: minibatches of consecutive steps of random envs."""

    buffer_size: int
    n_envs: int
    full: bool
    generator_ready: bool
    observations: dict[str, np.ndarray]

    # DictRolloutBuffer.get yields dict samples, as SB3 itself types it against RolloutBuffer's
    def get(  # type: ignore[override]
        self, batch_size: int | None = None
    ) -> Generator[DictRolloutBufferSamples, None, None]:
        if not self.full:
            raise RuntimeError("the rollout buffer is not full yet; collect a rollout first")
        if not self.generator_ready:
            for key, obs in self.observations.items():
                self.observations[key] = self.swap_and_flatten(obs)
            for name in ["actions", "values", "log_probs", "advantages", "returns"]:
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        # after swap_and_flatten, env e's steps are the rows e * buffer_size ... + buffer_size - 1
        columns = np.random.permutation(self.n_envs)
        indices = (columns[:, None] * self.buffer_size + np.arange(self.buffer_size)).ravel()
        total = self.buffer_size * self.n_envs
        batch_size = total if batch_size is None else batch_size
        for start in range(0, total, batch_size):
            yield self._get_samples(indices[start : start + batch_size])


class EpisodeRolloutBuffer(EpisodeMinibatches, TokenCreditBuffer, DictRolloutBuffer):
    """Token-credit buffer yielding minibatches of consecutive steps of randomly ordered envs.

    Takes the arguments of :class:`~stable_baselines3.common.buffers.DictRolloutBuffer`.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym.agents import TokenPPO
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = TokenPPO("CausalLMPolicy", env, n_envs=2, n_steps=4, batch_size=4)
        >>> type(model.rollout_buffer).__name__
        'EpisodeRolloutBuffer'
    """
