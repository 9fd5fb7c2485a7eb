"""credit_fidelity: how well each credit map finds the tokens that decide the score.

Compare ABC at any layer, attention rollout, ABC-D and uniform credit on the
same completions before spending compute on training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardModel
from llm_gym.rewards.fidelity import FidelityReport, fidelity_metrics
from llm_gym.rewards.generator import GeneratorAttention

__all__ = ["CreditMap", "credit_fidelity", "credit_weights", "default_credit_maps"]

#: a credit map: RM attention (an AttentionRequest), ABC-D (a GeneratorAttention),
#: ``"uniform"``, or a function ``batch -> list of per-completion weights``
CreditMap = (
    AttentionRequest | GeneratorAttention | str | Callable[[CompletionBatch], list[np.ndarray]]
)


def default_credit_maps(n_layers: int | None = None) -> dict[str, CreditMap]:
    """Uniform, last layer, first layer (when ``n_layers`` > 1), mean of layers, rollout."""
    maps: dict[str, CreditMap] = {"uniform": "uniform", "last layer": AttentionRequest((-1,))}
    if n_layers and n_layers > 1:
        maps["first layer"] = AttentionRequest((0,))
        maps["mean of layers"] = AttentionRequest(tuple(range(n_layers)))
        maps["rollout"] = AttentionRequest(rollout=True)
    return maps


def credit_weights(
    credit: CreditMap, batch: CompletionBatch, reward_model: RewardModel | None = None
) -> list[np.ndarray]:
    """Each completion's weights (summing to 1) under one credit map."""
    if isinstance(credit, str):
        if credit != "uniform":
            raise ValueError(f"the only named credit map is 'uniform', got {credit!r}")
        return [np.full(len(c), 1.0 / len(c)) for c in batch.completion_ids]
    if isinstance(credit, AttentionRequest):
        if reward_model is None:
            raise ValueError("an AttentionRequest credit map needs reward_model=...")
        # RewardModel.__call__ refuses an output without the attention that was asked for
        return list(cast(list[np.ndarray], reward_model(batch, credit).attention))
    if isinstance(credit, GeneratorAttention):
        pairs = zip(batch.prompt_ids, batch.completion_ids, strict=True)
        return [credit.weights(prompt, completion) for prompt, completion in pairs]
    if callable(credit):
        return [np.asarray(w, dtype=np.float64) for w in credit(batch)]
    raise ValueError(
        f"credit map {credit!r} is not an AttentionRequest, GeneratorAttention, 'uniform' "
        "or a function of the batch"
    )


def credit_fidelity(
    batch: CompletionBatch,
    relevance: Sequence[np.ndarray] | Callable[[np.ndarray], np.ndarray],
    reward_model: RewardModel | None = None,
    credit_maps: Mapping[str, CreditMap] | None = None,
    threshold: float = 0.0,
) -> dict[str, FidelityReport]:
    """Fidelity of each credit map against ground-truth per-token relevance.

    Args:
        batch: completions to measure on (e.g. samples of the initial policy).
        relevance: per completion, each token's true relevance; or a function of
            a completion's token ids (``llm_gym.assets.token_relevance`` for the
            embedded world).
        reward_model: the RM whose attention the AttentionRequest maps read.
        credit_maps: name -> map; default :func:`default_credit_maps` for the RM's
            number of layers (uniform is the bar ABC must clear), or uniform only
            without a reward model.
        threshold: a token is relevant when ``abs(relevance) > threshold``.

    Example:
        >>> import numpy as np
        >>> from llm_gym.rewards import CompletionBatch
        >>> batch = CompletionBatch([np.array([1])], [np.array([3, 4, 5])], tokenizer=None)
        >>> report = credit_fidelity(batch, [np.array([0.0, 1.0, 0.0])])
        >>> round(report["uniform"].mass_ratio, 2)
        1.0
    """
    if callable(relevance):
        relevance = [relevance(c) for c in batch.completion_ids]
    if credit_maps is None:
        has_rm = reward_model is not None
        credit_maps = (
            default_credit_maps(_n_layers(reward_model)) if has_rm else {"uniform": "uniform"}
        )
    return {
        name: fidelity_metrics(credit_weights(credit, batch, reward_model), relevance, threshold)
        for name, credit in credit_maps.items()
    }


def _n_layers(reward_model: Any) -> int | None:
    config = getattr(getattr(reward_model, "model", None), "config", None)
    if config is None:
        return None
    return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
