"""The native vector form of LLMCompletion-v0: one batched reward-model forward per step."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from llm_gym.envs.completion import LLMCompletionEnv
from llm_gym.envs.task import CompletionTask, make_task
from llm_gym.rewards import AttentionRequest, CompletionBatch

__all__ = ["LLMCompletionVectorEnv"]


class LLMCompletionVectorEnv(VectorEnv):
    """``num_envs`` LLMCompletion episodes side by side, sharing one tokenizer and RM.

    Every episode that ends in a step is scored in ONE batched reward-model
    forward. Autoreset is ``NEXT_STEP``: a sub-environment that ended is reset on
    the following ``step`` call (its action is ignored, reward 0). ``reset(seed=s)``
    seeds sub-environment i with ``s + i``, so episodes equal those of
    ``SyncVectorEnv`` over single environments given the same seed and actions.

    Takes the same options as :class:`LLMCompletionEnv`.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = gym.make_vec("LLMCompletion-v0", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs["input_ids"].shape
        (4, 72)
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, *, render_mode: str | None = None, **kwargs: Any) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        kwargs.pop("max_episode_steps", None)  # the horizon is the task's max_new_tokens
        task_options = {k: v for k, v in kwargs.items() if k != "completion_task"}
        self.task: CompletionTask = kwargs.get("completion_task") or make_task(**task_options)
        self.num_envs = int(num_envs)
        self.envs = [
            LLMCompletionEnv(completion_task=self.task, render_mode=render_mode)
            for _ in range(self.num_envs)
        ]
        self.render_mode = render_mode
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.attention_request: AttentionRequest | None = None
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer

    @property
    def reward_model(self) -> Any:
        return self.task.reward_model

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for {self.num_envs} environments")
            seeds = list(seed)
        mask = None if options is None else options.get("reset_mask")
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            if mask is not None and not mask[i]:
                continue
            _, info = env.reset(seed=seeds[i])
            infos = self._add_info(infos, info, i)
            self._needs_reset[i] = False
        return self._observations(), infos

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"expected {self.num_envs} actions of shape ({self.num_envs},), got shape {actions.shape}"
            )
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        ended = []
        for i, env in enumerate(self.envs):
            if self._needs_reset[i]:
                env.reset()
                self._needs_reset[i] = False
            elif env.advance(actions[i]):
                ended.append(i)
        infos: dict[str, Any] = {}
        if ended:
            for i, score, attention in zip(ended, *self._score(ended)):
                rewards[i] = score
                terminated[i] = True
                self._needs_reset[i] = True
                infos = self._add_info(infos, self.envs[i].episode_info(score, attention), i)
        return self._observations(), rewards, terminated, truncated, infos

    def render(self) -> tuple[str | None, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(env.render() for env in self.envs)

    def _score(self, ended: list[int]) -> tuple[list[float], list[np.ndarray | None]]:
        envs = [self.envs[i] for i in ended]
        for env in envs:
            env.attention_request = self.attention_request
        batch = CompletionBatch(
            [env.prompt_ids for env in envs], [env.completion_ids for env in envs], self.tokenizer
        )
        output = self.reward_model(batch, self.attention_request)
        attention = output.attention if output.attention is not None else [None] * len(envs)
        return [float(s) for s in output.scores], list(attention)

    def _observations(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": np.stack([env._input_ids for env in self.envs]),
            "attention_mask": np.stack([env._attention_mask for env in self.envs]),
        }
