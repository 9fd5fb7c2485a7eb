"""What an LLMCompletion environment is made of: tokenizer, prompts, reward model, lengths.

:func:`make_task` resolves user options (names, paths, objects) once, so a
vector environment's sub-environments can share one tokenizer and one reward
model.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm_gym import assets
from llm_gym.rewards import FunctionRewardModel, HFRewardModel, RewardModel
from llm_gym.rewards.loading import load_tokenizer, model_positions, resolve_device

__all__ = [
    "TASK_PRESETS",
    "CompletionTask",
    "check_bool",
    "check_int",
    "check_new_tokens",
    "load_prompt_texts",
    "make_task",
    "task_policy_path",
]

#: Named presets of the embedded world: prompt set and completion lengths.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    # credit-limited: 64-token completions whose score hangs on one or two rare words
    # (at 32 tokens PPO's critic, with GAE lambda 0.95, already assigns credit as well
    # as an oracle does); EOS does not end them early (else a KL-penalised policy
    # learns to stop talking)
    "default": {
        "prompts": "reviews",
        "max_prompt_tokens": 8,
        "max_new_tokens": 64,
        "min_new_tokens": 64,
    },
    # the ABC paper's IMDb setting: 2-8 prompt tokens, 8-16 new tokens
    "paper": {
        "prompts": "reviews",
        "max_prompt_tokens": 8,
        "max_new_tokens": (8, 16),
        "min_new_tokens": 8,
    },
    # the credit benchmark's other structures (llm_gym.assets.rules), each scored by a reward
    # model trained on its rule, at the default task's 64 tokens:
    # one decisive early word (the first character named), after prompts that name none
    "decisive": {
        "prompts": "openings",
        "max_prompt_tokens": 8,
        "max_new_tokens": 64,
        "min_new_tokens": 64,
        "reward_model": "decisive",
    },
    # every word a small, equal share (short words against long ones)
    "diffuse": {
        "prompts": "reviews",
        "max_prompt_tokens": 8,
        "max_new_tokens": 64,
        "min_new_tokens": 64,
        "reward_model": "diffuse",
    },
    # pairs of words (a character and the place it is in) carry the credit, not single words
    "interaction": {
        "prompts": "reviews",
        "max_prompt_tokens": 8,
        "max_new_tokens": 64,
        "min_new_tokens": 64,
        "reward_model": "interaction",
    },
    # the ABC paper's longest setting: sentiment at 140-160 new tokens, with the world's LM and
    # sentiment RM rebuilt at 256 positions ("policy" names the bundled LM the task needs; the
    # env itself reads only the reward model)
    "long": {
        "prompts": "reviews",
        "max_prompt_tokens": 8,
        "max_new_tokens": (140, 160),
        "min_new_tokens": 140,
        "reward_model": "long",
        "policy": "long",
    },
}


def task_policy_path(task: str) -> str | None:
    """Folder of the bundled LM a task preset needs, or ``None`` for the embedded 128-position LM.

    Only ``"long"`` needs another (its 168 tokens pass the default LM's 128 positions).

    >>> task_policy_path("default") is None, Path(task_policy_path("long")).name
    (True, 'lm_long')
    """
    if task not in TASK_PRESETS:
        raise ValueError(f"task must be one of {sorted(TASK_PRESETS)}, got {task!r}")
    name = TASK_PRESETS[task].get("policy")
    return None if name is None else assets.policy_path(str(name))


@dataclass
class CompletionTask:
    """Resolved, shareable parts of an LLMCompletion environment."""

    tokenizer: Any
    reward_model: RewardModel
    prompts: list[np.ndarray]
    prompt_texts: list[str]
    max_prompt_tokens: int
    new_tokens: tuple[int, int]
    min_new_tokens: int
    eos_token_id: int | None
    pad_token_id: int
    vocab_size: int

    @property
    def max_length(self) -> int:
        return self.max_prompt_tokens + self.new_tokens[1]


def _resolve_tokenizer(tokenizer: str | Any | None, trust_remote_code: bool) -> Any:
    if tokenizer is None:
        return load_tokenizer(str(assets.TOKENIZER_DIR))
    if isinstance(tokenizer, str):
        return load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    return tokenizer


def _resolve_reward_model(
    reward_model: str | RewardModel | Callable[[str], float],
    reward_model_kwargs: dict[str, Any],
    device: str,
    trust_remote_code: bool,
) -> RewardModel:
    if isinstance(reward_model, RewardModel):
        return reward_model
    if isinstance(reward_model, str):
        if reward_model in assets.REWARD_MODELS:
            reward_model = assets.reward_model_path(reward_model)
        return HFRewardModel(
            reward_model, device=device, trust_remote_code=trust_remote_code, **reward_model_kwargs
        )
    if callable(reward_model):
        return FunctionRewardModel(reward_model, **reward_model_kwargs)
    raise TypeError(
        f"reward_model must be a name of a bundled reward model {sorted(assets.REWARD_MODELS)}, "
        f"a hub id or folder, a RewardModel, or a function of the text; got {type(reward_model).__name__}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int if it is an integer >= ``low``, else a ValueError naming ``name``."""
    if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool; anything but a bool (or numpy bool) is an error naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_new_tokens(max_new_tokens: Any) -> tuple[int, int]:
    """``max_new_tokens`` as a ``(min, max)`` range, or a ValueError naming the value.

    >>> check_new_tokens(8), check_new_tokens((8, 16))
    ((8, 8), (8, 16))
    """
    expected = "a positive int or a (min, max) pair of ints with 1 <= min <= max"
    if _is_int(max_new_tokens):
        new_tokens = (int(max_new_tokens), int(max_new_tokens))
    elif (
        isinstance(max_new_tokens, (tuple, list))
        and len(max_new_tokens) == 2
        and all(_is_int(v) for v in max_new_tokens)
    ):
        new_tokens = (int(max_new_tokens[0]), int(max_new_tokens[1]))
    else:
        raise ValueError(f"max_new_tokens must be {expected}, got {max_new_tokens!r}")
    if not 1 <= new_tokens[0] <= new_tokens[1]:
        raise ValueError(f"max_new_tokens must be {expected}, got {max_new_tokens!r}")
    return new_tokens


def _resolve_lengths(max_new_tokens: Any, min_new_tokens: int) -> tuple[tuple[int, int], int]:
    new_tokens = check_new_tokens(max_new_tokens)
    if not _is_int(min_new_tokens) or not 0 <= min_new_tokens <= new_tokens[0]:
        raise ValueError(
            f"min_new_tokens must be an int in [0, {new_tokens[0]}] (the shortest horizon), "
            f"got {min_new_tokens!r}"
        )
    return new_tokens, int(min_new_tokens)


def _check_positions(reward_model: RewardModel, tokenizer: Any, length: int) -> None:
    """Refuse windows longer than a reward model reading the env's ids can take."""
    if not isinstance(reward_model, HFRewardModel) or not reward_model.uses_env_ids(tokenizer):
        return  # an RM with its own tokenizer: its token count is known only per text
    positions = model_positions(reward_model.model.config)
    special = 2 if reward_model.pooling == "first" else 0  # [CLS] ... [SEP]
    if positions is not None and length + special > positions:
        raise ValueError(
            f"prompts and completions take up to {length} tokens "
            f"(max_prompt_tokens + max_new_tokens{' + 2 special tokens' if special else ''}), "
            f"more than the {positions} positions of the reward model {reward_model!r}; lower "
            "max_new_tokens or max_prompt_tokens, or use a reward model with more positions"
        )


def load_prompt_texts(prompts: str | os.PathLike[str]) -> list[str]:
    """A bundled prompt set by name, or a file of prompts.

    A ``.json`` file holds a list of strings; any other file holds one prompt per
    line (blank lines skipped).

    >>> load_prompt_texts("reviews")[:2]
    ['then a family meets a river in the', 'a student travels to a village']
    """
    name = str(prompts)
    if name in assets.PROMPT_SETS:
        return assets.load_prompts(name)
    path = Path(name)
    if not path.is_file():
        raise ValueError(
            f"prompts {name!r} is neither a bundled prompt set {sorted(assets.PROMPT_SETS)} "
            "nor a file; expected a set name, a .json list of strings or a text file with one "
            "prompt per line"
        )
    if path.suffix == ".json":
        texts = json.loads(path.read_text())
        if not isinstance(texts, list):
            raise ValueError(
                f"{path} holds a {type(texts).__name__}; expected a JSON list of prompt strings"
            )
        return texts
    return [line for line in path.read_text().splitlines() if line.strip()]


def _tokenize_prompts(
    prompts: str | os.PathLike[str] | Sequence[str],
    tokenizer: Any,
    max_prompt_tokens: int,
    truncate_prompts: bool,
) -> tuple[list[np.ndarray], list[str]]:
    if isinstance(prompts, (str, os.PathLike)):
        prompts = load_prompt_texts(prompts)
    if not isinstance(prompts, Sequence):
        raise ValueError(
            f"prompts must be a list of strings, a bundled prompt set name or a file, got {prompts!r}"
        )
    texts = list(prompts)
    if not texts:
        raise ValueError("prompts is empty; expected at least one prompt")
    encoded = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"each prompt must be a str, got {type(text).__name__}: {text!r}")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 0:
            raise ValueError(f"prompt {text!r} has no tokens; expected at least one")
        if len(ids) > max_prompt_tokens:
            if not truncate_prompts:
                raise ValueError(
                    f"prompt {text!r} has {len(ids)} tokens, more than max_prompt_tokens="
                    f"{max_prompt_tokens}; raise max_prompt_tokens or pass truncate_prompts=True "
                    "to keep its last tokens"
                )
            ids = ids[-max_prompt_tokens:]
        encoded.append(np.asarray(ids, dtype=np.int64))
    return encoded, texts


def make_task(
    task: str | None = "default",
    *,
    prompts: str | os.PathLike[str] | Sequence[str] | None = None,
    tokenizer: Any = None,
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
) -> CompletionTask:
    """Resolve an environment's options into a :class:`CompletionTask`.

    ``task`` names a preset of :data:`TASK_PRESETS` whose values fill every option
    left as ``None`` (its reward model too: a credit-benchmark task's own, else
    ``"default"``); ``task=None`` uses no preset (then ``prompts``,
    ``max_prompt_tokens`` and ``max_new_tokens`` are required). ``vocab_size``
    widens the action space beyond ``len(tokenizer)``, for policies whose output
    layer is padded (Qwen, Llama-style models).
    """
    if task is not None and task not in TASK_PRESETS:
        raise ValueError(f"task must be one of {sorted(TASK_PRESETS)} or None, got {task!r}")
    preset = TASK_PRESETS[task] if task is not None else {}
    prompts = prompts if prompts is not None else preset.get("prompts")
    max_prompt_tokens = (
        max_prompt_tokens if max_prompt_tokens is not None else preset.get("max_prompt_tokens")
    )
    max_new_tokens = max_new_tokens if max_new_tokens is not None else preset.get("max_new_tokens")
    if min_new_tokens is None:
        # the preset's minimum only goes with the preset's lengths
        min_new_tokens = (
            preset.get("min_new_tokens", 0) if max_new_tokens == preset.get("max_new_tokens") else 0
        )
    for name, value in (
        ("prompts", prompts),
        ("max_prompt_tokens", max_prompt_tokens),
        ("max_new_tokens", max_new_tokens),
    ):
        if value is None:
            raise ValueError(f"{name} is required when task=None")
    # every option is checked before anything is loaded
    max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, 1)
    new_tokens, min_new_tokens = _resolve_lengths(max_new_tokens, min_new_tokens)
    eos_ends_episode = check_bool("eos_ends_episode", eos_ends_episode)
    truncate_prompts = check_bool("truncate_prompts", truncate_prompts)
    trust_remote_code = check_bool("trust_remote_code", trust_remote_code)
    if vocab_size is not None:
        vocab_size = check_int("vocab_size", vocab_size, 1)
    if reward_model_kwargs is not None and not isinstance(reward_model_kwargs, dict):
        raise ValueError(
            f"reward_model_kwargs must be a dict of reward-model options, got {reward_model_kwargs!r}"
        )
    resolve_device(device)

    tokenizer = _resolve_tokenizer(tokenizer, trust_remote_code)
    assert prompts is not None  # checked above, with the other required options
    prompt_ids, prompt_texts = _tokenize_prompts(
        prompts, tokenizer, max_prompt_tokens, truncate_prompts
    )
    if reward_model is None:
        reward_model = preset.get("reward_model", "default")
    rm = _resolve_reward_model(reward_model, reward_model_kwargs or {}, device, trust_remote_code)
    _check_positions(rm, tokenizer, max_prompt_tokens + new_tokens[1])

    eos = tokenizer.eos_token_id if eos_ends_episode else None
    if eos_ends_episode and eos is None:
        warnings.warn(
            "the tokenizer defines no EOS token, so episodes end only at max_new_tokens",
            stacklevel=3,
        )
    pad = tokenizer.pad_token_id
    if pad is None:
        # Padding never reaches a model unmasked, so any id works; EOS is the usual choice.
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return CompletionTask(
        tokenizer=tokenizer,
        reward_model=rm,
        prompts=prompt_ids,
        prompt_texts=prompt_texts,
        max_prompt_tokens=max_prompt_tokens,
        new_tokens=new_tokens,
        min_new_tokens=min_new_tokens,
        eos_token_id=eos,
        pad_token_id=int(pad),
        vocab_size=_resolve_vocab_size(vocab_size, tokenizer),
    )


def _resolve_vocab_size(vocab_size: int | None, tokenizer: Any) -> int:
    if vocab_size is None:
        return len(tokenizer)
    if int(vocab_size) < len(tokenizer):
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens; "
            "expected None or at least len(tokenizer)"
        )
    return int(vocab_size)
