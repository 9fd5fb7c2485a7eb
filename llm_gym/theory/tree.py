"""Enumerating a token tree: every full sequence, stepped through the (wrapped) env.

Holds :class:`TokenTree` (the per-step rewards of every sequence, in both views a
learner can take) and :func:`enumerate_tree`. Wrappers are black boxes: each
sequence is replayed from ``reset`` with forced actions, and we read what the
stack returns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.envs.protocol import CREDIT_MAP, PROMPT_IDS, TOKEN_REWARDS

__all__ = ["MAX_SEQUENCES", "TokenTree", "enumerate_tree"]

#: the largest tree :func:`enumerate_tree` accepts (number of full sequences)
MAX_SEQUENCES = 2_000_000

VIEWS = ("stream", "token_rewards")


@dataclass(frozen=True)
class TokenTree:
    """Every full sequence of a fixed-horizon token MDP and its rewards.

    Sequences are in lexicographic order, so sequence ``i`` is ``i`` written in
    base ``n_actions`` with ``horizon`` digits, and the sequences below a prefix of
    length t form one contiguous block of ``n_actions ** (horizon - t)``.

    Two views of the rewards:

    - ``stream``: the scalar rewards ``step()`` returned, what a stock learner sees.
    - ``token_rewards``: ``info["token_rewards"]`` of the last step, what a
      learner that assigns credit per token sees (None when the env gave none).
      With redistribution wrappers (ABC, uniform, ABC-D) entry t depends on the
      whole sequence, not only on its first t + 1 tokens.
    """

    n_actions: int
    horizon: int
    actions: np.ndarray  # (N, horizon) int64
    stream: np.ndarray  # (N, horizon) float64
    token_rewards: np.ndarray | None  # (N, horizon) float64
    prompt_ids: tuple[int, ...] | None
    #: (N, horizon) ``info["credit_map"]`` of a redistribution wrapper, or None
    credit_maps: np.ndarray | None = None

    def rewards(self, view: str) -> np.ndarray:
        """The (N, horizon) rewards of ``view`` (``"stream"`` or ``"token_rewards"``)."""
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if view == "token_rewards":
            if self.token_rewards is None:
                raise gym.error.Error(
                    "the environment gave no info['token_rewards'] on the last step; "
                    "use view='stream'"
                )
            return self.token_rewards
        return self.stream

    def index(self, prefix: tuple[int, ...] | list[int]) -> int:
        """The row of ``prefix`` among the states of its depth (base-``n_actions`` number)."""
        index = 0
        for token in prefix:
            if not 0 <= int(token) < self.n_actions:
                raise ValueError(
                    f"token {token} of prefix {prefix} is not in [0, {self.n_actions})"
                )
            index = index * self.n_actions + int(token)
        return index

    def prefix(self, depth: int, index: int) -> tuple[int, ...]:
        """The prefix of length ``depth`` at row ``index`` (inverse of :meth:`index`)."""
        return tuple(
            int(a) for a in self.actions[index * self.n_actions ** (self.horizon - depth)][:depth]
        )


def _horizon(env: gym.Env, reset: Any) -> int:
    reset()
    for step in range(1, 65):
        _, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            return step
    raise gym.error.Error(
        "the environment did not end within 64 steps of action 0; expected a short fixed horizon"
    )


def enumerate_tree(
    env: gym.Env,
    prompt: Any = None,
    max_sequences: int = MAX_SEQUENCES,
) -> TokenTree:
    """Replay every full sequence of ``env`` (wrapped or not) and record its rewards.

    Args:
        env: a token environment with ``Discrete`` actions and a fixed horizon.
        prompt: passed as ``reset(options={"prompt": prompt})``; None resets
            without options and requires the prompt not to change between episodes.
        max_sequences: refuse trees with more full sequences than this.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = gym.make("TokenTree-v0", n_tokens=2, horizon=2, reward=lambda ids: ids.sum())
        >>> tree = enumerate_tree(env)
        >>> tree.actions.tolist(), tree.stream[:, -1].tolist()
        ([[0, 0], [0, 1], [1, 0], [1, 1]], [0.0, 1.0, 1.0, 2.0])
    """
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"the action space must be Discrete, got {env.action_space}")
    n = int(env.action_space.n)
    options = None if prompt is None else {"prompt": prompt}
    prompts: set[tuple[int, ...]] = set()

    def reset() -> None:
        _, info = env.reset(options=options)
        if PROMPT_IDS in info:
            prompts.add(tuple(int(i) for i in info[PROMPT_IDS]))

    horizon = _horizon(env, reset)
    size = n**horizon
    if size > max_sequences:
        raise ValueError(
            f"the tree has {n}**{horizon} = {size} full sequences; the exact solver enumerates "
            f"at most max_sequences={max_sequences}"
        )
    actions = np.array(list(itertools.product(range(n), repeat=horizon)), dtype=np.int64)
    stream = np.zeros((size, horizon))
    token_rewards: np.ndarray | None = np.zeros((size, horizon))
    credit_maps: np.ndarray | None = np.zeros((size, horizon))
    for i, sequence in enumerate(actions):
        reset()
        for t, action in enumerate(sequence):
            _, reward, terminated, truncated, info = env.step(int(action))
            stream[i, t] = float(reward)
            if (terminated or truncated) != (t == horizon - 1):
                raise gym.error.Error(
                    f"sequence {sequence.tolist()} ended after {t + 1} steps; the solver needs "
                    f"every episode to last exactly {horizon} steps"
                )
        if token_rewards is not None and TOKEN_REWARDS in info:
            if len(info[TOKEN_REWARDS]) != horizon:
                raise gym.error.Error(
                    f"info['token_rewards'] has {len(info['token_rewards'])} entries for a "
                    f"{horizon}-step episode; expected one per step"
                )
            token_rewards[i] = info[TOKEN_REWARDS]
        else:
            token_rewards = None
        if credit_maps is not None and len(info.get(CREDIT_MAP, ())) == horizon:
            credit_maps[i] = info[CREDIT_MAP]
        else:
            credit_maps = None
    if len(prompts) > 1:
        raise gym.error.Error(
            f"the environment drew {len(prompts)} different prompts; pass prompt=... to solve "
            "the tree of one prompt"
        )
    return TokenTree(
        n, horizon, actions, stream, token_rewards, next(iter(prompts), None), credit_maps
    )
