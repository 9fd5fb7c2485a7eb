"""What a token agent reports about a rollout: per-episode summaries and their means.

Holds :func:`episode_summary` and :func:`rollout_statistics`. TokenPPO and
:class:`~llm_gym.agents.TokenRewardCallback` log the means under ``rollout/`` in
the stable-baselines3 logger (TensorBoard, CSV, stdout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llm_gym.envs.protocol import COMPLETION_IDS, SCORE, TOKEN_REWARDS

__all__ = ["episode_summary", "rollout_statistics"]

#: summary key -> name of its rollout mean
_MEANS = {
    "score": "score_mean",
    "length": "completion_length",
    "distinct": "distinct_token_ratio",
    "token_reward_std": "token_reward_std",
    "token_reward_absmax": "token_reward_absmax",
    "token_reward_nonzero": "token_reward_nonzero_frac",
}


def episode_summary(info: Mapping[str, Any], length: int) -> dict[str, float]:
    """Score, length, distinct-token ratio and token-reward spread of one finished episode.

    >>> episode_summary({"score": 1.0, "completion_ids": [4, 4], "token_rewards": [0.0, 1.0]}, 2)
    {'length': 2.0, 'score': 1.0, 'distinct': 0.5, 'token_reward_std': 0.5, 'token_reward_absmax': 1.0, 'token_reward_nonzero': 0.5}
    """
    summary = {"length": float(length)}
    if SCORE in info:
        summary["score"] = float(info[SCORE])
    completion = info.get(COMPLETION_IDS)
    if completion is not None and len(completion):
        summary["distinct"] = len(set(completion)) / len(completion)
    token_rewards = info.get(TOKEN_REWARDS)
    if token_rewards is not None and len(token_rewards):
        values = np.asarray(token_rewards, np.float64)
        summary["token_reward_std"] = float(values.std())
        summary["token_reward_absmax"] = float(np.abs(values).max())
        summary["token_reward_nonzero"] = float(np.mean(values != 0))
    return summary


def rollout_statistics(summaries: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Means over a rollout's finished episodes (``score_mean``, ``completion_length``, ...).

    Empty when no episode finished.

    >>> rollout_statistics([{"length": 2.0, "score": 1.0}, {"length": 4.0, "score": 0.0}])
    {'score_mean': 0.5, 'completion_length': 3.0, 'episodes': 2}
    """
    if not summaries:
        return {}
    stats: dict[str, float] = {}
    for key, name in _MEANS.items():
        values = [summary[key] for summary in summaries if key in summary]
        if values:
            stats[name] = float(np.mean(values))
    stats["episodes"] = len(summaries)
    return stats
