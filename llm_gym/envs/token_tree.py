"""TokenTree-v0: a small token MDP (a handful of token ids, a few steps) small enough to solve.

Each episode appends ``horizon`` tokens drawn from ``n_tokens`` ids to a prompt;
the reward is sparse, R on the last step, from a function of the completion's ids
or from a tiny transformer reward model. It follows the same protocol as
``LLMCompletion-v0`` (:mod:`llm_gym.envs.protocol`: attention requests at reset,
``info["rm_attention"]``, ``prompt_ids``, ``completion_ids``, a ``tokenizer``
attribute), so every reward wrapper of
:mod:`llm_gym.wrappers` applies unchanged, and :mod:`llm_gym.theory` can
enumerate its tree exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from llm_gym.envs.completion import score_completions
from llm_gym.envs.protocol import (
    ATTENTION_METADATA,
    COMPLETION_IDS,
    PROMPT_IDS,
    RM_ATTENTION,
    SCORE,
    TEXT,
    TOKEN_REWARDS,
    EpisodeInfo,
    attention_requests,
)
from llm_gym.envs.token_tree_models import (
    SequenceRewardModel,
    TokenTreeTokenizer,
    tiny_reward_model,
)
from llm_gym.rewards import AttentionRequest, CompletionBatch, RewardModel

__all__ = ["TokenTreeEnv"]

_MAX_TOKENS, _MAX_HORIZON = 8, 8


class TokenTreeEnv(gym.Env[Any, int]):
    """Write ``horizon`` tokens from ``n_tokens`` ids; R at the last step.

    Observations: ``"ids"`` gives the ``LLMCompletion-v0`` layout
    (``{"input_ids", "attention_mask"}``, left-padded, newest token last);
    ``"onehot"`` gives a flat float32 Box for stock MlpPolicy: the prompt's index
    one-hot (only with several prompts), then one block of ``n_tokens`` per
    completion position, all zeros until that position is written.

    Args:
        n_tokens: how many token ids an action can append (2 to 8).
        horizon: completion length (2 to 8); every episode has exactly this many steps.
        reward: ``fn(completion_ids) -> float``, a
            :class:`~llm_gym.rewards.RewardModel`, or ``"transformer"`` (a random
            tiny GPT-2 reward model seeded by ``reward_seed``; supports ABC).
        prompts: prompt token ids, one sequence per prompt (ids in
            ``[0, n_tokens]``; ``n_tokens`` is ``<bos>``). Default: ``[[<bos>]]``.
            With several, reset draws one with the env's seeded ``np_random``;
            ``reset(options={"prompt": ids})`` forces one.
        observation: ``"ids"`` or ``"onehot"``.
        reward_seed: seed of the ``"transformer"`` reward model.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = gym.make("TokenTree-v0", n_tokens=3, horizon=2,
        ...                reward=lambda ids: float(ids.sum()), observation="onehot")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (6,)
        >>> _ = env.step(2)
        >>> obs, reward, terminated, truncated, info = env.step(1)
        >>> reward, terminated, info["completion_ids"]
        (3.0, True, [2, 1])
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        n_tokens: int = 4,
        horizon: int = 4,
        reward: Callable[[np.ndarray], float] | RewardModel | str = "transformer",
        prompts: Sequence[Sequence[int]] | None = None,
        observation: str = "ids",
        reward_seed: int = 0,
        render_mode: str | None = None,
    ) -> None:
        if not 2 <= int(n_tokens) <= _MAX_TOKENS:
            raise ValueError(f"n_tokens must be in [2, {_MAX_TOKENS}], got {n_tokens}")
        if not 2 <= int(horizon) <= _MAX_HORIZON:
            raise ValueError(f"horizon must be in [2, {_MAX_HORIZON}], got {horizon}")
        if observation not in ("ids", "onehot"):
            raise ValueError(f"observation must be 'ids' or 'onehot', got {observation!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be 'ansi' or None, got {render_mode!r}")
        self.n_tokens, self.horizon = int(n_tokens), int(horizon)
        self.tokenizer = TokenTreeTokenizer(self.n_tokens)
        self.reward_model = self._make_reward_model(reward, reward_seed)
        self.prompts = self._check_prompts(prompts)
        self.observation, self.render_mode = observation, render_mode
        self.metadata = {
            **type(self).metadata,
            ATTENTION_METADATA: bool(self.reward_model.supports_attention),
        }
        self._attention_requests: tuple[AttentionRequest, ...] = ()
        # gymnasium types Discrete as a space of np.int64; the env takes any int token id
        self.action_space = spaces.Discrete(self.n_tokens)  # type: ignore[assignment]
        vocab = len(self.tokenizer)
        if observation == "ids":
            length = max(len(p) for p in self.prompts) + self.horizon
            self.observation_space = spaces.Dict(
                {
                    "input_ids": spaces.Box(0, vocab - 1, shape=(length,), dtype=np.int64),
                    "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int64),
                }
            )
        else:
            size = self._prompt_block + self.horizon * self.n_tokens
            self.observation_space = spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)
        self._prompt_index = 0
        self._completion: list[int] = []
        self._done = True

    # ------------------------------------------------------------ properties
    @property
    def prompt_ids(self) -> np.ndarray:
        return np.asarray(self.prompts[self._prompt_index], dtype=np.int64)

    @property
    def completion_ids(self) -> np.ndarray:
        return np.asarray(self._completion, dtype=np.int64)

    @property
    def _prompt_block(self) -> int:
        return len(self.prompts) if len(self.prompts) > 1 else 0

    # ------------------------------------------------------------------- API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        requests = attention_requests(options)
        if requests and not self.metadata[ATTENTION_METADATA]:
            raise gym.error.Error(
                f"reset asked for reward-model attention, but {self.reward_model!r} cannot "
                "return attention; use reward='transformer' or a transformer RewardModel"
            )
        forced = None
        if options and "prompt" in options:
            wanted = [int(i) for i in options["prompt"]]
            if wanted not in self.prompts:
                raise ValueError(f"prompt {wanted} is not one of the env's prompts {self.prompts}")
            forced = self.prompts.index(wanted)
        super().reset(seed=seed)
        self._prompt_index = int(self.np_random.integers(len(self.prompts)))
        if forced is not None:
            self._prompt_index = forced
        self._attention_requests = requests
        self._completion, self._done = [], False
        return self._observation(), {PROMPT_IDS: self.prompt_ids.tolist()}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise gym.error.ResetNeeded("step() called after the episode ended; call reset() first")
        if not self.action_space.contains(action):
            raise ValueError(
                f"action {action!r} is not a token id of the tree; expected an int in "
                f"[0, {self.n_tokens})"
            )
        self._completion.append(int(action))
        if len(self._completion) < self.horizon:
            return self._observation(), 0.0, False, False, {}
        self._done = True
        batch = CompletionBatch([self.prompt_ids], [self.completion_ids], self.tokenizer)
        scores, attention = score_completions(self.reward_model, batch, self._attention_requests)
        score = float(scores[0])
        info = self._episode_info(score, None if attention is None else attention[0])
        return self._observation(), score, True, False, cast(dict[str, Any], info)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        prompt = self.tokenizer.decode(self.prompt_ids.tolist())
        return f"{prompt} \u2502 {self.tokenizer.decode(self._completion)}\n"

    # --------------------------------------------------------------- helpers
    def _episode_info(self, score: float, attention: dict[str, list[float]] | None) -> EpisodeInfo:
        token_rewards = [0.0] * self.horizon
        token_rewards[-1] = score
        info: EpisodeInfo = {
            PROMPT_IDS: self.prompt_ids.tolist(),
            COMPLETION_IDS: list(self._completion),
            SCORE: score,
            TEXT: self.tokenizer.decode(self._completion),
            TOKEN_REWARDS: token_rewards,
        }
        if attention is not None:
            info[RM_ATTENTION] = attention
        return info

    def _observation(self) -> Any:
        if self.observation == "onehot":
            obs = np.zeros(cast(tuple[int], self.observation_space.shape), dtype=np.float32)
            if self._prompt_block:
                obs[self._prompt_index] = 1.0
            for t, token in enumerate(self._completion):
                obs[self._prompt_block + t * self.n_tokens + token] = 1.0
            return obs
        ids_space = cast(spaces.Dict, self.observation_space)["input_ids"]
        length = cast(spaces.Box, ids_space).shape[0]
        ids = self.prompt_ids.tolist() + self._completion
        input_ids = np.full(length, self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros(length, dtype=np.int64)
        input_ids[length - len(ids) :] = ids
        mask[length - len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def _make_reward_model(self, reward: Any, seed: int) -> RewardModel:
        if isinstance(reward, RewardModel):
            return reward
        if reward == "transformer":
            return tiny_reward_model(self.n_tokens, self.horizon, seed=seed)
        if callable(reward):
            return SequenceRewardModel(reward)
        raise ValueError(
            f"reward must be a function of the completion ids, a RewardModel or 'transformer', "
            f"got {reward!r}"
        )

    def _check_prompts(self, prompts: Sequence[Sequence[int]] | None) -> list[list[int]]:
        if prompts is None:
            return [[self.tokenizer.bos_token_id]]
        checked = [[int(i) for i in p] for p in prompts]
        bad = [p for p in checked if not p or not all(0 <= i <= self.n_tokens for i in p)]
        if not checked or bad:
            raise ValueError(
                f"prompts must be non-empty sequences of ids in [0, {self.n_tokens}] "
                f"({self.n_tokens} is <bos>), got {bad[0] if bad else prompts!r}"
            )
        return checked
