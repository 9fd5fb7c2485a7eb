"""The base of the redistribution wrappers: the sparse stream out, token credit in info.

Holds :class:`CreditWrapper`, :func:`redistribute`, :class:`ScoreBaseline`,
:func:`check_beta`, :func:`check_credit_weights` and the protocol helpers the wrappers share
(:func:`episode_ids`, :func:`env_tokenizer`).
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from llm_gym.envs.protocol import (
    COMPLETION_IDS,
    CREDIT_MAP,
    PROMPT_IDS,
    SCORE,
    TOKEN_REWARDS,
    warn_unscored,
)

__all__ = [
    "CreditWrapper",
    "ScoreBaseline",
    "check_beta",
    "check_credit_weights",
    "credit_map",
    "env_tokenizer",
    "episode_ids",
    "redistribute",
]


def _shown(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def check_credit_weights(weights: Any, n_tokens: int, source: str) -> np.ndarray:
    """A credit map as float64: one finite, non-negative weight per token, summing to 1.

    Anything else is a ValueError naming ``source`` (the wrapper) and the values, so
    corrupt credit never reaches a learner.

    >>> check_credit_weights([0.25, 0.75], 2, "AttentionCredit").tolist()
    [0.25, 0.75]
    >>> check_credit_weights([1.0, 1.0], 2, "AttentionCredit")
    Traceback (most recent call last):
    ...
    ValueError: AttentionCredit got credit weights [1, 1] summing to 2; expected one finite, non-negative weight per token summing to 1
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_tokens,):
        raise ValueError(
            f"{source} got {w.size} credit weights for a completion of {n_tokens} tokens; "
            "expected one weight per token"
        )
    expected = "expected one finite, non-negative weight per token summing to 1"
    if not np.isfinite(w).all():
        raise ValueError(f"{source} got non-finite credit weights {_shown(w)}; {expected}")
    if (w < 0).any():
        raise ValueError(f"{source} got negative credit weights {_shown(w)}; {expected}")
    total = float(w.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"{source} got credit weights {_shown(w)} summing to {total:.6g}; {expected}"
        )
    return w


def check_beta(beta: float) -> float:
    """``beta`` as a float, checked to lie in [0, 1]."""
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1] (0: sparse, 1: fully dense), got {beta}")
    return beta


def credit_map(weights: np.ndarray, beta: float) -> np.ndarray:
    """The effective map m = beta * w + (1 - beta) * [t == T], with which the score is spread.

    ``redistribute(w, R, beta, b) == credit_map(w, beta) * (R - b) + b * [t == T]``.

    >>> credit_map(np.array([0.5, 0.5]), 0.8).tolist()
    [0.4, 0.6]
    """
    m = beta * np.asarray(weights, dtype=np.float64)
    m[-1] += 1.0 - beta
    return m


def redistribute(
    weights: np.ndarray, episode_return: float, beta: float, baseline: float = 0.0
) -> np.ndarray:
    """r_t = beta * w_t * (R - b) + [t == T] * ((1 - beta) * (R - b) + b).

    Sums to R when ``weights`` sums to 1, whatever the baseline b; with b = 0 it is
    the paper's r_t = beta * w_t * R + (1 - beta) * R * [t == T].

    >>> redistribute(np.array([0.5, 0.5]), 2.0, 0.8).tolist()
    [0.8, 1.2]
    >>> redistribute(np.array([0.5, 0.5]), 2.0, 0.8, baseline=1.5).tolist()
    [0.2, 1.8]
    """
    weights = np.asarray(weights, dtype=np.float64)
    deviation = episode_return - baseline
    token_rewards = beta * deviation * weights
    token_rewards[-1] += (1.0 - beta) * deviation + baseline
    return token_rewards


class ScoreBaseline:
    """The part b of each episode's score that a credit wrapper leaves on the last token.

    Only R - b is spread by the credit map. With b = 0 (the paper's ABC) the map
    also spreads the average score: when scores are mostly positive, whatever
    tokens the map favours (for ABC: whatever draws the reward model's attention,
    whatever its sign) are rewarded for being there, and a PPO policy learns to emit
    them. ``"running_mean"`` spreads only the deviation from the scores so far.

    Args:
        baseline: ``None`` or a number (a fixed b), or ``"running_mean"``: the mean
            of earlier episodes' scores, an exponential moving average once more than
            ``1 / rate`` episodes have ended. The current episode never enters its
            own baseline.
        rate: the moving average's rate.

    Example:
        >>> b = ScoreBaseline("running_mean", rate=0.5)
        >>> b.value, b.update(1.0), b.update(3.0), b.update(0.0)
        (0.0, 1.0, 2.0, 1.0)
    """

    def __init__(self, baseline: float | str | None = None, rate: float = 0.01) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {rate}")
        self.running = baseline == "running_mean"
        if isinstance(baseline, str) and not self.running:
            raise ValueError(f"baseline must be None, a number or 'running_mean', got {baseline!r}")
        value = 0.0 if baseline is None or self.running else float(baseline)
        if not math.isfinite(value):
            raise ValueError(f"baseline must be finite, got {baseline!r}")
        self.value = value
        self.rate = float(rate)
        self.count = 0

    def update(self, score: float) -> float:
        """Take in a finished episode's score; returns the new baseline."""
        if self.running and math.isfinite(score):
            self.count += 1
            self.value += max(self.rate, 1.0 / self.count) * (score - self.value)
        return self.value

    def __repr__(self) -> str:
        kind = "running_mean" if self.running else "fixed"
        return f"ScoreBaseline({kind}, value={self.value:.4g})"


def episode_ids(info: dict[str, Any], wrapper: str) -> tuple[np.ndarray, np.ndarray]:
    """A finished episode's ``info["prompt_ids"]`` and ``info["completion_ids"]``, or an error."""
    missing = [key for key in (PROMPT_IDS, COMPLETION_IDS) if key not in info]
    if missing:
        raise gym.error.Error(
            f"{wrapper} needs info[{missing[0]!r}] on the last step of an episode (the token ids "
            f"of the prompt and of the completion); the environment's last info has keys "
            f"{sorted(info)}. See the protocol in llm_gym.envs.protocol."
        )
    return (
        np.asarray(info[PROMPT_IDS], dtype=np.int64).reshape(-1),
        np.asarray(info[COMPLETION_IDS], dtype=np.int64).reshape(-1),
    )


def env_tokenizer(env: gym.Env | Any, tokenizer: Any, wrapper: str) -> Any:
    """The given tokenizer, else the environment's ``tokenizer`` attribute, or a clear error."""
    if tokenizer is not None:
        return tokenizer
    if env.has_wrapper_attr("tokenizer"):
        return env.get_wrapper_attr("tokenizer")
    raise gym.error.Error(
        f"{wrapper} needs the environment's tokenizer to decode token ids: pass tokenizer=... "
        f"or give the environment a `tokenizer` attribute"
    )


class CreditWrapper(gym.Wrapper):
    """Returns the environment's rewards unchanged and, when an episode ends, puts
    its return R redistributed over the completion tokens in ``info["token_rewards"]``.

    Subclasses set :attr:`beta` and implement :meth:`credit_weights`; ``baseline``
    (see :class:`ScoreBaseline`) is the part of R kept on the last token. The
    ``"ansi"`` render shows the last finished completion coloured by token reward.
    """

    beta: float = 1.0

    def __init__(
        self, env: gym.Env, baseline: float | str | None = None, baseline_rate: float = 0.01
    ) -> None:
        super().__init__(env)
        self.baseline = ScoreBaseline(baseline, baseline_rate)
        self._episode_return = 0.0
        self._steps = 0
        self.last_completion_ids: list[int] | None = None
        self.last_token_rewards: np.ndarray | None = None

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        """Weights over the ``n_tokens`` completion tokens, summing to 1."""
        raise NotImplementedError

    def episode_credit(
        self, info: dict[str, Any], n_tokens: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The finished episode's token rewards, and the credit map they spread R by.

        The map is ``None`` for a scheme that is not a weighting of the score (it is
        then left out of ``info``).
        """
        weights = np.zeros(n_tokens)
        if self.beta > 0:
            weights = check_credit_weights(
                self.credit_weights(info, n_tokens), n_tokens, type(self).__name__
            )
        token_rewards = redistribute(weights, self._episode_return, self.beta, self.baseline.value)
        self.baseline.update(self._episode_return)
        return token_rewards, credit_map(weights, self.beta)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._episode_return, self._steps = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._episode_return += float(reward)
        self._steps += 1
        if terminated or truncated:
            if truncated and not terminated and SCORE not in info:
                warn_unscored(type(self).__name__)
            n_tokens = len(info[COMPLETION_IDS]) if COMPLETION_IDS in info else self._steps
            token_rewards, weighting = self.episode_credit(info, n_tokens)
            info[TOKEN_REWARDS] = token_rewards.tolist()
            if weighting is None:
                info.pop(CREDIT_MAP, None)
            else:
                info[CREDIT_MAP] = weighting.tolist()
            self.last_token_rewards = token_rewards
            self.last_completion_ids = info.get(COMPLETION_IDS)
        return obs, reward, terminated, truncated, info

    def render(self) -> Any:
        if self.render_mode != "ansi" or self.last_token_rewards is None:
            return self.env.render()
        from llm_gym.wrappers.render import credit_ansi, token_strings

        tokenizer = (
            self.env.get_wrapper_attr("tokenizer")
            if self.env.has_wrapper_attr("tokenizer")
            else None
        )
        ids = self.last_completion_ids or list(range(len(self.last_token_rewards)))
        return credit_ansi(token_strings(ids, tokenizer), self.last_token_rewards) + "\n"
