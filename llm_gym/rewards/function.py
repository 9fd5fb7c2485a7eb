"""Reward models that are plain Python functions of the text."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardModel, RewardOutput

__all__ = ["FunctionRewardModel"]


class FunctionRewardModel(RewardModel):
    """Wraps ``fn(text) -> float`` as a reward model (no attention, so no ABC).

    Args:
        fn: called once per finished episode.
        on: ``"full"`` scores prompt + completion text (like a sequence classifier
            reading the whole review), ``"completion"`` the completion alone.

    Example:
        >>> import numpy as np
        >>> from transformers import PreTrainedTokenizerFast
        >>> from llm_gym import assets
        >>> from llm_gym.rewards import CompletionBatch
        >>> rm = FunctionRewardModel(lambda text: text.count("good"), on="completion")
        >>> tok = PreTrainedTokenizerFast.from_pretrained(assets.TOKENIZER_DIR)
        >>> batch = CompletionBatch([np.array(tok.encode("the film"))],
        ...                         [np.array(tok.encode(" was good"))], tok)
        >>> rm(batch).scores
        array([1.])
    """

    def __init__(self, fn: Callable[[str], float], on: str = "full") -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if on not in ("full", "completion"):
            raise ValueError(f"on must be 'full' or 'completion', got {on!r}")
        self.fn = fn
        self.on = on

    def score(
        self, batch: CompletionBatch, attention: AttentionRequest | None = None
    ) -> RewardOutput:
        if attention is not None:
            raise TypeError(
                f"FunctionRewardModel({self.fn!r}) has no attention weights; Attention Based "
                "Credit needs a transformer reward model (HFRewardModel)"
            )
        texts = batch.texts if self.on == "full" else batch.completion_texts
        return RewardOutput(scores=np.array([self._score_text(t) for t in texts]))

    def _score_text(self, text: str) -> float:
        try:
            value = self.fn(text)
        except Exception as err:
            raise RuntimeError(
                f"{self!r} raised {type(err).__name__} on the text {text!r}: {err}"
            ) from err
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            if not (
                isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf"
            ):
                raise TypeError(
                    f"{self!r} returned {value!r} ({type(value).__name__}) for the text "
                    f"{text!r}; expected a float"
                )
        return float(value)

    def __repr__(self) -> str:
        return f"FunctionRewardModel({self.fn!r}, on={self.on!r})"
