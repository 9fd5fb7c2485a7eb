"""Scoring the growing prefixes of one completion, one token at a time.

Holds :class:`PrefixScorer`: the reward model's score of a prompt with the
completion so far, the quantity potential-based shaping needs after every token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from llm_gym.rewards.base import CompletionBatch, RewardModel
from llm_gym.rewards.hf import HFRewardModel

__all__ = ["PrefixScorer"]


class PrefixScorer:
    """``scorer(prompt_ids, prefix_ids)``: the reward model's score of the prompt and prefix.

    For a decoder :class:`~llm_gym.rewards.HFRewardModel` that reads the
    environment's token ids, a call whose sequence extends the previous call's by
    one token runs the reward model on that token alone, from the previous key/value
    cache, so scoring every prefix of an episode costs about one forward of the
    whole episode. Any other call (a new episode, or any other reward model) scores
    the sequence from scratch, as ``reward_model(CompletionBatch(...))`` does.

    Args:
        reward_model: any :class:`~llm_gym.rewards.RewardModel`.
        tokenizer: the environment's tokenizer (to build the batch).

    Example:
        >>> import numpy as np, llm_gym.assets
        >>> from llm_gym.rewards.loading import load_tokenizer
        >>> rm = HFRewardModel(llm_gym.assets.reward_model_path("default"), device="cpu")
        >>> scorer = PrefixScorer(rm, load_tokenizer(str(llm_gym.assets.TOKENIZER_DIR)))
        >>> scorer.incremental
        True
        >>> prompt, completion = np.array([5, 10]), np.array([11, 12, 13])
        >>> scores = [scorer(prompt, completion[:t]) for t in range(4)]
        >>> full = rm(CompletionBatch([prompt], [completion], scorer.tokenizer)).scores[0]
        >>> bool(abs(scores[-1] - full) < 1e-5)
        True
    """

    def __init__(self, reward_model: RewardModel, tokenizer: Any) -> None:
        self.reward_model, self.tokenizer = reward_model, tokenizer
        #: whether consecutive prefixes are scored from a key/value cache
        self.incremental = (
            isinstance(reward_model, HFRewardModel)
            and reward_model.pooling == "last"
            and reward_model.uses_env_ids(tokenizer)
        )
        self._ids: np.ndarray | None = None
        self._cache: Any = None

    def __call__(self, prompt_ids: np.ndarray, prefix_ids: np.ndarray) -> float:
        if not self.incremental:
            batch = CompletionBatch([prompt_ids], [prefix_ids], self.tokenizer)
            return float(self.reward_model(batch).scores[0])
        rm: HFRewardModel = self.reward_model  # type: ignore[assignment]
        ids = np.concatenate([prompt_ids, prefix_ids]).astype(np.int64)
        extends = (
            self._ids is not None
            and len(ids) == len(self._ids) + 1
            and np.array_equal(ids[:-1], self._ids)
        )
        new = ids[-1:] if extends else ids
        # one unpadded row: the scoring position is its last token. The mask (every
        # token real, cached ones included) changes no bit of the scores; without it
        # transformers warns that the row "may be padded" whenever a completion holds
        # the pad id, which a policy may sample
        mask = torch.ones(1, len(ids), dtype=torch.long, device=rm.device)
        with torch.no_grad():
            out = rm.forward(
                torch.from_numpy(new)[None].to(rm.device),
                attention_mask=mask,
                cache=self._cache if extends else None,
                use_cache=True,
            )
        self._ids, self._cache = ids, out.cache
        return float(rm.logits_to_scores(out.logits)[0])
