"""RelevanceCredit: R spread in proportion to a known per-token relevance (an oracle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.wrappers.credit import CreditWrapper, check_beta, episode_ids

__all__ = ["RelevanceCredit", "relevance_weights"]


class RelevanceCredit(CreditWrapper, gym.utils.RecordConstructorArgs):
    """r_t = beta * R * rel_t / sum(rel) + (1 - beta) * R * [t == T].

    With the embedded world's lexicon relevance this is the *oracle* credit map:
    the upper bound any attention-based credit can reach. A completion with no
    relevant token keeps R on its last token.

    Args:
        env: a token environment returning ``info["prompt_ids"]`` and
            ``info["completion_ids"]`` on the last step.
        relevance: ``(prompt_ids, completion_ids) -> array`` of non-negative
            relevance per completion token (absolute values are taken).
        beta: dense share of the credit, in [0, 1].
        baseline: the part of R kept on the last token, only R - b being spread
            (:class:`~llm_gym.wrappers.ScoreBaseline`): ``None`` (the paper's
            form), a number, or ``"running_mean"`` of earlier scores.
        baseline_rate: rate of the running mean.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym import assets
        >>> env = RelevanceCredit(gym.make("LLMCompletion-v0"),
        ...                       lambda prompt, completion: assets.token_relevance(completion))
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, reward, done, _, info = env.step(env.action_space.sample())
        >>> abs(sum(info["token_rewards"]) - info["score"]) < 1e-9
        True
    """

    def __init__(
        self,
        env: gym.Env,
        relevance: Callable[[np.ndarray, np.ndarray], np.ndarray],
        beta: float = 0.8,
        baseline: float | str | None = None,
        baseline_rate: float = 0.01,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, relevance=relevance, beta=beta, baseline=baseline, baseline_rate=baseline_rate
        )
        CreditWrapper.__init__(self, env, baseline, baseline_rate)
        self.weights_of = relevance_weights(relevance, "RelevanceCredit")
        self.relevance = relevance
        self.beta = check_beta(beta)

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        prompt, completion = episode_ids(info, "RelevanceCredit")
        return self.weights_of(prompt, completion, n_tokens)


def relevance_weights(
    relevance: Callable[[np.ndarray, np.ndarray], np.ndarray], wrapper: str
) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """``(prompt, completion, n_tokens) -> weights``: ``|relevance|`` normalised to sum to 1.

    A completion with no relevant token keeps its score on its last token.
    """
    if not callable(relevance):
        raise TypeError(
            f"relevance must be a function (prompt_ids, completion_ids) -> array, got {relevance!r}"
        )

    def weights(prompt: np.ndarray, completion: np.ndarray, n_tokens: int) -> np.ndarray:
        values = np.abs(np.asarray(relevance(prompt, completion), dtype=np.float64)).reshape(-1)
        if values.shape != (n_tokens,) or not np.isfinite(values).all():
            raise ValueError(
                f"{wrapper}: relevance returned {values.tolist()!r} for a completion of "
                f"{n_tokens} tokens; expected one finite value per token"
            )
        total = values.sum()
        if total == 0:
            out = np.zeros(n_tokens)
            out[-1] = 1.0
            return out
        return values / total

    return weights
