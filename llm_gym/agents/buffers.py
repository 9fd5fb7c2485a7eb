"""A rollout buffer whose minibatches hold whole stretches of episodes.

Holds :class:`EpisodeRolloutBuffer`. Stock SB3 shuffles single transitions into
minibatches, so each transition of an episode needs its own forward over its
window. Here a minibatch is made of whole environment columns (consecutive steps
of one environment, i.e. whole episodes when ``n_steps`` is a multiple of the
completion length), in a random column order every epoch. With
:class:`~llm_gym.agents.CausalLMPolicy`, whose update forward shares one window
forward among the steps of an episode, a minibatch then costs about one forward
per episode instead of one per token.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples

__all__ = ["EpisodeRolloutBuffer"]


class EpisodeRolloutBuffer(DictRolloutBuffer):
    """DictRolloutBuffer yielding minibatches of consecutive steps of randomly ordered envs.

    Takes the arguments of :class:`~stable_baselines3.common.buffers.DictRolloutBuffer`.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym.agents import TokenPPO
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = TokenPPO("CausalLMPolicy", env, n_envs=2, n_steps=4, batch_size=4)
        >>> type(model.rollout_buffer).__name__
        'EpisodeRolloutBuffer'
    """

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
