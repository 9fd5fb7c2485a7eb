"""The native vector form of LLMCompletion-v0: one batched reward-model forward per step."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from llm_gym.envs.completion import LLMCompletionEnv, score_completions
from llm_gym.envs.groups import PromptGroups
from llm_gym.envs.protocol import (
    ATTENTION_METADATA,
    ATTENTION_OPTION,
    GROUP,
    GROUP_EPISODE,
    attention_requests,
    warn_unscored,
)
from llm_gym.envs.task import CompletionTask, check_int, make_task
from llm_gym.rewards import AttentionRequest, CompletionBatch

__all__ = ["LLMCompletionVectorEnv"]


class LLMCompletionVectorEnv(VectorEnv):
    """``num_envs`` LLMCompletion episodes side by side, sharing one tokenizer and RM.

    Every episode that ends in a step is scored in ONE batched reward-model
    forward. Autoreset is ``NEXT_STEP``: a sub-environment that ended is reset on
    the following ``step`` call (its action is ignored, reward 0). ``reset(seed=s)``
    seeds sub-environment i with ``s + i``, so episodes equal those of
    ``SyncVectorEnv`` over single environments given the same seed and actions.
    Reset options ask for reward-model attention as for the single environment
    (:mod:`llm_gym.envs.protocol`); the requests of the last ``reset`` call also
    hold for the episodes the vector env starts by itself.

    ``group_size=k`` makes consecutive groups of k sub-environments share each
    episode's prompt and horizon (for group methods such as RLOO and GRPO;
    :class:`~llm_gym.envs.groups.PromptGroups`): drawn once per group from a generator
    seeded with the seed of the group's first member, and named in infos by
    ``"group"`` and ``"group_episode"``. Members run independently: one that ends
    early (EOS) starts its group's next episode at once, with the group's next prompt.
    Without ``group_size`` nothing of this happens.

    Takes the same options as :class:`LLMCompletionEnv`. ``max_episode_steps`` (from
    ``gym.make_vec``) cuts episodes as gymnasium's ``TimeLimit`` does in sync mode:
    ``truncated``, not scored (a warning says so; set ``max_new_tokens`` instead).

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = gym.make_vec("LLMCompletion-v0", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs["input_ids"].shape
        (4, 72)
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        group_size: int | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        num_envs = check_int("num_envs", num_envs, 1)
        if group_size is not None:
            group_size = check_int("group_size", group_size, 1)
            if num_envs % group_size:
                raise ValueError(
                    f"num_envs={num_envs} is not a multiple of group_size={group_size}; "
                    "expected groups of equal size"
                )
        time_limit = kwargs.pop("max_episode_steps", None)
        if time_limit is not None:
            time_limit = check_int("max_episode_steps", time_limit, 1)
        self.time_limit = time_limit
        task_options = {k: v for k, v in kwargs.items() if k != "completion_task"}
        self.task: CompletionTask = kwargs.get("completion_task") or make_task(**task_options)
        self.num_envs = int(num_envs)
        self.envs = [
            LLMCompletionEnv(completion_task=self.task, render_mode=render_mode)
            for _ in range(self.num_envs)
        ]
        self.render_mode = render_mode
        self.metadata = {
            **type(self).metadata,
            ATTENTION_METADATA: self.envs[0].metadata[ATTENTION_METADATA],
        }
        # every sub-environment's window is a row of these: an observation is one copy each
        windows = [env.window for env in self.envs]
        self._window_ids = np.stack([ids for ids, _ in windows])
        self._window_mask = np.stack([mask for _, mask in windows])
        for i, env in enumerate(self.envs):
            env.use_window_storage(self._window_ids[i], self._window_mask[i])
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._attention_requests: tuple[AttentionRequest, ...] = ()
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self.group_size = group_size
        self._groups = (
            None
            if group_size is None
            else PromptGroups(num_envs, group_size, len(self.task.prompts), self.task.new_tokens)
        )

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
        if mask is not None and np.shape(mask) != (self.num_envs,):
            raise ValueError(
                f"options['reset_mask'] must have shape ({self.num_envs},), got {np.shape(mask)}"
            )
        requests = attention_requests(options)
        sub_options = {k: v for k, v in (options or {}).items() if k != "reset_mask"}
        if self._groups is not None and mask is None:
            if seed is not None:
                self._groups.reseed(seeds)
            self._groups.restart()
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            if mask is not None and not mask[i]:
                continue
            if self._groups is not None and mask is not None:
                self._groups.advance(i)
            _, info = env.reset(seed=seeds[i], options=self._member_options(i, sub_options))
            infos = self._add_info(infos, {**info, **self._group_info(i)}, i)
            self._needs_reset[i] = False
            self._elapsed[i] = 0
        self._attention_requests = requests
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
        # every action is checked, and every ending episode scored, before any sub-environment
        # moves: a bad action or a failing reward model leaves them all as they were
        tokens = {
            i: env.check_action(actions[i])
            for i, env in enumerate(self.envs)
            if not self._needs_reset[i]
        }
        ended = [i for i, token in tokens.items() if self.envs[i].ends_with(token)]
        if ended:
            envs = [self.envs[i] for i in ended]
            batch = CompletionBatch(
                [env.prompt_ids for env in envs],
                [env.pending_completion(tokens[i]) for i, env in zip(ended, envs)],
                self.tokenizer,
            )
            # every request an ending episode was started with, read in one scoring call
            requests = tuple(dict.fromkeys(r for env in envs for r in env.attention_requests))
            scores, attention = score_completions(self.reward_model, batch, requests)
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            if self._needs_reset[i]:
                if self._groups is not None:
                    self._groups.advance(i)
                options = self._member_options(i, self._autoreset_options())
                _, reset_info = env.reset(options=options)
                # as SyncVectorEnv does: the reset's info in this step's infos
                infos = self._add_info(infos, {**reset_info, **self._group_info(i)}, i)
                self._needs_reset[i] = False
                self._elapsed[i] = 0
            else:
                env.append(tokens[i])
                self._elapsed[i] += 1
                if self.time_limit is not None and self._elapsed[i] >= self.time_limit:
                    # gymnasium's TimeLimit, as sync mode applies it: cut, not scored
                    truncated[i] = True
                    self._needs_reset[i] = True
        for k, i in enumerate(ended):
            env = self.envs[i]
            score = float(scores[k])
            rewards[i] = score
            terminated[i] = True
            self._needs_reset[i] = True
            episode_attention = None
            if env.attention_requests and attention is not None:
                episode_attention = {r.key: attention[k][r.key] for r in env.attention_requests}
            info = env.episode_info(score, episode_attention)
            infos = self._add_info(infos, {**info, **self._group_info(i)}, i)
        if (truncated & ~terminated).any():
            warn_unscored(f"LLMCompletionVectorEnv(max_episode_steps={self.time_limit})")
        return self._observations(), rewards, terminated, truncated, infos

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode is None:
            return None
        # the sub-environments share this render mode ("ansi"), so each returns its text
        return tuple(cast(str, env.render()) for env in self.envs)

    def _autoreset_options(self) -> dict[str, Any]:
        return {ATTENTION_OPTION: self._attention_requests} if self._attention_requests else {}

    def _member_options(self, i: int, options: dict[str, Any]) -> dict[str, Any] | None:
        """Reset options of sub-environment ``i``: its group's prompt and horizon, if grouped."""
        if self._groups is None:
            return options or None
        _, _, prompt_index, horizon = self._groups.episode(i)
        return {**options, "prompt_index": prompt_index, "horizon": horizon}

    def _group_info(self, i: int) -> dict[str, int]:
        if self._groups is None:
            return {}
        group, episode, _, _ = self._groups.episode(i)
        return {GROUP: group, GROUP_EPISODE: episode}

    def _observations(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._window_ids.copy(), "attention_mask": self._window_mask.copy()}
