"""LLMCompletion-v0: text generation as a Gymnasium environment, one token per step."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

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
from llm_gym.envs.task import CompletionTask, make_task
from llm_gym.rewards import AttentionRequest, CompletionBatch, RewardModel

__all__ = ["LLMCompletionEnv", "score_completions"]


class LLMCompletionEnv(gym.Env[dict[str, np.ndarray], int]):
    """One episode writes one completion of a prompt; each step appends one token.

    Observations are ``{"input_ids", "attention_mask"}`` int64 arrays of length
    ``max_prompt_tokens + max_new_tokens``, left-padded so the newest token is
    last. The reward is sparse: 0.0 on every step and the reward model's score R
    on the last. The episode terminates on EOS (when ``eos_ends_episode``) or when
    the completion reaches its horizon (the horizon is the length that gets scored:
    a time limit such as ``gym.make(..., max_episode_steps=n)`` cuts a completion
    without scoring it, which the credit wrappers and TokenPPO warn about; set
    ``max_new_tokens`` instead). The last step's info holds
    ``prompt_ids``, ``completion_ids``, ``score``, ``text`` and ``token_rewards``
    (zeros with R on the last token for this bare environment), and the reward
    model's attention when reset's options asked for it (the protocol of
    :mod:`llm_gym.envs.protocol`).

    Args:
        task: preset of :data:`llm_gym.envs.TASK_PRESETS` (``"default"``: the
            embedded world's credit-limited task, exactly 64 new tokens; ``"paper"``:
            8-16 new tokens) that fills the options left as ``None``.
        prompts: list of prompt strings, the name of a bundled prompt set, or a file
            of prompts (a .json list of strings, or one prompt per line).
        tokenizer: tokenizer object, hub id or folder (default: the embedded world's).
        reward_model: a :class:`~llm_gym.rewards.RewardModel`, a bundled RM name
            (``"default"``, ``"deep"``), a hub id or folder of a sequence
            classifier, or a function ``text -> float``.
        reward_model_kwargs: options for :class:`~llm_gym.rewards.HFRewardModel`
            (``score``, ``pooling``, ``tokenizer``) or FunctionRewardModel (``on``).
        max_prompt_tokens: longest prompt; sets the observation length with
            ``max_new_tokens``.
        max_new_tokens: the horizon: an int, or a ``(min, max)`` range sampled
            uniformly per episode (as in the ABC paper).
        min_new_tokens: EOS before this many tokens does not end the episode
            (default: the task preset's, else 0; the ``"default"`` task keeps all 64).
        eos_ends_episode: whether emitting EOS terminates the episode.
        truncate_prompts: keep the last ``max_prompt_tokens`` tokens of longer
            prompts instead of raising.
        device: where the reward model runs; ``"auto"`` is CUDA when available.
        trust_remote_code: passed to ``from_pretrained``; off by default.
        vocab_size: size of the action space when the policy's output layer is
            wider than ``len(tokenizer)`` (default: ``len(tokenizer)``).
        render_mode: ``"ansi"`` returns prompt and completion text.
        completion_task: an already resolved :class:`~llm_gym.envs.CompletionTask`
            to share (the vector env passes one); the other options are then ignored.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = gym.make("LLMCompletion-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs["input_ids"].shape
        (72,)
        >>> terminated = False
        >>> while not terminated:
        ...     obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> sorted(info)
        ['completion_ids', 'prompt_ids', 'score', 'text', 'token_rewards']
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        task: str | None = "default",
        *,
        prompts: str | os.PathLike[str] | Sequence[str] | None = None,
        tokenizer: str | Any | None = None,
        reward_model: str | RewardModel | Callable[[str], float] | None = None,
        reward_model_kwargs: dict[str, Any] | None = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | tuple[int, int] | None = None,
        min_new_tokens: int | None = None,
        eos_ends_episode: bool = True,
        truncate_prompts: bool = False,
        device: str = "auto",
        trust_remote_code: bool = False,
        vocab_size: int | None = None,
        render_mode: str | None = None,
        completion_task: CompletionTask | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.task = completion_task or make_task(
            task,
            prompts=prompts,
            tokenizer=tokenizer,
            reward_model=reward_model,
            reward_model_kwargs=reward_model_kwargs,
            max_prompt_tokens=max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_ends_episode=eos_ends_episode,
            truncate_prompts=truncate_prompts,
            device=device,
            trust_remote_code=trust_remote_code,
            vocab_size=vocab_size,
        )
        self.render_mode = render_mode
        self.metadata = {
            **type(self).metadata,
            ATTENTION_METADATA: bool(self.task.reward_model.supports_attention),
        }
        length = self.task.max_length
        vocab = self.task.vocab_size
        # gymnasium types Discrete as a space of np.int64; the env takes any int token id
        self.action_space = spaces.Discrete(vocab)  # type: ignore[assignment]
        self.observation_space = spaces.Dict(  # type: ignore[assignment]
            {
                "input_ids": spaces.Box(0, vocab - 1, shape=(length,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int64),
            }
        )
        self._attention_requests: tuple[AttentionRequest, ...] = ()
        self._input_ids = np.full(length, self.task.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros(length, dtype=np.int64)
        self._prompt = np.zeros(0, dtype=np.int64)
        self._completion: list[int] = []
        self._horizon = 0
        self._done = True
        self._started = False

    # ------------------------------------------------------------ properties
    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer

    @property
    def reward_model(self) -> RewardModel:
        return self.task.reward_model

    @property
    def prompt_ids(self) -> np.ndarray:
        return self._prompt.copy()

    @property
    def completion_ids(self) -> np.ndarray:
        return np.asarray(self._completion, dtype=np.int64)

    @property
    def horizon(self) -> int:
        """This episode's number of new tokens unless EOS comes first."""
        return self._horizon

    @property
    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """The current observation's ``(input_ids, attention_mask)``, as read-only views."""
        ids, mask = self._input_ids.view(), self._attention_mask.view()
        ids.flags.writeable = mask.flags.writeable = False
        return ids, mask

    @property
    def attention_requests(self) -> tuple[AttentionRequest, ...]:
        """The attention requests of this episode (from reset's options)."""
        return self._attention_requests

    # ------------------------------------------------------------------- API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw a prompt and this episode's horizon.

        Options: ``"prompt"`` (a text) or ``"prompt_index"`` (an index into the task's
        prompts) forces the prompt, ``"horizon"`` this episode's number of new tokens
        (within the task's range); ``"rm_attention"`` (a sequence of
        :class:`~llm_gym.rewards.AttentionRequest`) asks for the reward model's
        attention in the last step's info. The generator draws as it does without
        them, so forcing changes nothing else.
        """
        requests = attention_requests(options)
        if requests and not self.metadata[ATTENTION_METADATA]:
            raise gym.error.Error(
                f"reset asked for reward-model attention, but {self.reward_model!r} cannot return "
                "attention; ABC needs a transformer reward model such as HFRewardModel"
            )
        options = options or {}
        forced = None
        if "prompt" in options:
            forced = self._encode_prompt(options["prompt"])
        if "prompt_index" in options:
            forced = self.task.prompts[
                self._check_choice(
                    "prompt_index", options["prompt_index"], 0, len(self.task.prompts) - 1
                )
            ]
        low, high = self.task.new_tokens
        horizon = None
        if "horizon" in options:
            horizon = self._check_choice("horizon", options["horizon"], low, high)
        super().reset(seed=seed)
        index = int(self.np_random.integers(len(self.task.prompts)))
        self._horizon = int(self.np_random.integers(low, high + 1))
        if horizon is not None:
            self._horizon = horizon
        self._started = True
        prompt = self.task.prompts[index] if forced is None else forced
        self._attention_requests = requests
        self._prompt = prompt
        self._completion = []
        self._done = False
        self._input_ids.fill(self.task.pad_token_id)
        self._attention_mask.fill(0)
        n = len(prompt)
        self._input_ids[-n:] = prompt
        self._attention_mask[-n:] = 1
        return self._observation(), {PROMPT_IDS: prompt.tolist()}

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        token = self.check_action(action)
        if not self.ends_with(token):
            self.append(token)
            return self._observation(), 0.0, False, False, {}
        # scored before the token is appended: a failing reward model leaves the env as it was
        batch = CompletionBatch([self._prompt], [self.pending_completion(token)], self.tokenizer)
        scores, attention = score_completions(self.reward_model, batch, self._attention_requests)
        self.append(token)
        score = float(scores[0])
        info = self.episode_info(score, None if attention is None else attention[0])
        return self._observation(), score, True, False, cast(dict[str, Any], info)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        prompt = self.tokenizer.decode(self._prompt.tolist())
        completion = self.tokenizer.decode(self._completion)
        return f"{prompt} \u2502 {completion}\n"

    # ------------------------------------------------- pieces the vector env reuses
    def use_window_storage(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> None:
        """Keep the observation window in the given int64 arrays from now on (their content
        becomes the current window's).

        The vector env passes rows of its batched arrays, so that its observation is
        one copy of them instead of a stack of every sub-environment's window.
        """
        length = self._input_ids.shape
        for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            if array.shape != length or array.dtype != np.int64:
                raise ValueError(
                    f"{name} storage must be an int64 array of shape {length}, got "
                    f"{array.dtype} {array.shape}"
                )
        input_ids[:] = self._input_ids
        attention_mask[:] = self._attention_mask
        self._input_ids, self._attention_mask = input_ids, attention_mask

    def check_action(self, action: Any) -> int:
        """``action`` as a token id; ResetNeeded or a ValueError naming it when it cannot be taken."""
        if self._done:
            raise gym.error.ResetNeeded(
                "step() called after the episode ended; call reset() before stepping again"
                if self._started
                else "step() called before reset(); call reset() to start an episode"
            )
        try:
            token = int(action)
            valid = token == action and 0 <= token < self.task.vocab_size
        except (TypeError, ValueError):
            valid = False
        if not valid:
            shown = int(action) if isinstance(action, np.integer) else action
            raise ValueError(
                f"action {shown!r} is not a token id in the action space "
                f"Discrete({self.task.vocab_size}); expected an int in [0, {self.task.vocab_size})"
            )
        return token

    def ends_with(self, token: int) -> bool:
        """Whether appending ``token`` (a checked id) ends the episode."""
        length = len(self._completion) + 1
        eos = self.task.eos_token_id
        return length >= self._horizon or (
            eos is not None and token == eos and length >= self.task.min_new_tokens
        )

    def pending_completion(self, token: int) -> np.ndarray:
        """The completion's ids with ``token`` appended, without appending it."""
        return np.asarray([*self._completion, token], dtype=np.int64)

    def append(self, token: int) -> None:
        """Append a checked token id to the completion and the observation window."""
        ended = self.ends_with(token)
        self._completion.append(token)
        self._input_ids[:-1] = self._input_ids[1:]
        self._input_ids[-1] = token
        self._attention_mask[:-1] = self._attention_mask[1:]
        self._attention_mask[-1] = 1
        self._done = ended

    def episode_info(
        self, score: float, attention: dict[str, list[float]] | None = None
    ) -> EpisodeInfo:
        """The last step's info (fresh objects every call); ``attention`` by request key."""
        token_rewards = [0.0] * len(self._completion)
        token_rewards[-1] = score
        info: EpisodeInfo = {
            PROMPT_IDS: self._prompt.tolist(),
            COMPLETION_IDS: list(self._completion),
            SCORE: score,
            TEXT: self.tokenizer.decode(self._completion),
            TOKEN_REWARDS: token_rewards,
        }
        if attention is not None:
            info[RM_ATTENTION] = attention
        return info

    # --------------------------------------------------------------- helpers
    def _observation(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    @staticmethod
    def _check_choice(name: str, value: Any, low: int, high: int) -> int:
        if (
            not isinstance(value, (int, np.integer))
            or isinstance(value, bool)
            or not low <= value <= high
        ):
            raise ValueError(f"options[{name!r}] must be an int in [{low}, {high}], got {value!r}")
        return int(value)

    def _encode_prompt(self, text: str) -> np.ndarray:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not 1 <= len(ids) <= self.task.max_prompt_tokens:
            raise ValueError(
                f"prompt {text!r} has {len(ids)} tokens; expected 1 to max_prompt_tokens="
                f"{self.task.max_prompt_tokens}"
            )
        return np.asarray(ids, dtype=np.int64)


def score_completions(
    reward_model: RewardModel, batch: CompletionBatch, requests: tuple[AttentionRequest, ...]
) -> tuple[np.ndarray, list[dict[str, list[float]]] | None]:
    """Scores of ``batch`` and, per pair, each request's attention weights by request key.

    The first request is read in the forward that computes the scores; each
    further request costs one more forward. Without requests the attention is None.
    """
    if not requests:
        return reward_model(batch).scores, None
    outputs = [reward_model(batch, request) for request in requests]
    # RewardModel.__call__ refuses an output without the attention that was asked for
    attention = [
        {
            request.key: np.asarray(
                cast(list[np.ndarray], output.attention)[i], dtype=np.float64
            ).tolist()
            for request, output in zip(requests, outputs, strict=True)
        }
        for i in range(len(batch))
    ]
    return outputs[0].scores, attention
