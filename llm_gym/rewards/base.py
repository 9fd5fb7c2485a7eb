"""The reward-model interface: score a batch of (prompt, completion) pairs.

Holds :class:`CompletionBatch` (what an environment hands a reward model),
:class:`RewardOutput` (what comes back) and the :class:`RewardModel` base class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["AttentionRequest", "CompletionBatch", "RewardModel", "RewardOutput"]


@dataclass(frozen=True)
class CompletionBatch:
    """Finished episodes in the environment's own token ids.

    Reward models with a different tokenizer work from :attr:`prompt_texts` and
    :attr:`completion_texts`; :meth:`completion_char_spans` gives each completion
    token's character span in ``prompt_text + completion_text``, for mapping
    credit across tokenizers.
    """

    prompt_ids: Sequence[np.ndarray]
    completion_ids: Sequence[np.ndarray]
    tokenizer: Any = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.prompt_ids) != len(self.completion_ids):
            raise ValueError(
                f"prompt_ids has {len(self.prompt_ids)} entries but completion_ids has "
                f"{len(self.completion_ids)}; expected one prompt per completion"
            )

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @cached_property
    def prompt_texts(self) -> list[str]:
        return [self.tokenizer.decode(p.tolist()) for p in self.prompt_ids]

    @cached_property
    def completion_texts(self) -> list[str]:
        """Each completion's text, such that ``prompt_text + completion_text`` is the full text."""
        texts = []
        for prompt, completion, prompt_text in zip(
            self.prompt_ids, self.completion_ids, self.prompt_texts
        ):
            full = self.tokenizer.decode(np.concatenate([prompt, completion]).tolist())
            texts.append(full[len(prompt_text) :] if full.startswith(prompt_text) else full)
        return texts

    @property
    def texts(self) -> list[str]:
        return [p + c for p, c in zip(self.prompt_texts, self.completion_texts)]

    def completion_char_spans(self, index: int) -> np.ndarray:
        """(T, 2) character [start, end) of each completion token in the full text."""
        prompt = self.prompt_ids[index].tolist()
        completion = self.completion_ids[index].tolist()
        ends = [len(self.tokenizer.decode(prompt))]
        for t in range(1, len(completion) + 1):
            ends.append(len(self.tokenizer.decode(prompt + completion[:t])))
        spans = np.array([[ends[t], ends[t + 1]] for t in range(len(completion))], dtype=np.int64)
        return spans.reshape(len(completion), 2)


@dataclass(frozen=True)
class AttentionRequest:
    """Which attention a reward model should return alongside its scores.

    Args:
        layers: layer indices to read (negative counts from the end); averaged
            when several. ``(-1,)`` is the paper's choice.
        heads: how to combine heads: ``"mean"`` or ``"max"``.
        rollout: use attention rollout through all layers (Abnar & Zuidema 2020)
            instead of single layers.
    """

    layers: tuple[int, ...] = (-1,)
    heads: str = "mean"
    rollout: bool = False

    def __post_init__(self) -> None:
        if not self.layers and not self.rollout:
            raise ValueError("layers must name at least one layer, got an empty tuple")
        if self.heads not in ("mean", "max"):
            raise ValueError(f"heads must be 'mean' or 'max', got {self.heads!r}")

    @property
    def key(self) -> str:
        """A short name of the request, the key of its weights in ``info["rm_attention"]``.

        >>> AttentionRequest().key, AttentionRequest((0, 1), heads="max").key
        ('layers=-1 heads=mean', 'layers=0,1 heads=max')
        """
        where = "rollout" if self.rollout else "layers=" + ",".join(map(str, self.layers))
        return f"{where} heads={self.heads}"


@dataclass
class RewardOutput:
    """Scores, and on request per-completion-token attention weights.

    ``attention[i]`` has one entry per *environment* completion token of pair i
    and sums to 1 (it is already restricted to the completion and renormalised).
    """

    scores: np.ndarray
    attention: list[np.ndarray] | None = None


class RewardModel(ABC):
    """Scores finished completions; subclasses may also expose attention.

    Example:
        >>> from llm_gym.rewards import FunctionRewardModel
        >>> rm = FunctionRewardModel(lambda text: float(len(text)))
        >>> rm.supports_attention
        False
    """

    #: whether :meth:`score` can return attention weights for ABC.
    supports_attention: bool = False

    @abstractmethod
    def score(
        self, batch: CompletionBatch, attention: AttentionRequest | None = None
    ) -> RewardOutput:
        """Score every pair of ``batch`` in one call (one forward for model-based RMs)."""

    def __call__(
        self, batch: CompletionBatch, attention: AttentionRequest | None = None
    ) -> RewardOutput:
        output = self.score(batch, attention)
        scores = np.asarray(output.scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(batch):
            raise ValueError(
                f"{type(self).__name__} returned {scores.shape[0]} scores for a batch of "
                f"{len(batch)}; expected one per completion"
            )
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{type(self).__name__} returned a non-finite score ({scores[i]}) for the text "
                f"{batch.texts[i]!r}; expected a finite float"
            )
        output.scores = scores
        if attention is not None:
            self._check_attention(batch, output.attention)
        return output

    def _check_attention(self, batch: CompletionBatch, attention: Any) -> None:
        name = type(self).__name__
        if attention is None or len(attention) != len(batch):
            raise ValueError(
                f"{name} was asked for attention but returned "
                f"{'none' if attention is None else f'{len(attention)} rows'} for a batch of "
                f"{len(batch)}; expected one row of weights per completion"
            )
        for i, (weights, completion) in enumerate(zip(attention, batch.completion_ids)):
            w = np.asarray(weights, dtype=np.float64)
            problem = None
            if w.shape != (len(completion),):
                problem = f"{w.size} weights for {len(completion)} completion tokens"
            elif not np.isfinite(w).all() or (w < 0).any():
                problem = "weights that are not all finite and non-negative"
            elif abs(float(w.sum()) - 1.0) > 1e-6:
                problem = f"weights summing to {float(w.sum()):.6g}"
            if problem is not None:
                raise ValueError(
                    f"{name} returned {problem} for the text {batch.texts[i]!r}; expected one "
                    "finite, non-negative weight per completion token, summing to 1"
                )
