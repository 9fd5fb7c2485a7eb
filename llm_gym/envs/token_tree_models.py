"""Pieces of the token-tree world: its tokenizer and its tiny reward and language models.

Holds :class:`TokenTreeTokenizer` (token ``i`` is the word ``t<i>``, plus ``<bos>``
and ``<pad>``), :class:`SequenceRewardModel` (a function of the completion's ids
behind the :class:`~llm_gym.rewards.RewardModel` interface),
:func:`tiny_reward_model` (a 1-2 layer GPT-2 classifier, random or fitted in
seconds to a target function) and :func:`tiny_causal_lm` (a random GPT-2 LM, for
ABC-D). Nothing is downloaded: every model is built from a config.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel, RewardModel
from llm_gym.rewards.base import RewardOutput

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

__all__ = ["SequenceRewardModel", "TokenTreeTokenizer", "tiny_causal_lm", "tiny_reward_model"]

SequenceFunction = Callable[[np.ndarray], float]


class TokenTreeTokenizer:
    """Word-level tokenizer of a token tree: ids ``0..n-1`` are ``t0..t<n-1>``.

    ``bos_token_id = n`` starts the default prompt, ``pad_token_id = n + 1`` pads.

    Example:
        >>> tok = TokenTreeTokenizer(3)
        >>> tok.decode([3, 0, 2]), len(tok)
        ('<bos> t0 t2', 5)
    """

    def __init__(self, n_tokens: int) -> None:
        self.n_tokens = int(n_tokens)
        self.bos_token_id = self.n_tokens
        self.pad_token_id = self.n_tokens + 1
        self.eos_token_id = None
        self._words = [f"t{i}" for i in range(self.n_tokens)] + ["<bos>", "<pad>"]

    def __len__(self) -> int:
        return len(self._words)

    def get_vocab(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self._words)}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._words[int(i)] for i in ids]

    def decode(self, ids: list[int] | np.ndarray, **_: object) -> str:
        return " ".join(self.convert_ids_to_tokens(list(ids)))


class SequenceRewardModel(RewardModel):
    """``fn(completion_ids) -> float`` as a reward model (scores only, no attention).

    Example:
        >>> rm = SequenceRewardModel(lambda ids: float((ids == 0).sum()))
        >>> batch = CompletionBatch([np.array([3])], [np.array([0, 1, 0])], TokenTreeTokenizer(3))
        >>> rm(batch).scores
        array([2.])
    """

    def __init__(self, fn: SequenceFunction) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable on the completion ids, got {type(fn).__name__}")
        self.fn = fn

    def score(
        self, batch: CompletionBatch, attention: AttentionRequest | None = None
    ) -> RewardOutput:
        if attention is not None:
            raise TypeError(
                f"SequenceRewardModel({self.fn!r}) has no attention weights; for Attention Based "
                "Credit give the token tree a transformer reward model (tiny_reward_model)"
            )
        scores = [float(self.fn(np.asarray(c, dtype=np.int64))) for c in batch.completion_ids]
        return RewardOutput(scores=np.array(scores))

    def __repr__(self) -> str:
        return f"SequenceRewardModel({self.fn!r})"


def _gpt2_config(
    n_tokens: int, horizon: int, n_layer: int, n_embd: int, **extra: Any
) -> GPT2Config:
    # initializer_range 0.3 (GPT-2: 0.02): at the stock scale a random tiny model
    # attends almost uniformly, which would make ABC indistinguishable from uniform credit
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=n_tokens + 2,
        n_positions=horizon + 8,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=n_tokens,
        eos_token_id=n_tokens,
        initializer_range=0.3,
        **extra,
    )


def tiny_reward_model(
    n_tokens: int,
    horizon: int,
    seed: int = 0,
    target: SequenceFunction | None = None,
    n_layer: int = 1,
    n_embd: int = 32,
    steps: int = 300,
) -> HFRewardModel:
    """A GPT-2 sequence classifier (one logit) over the token tree's vocabulary.

    Random when ``target`` is None; otherwise fitted by regression to
    ``target(completion_ids)`` on every completion of the tree (prompt ``<bos>``),
    ``steps`` full-batch Adam steps (seconds on a CPU for a few hundred leaves).

    Example:
        >>> rm = tiny_reward_model(3, 2, target=lambda ids: float(ids[0] == 1), steps=100)
        >>> tok = TokenTreeTokenizer(3)
        >>> out = rm(CompletionBatch([np.array([3])], [np.array([1, 0])], tok))
        >>> out.scores.shape
        (1,)
    """
    from transformers import GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = _gpt2_config(n_tokens, horizon, n_layer, n_embd, num_labels=1)
    model = GPT2ForSequenceClassification(config)
    if target is not None:
        _fit(model, n_tokens, horizon, target, steps)
    return HFRewardModel(
        model, tokenizer=TokenTreeTokenizer(n_tokens), pooling="last", device="cpu"
    )


def _fit(
    model: PreTrainedModel, n_tokens: int, horizon: int, target: SequenceFunction, steps: int
) -> None:
    leaves = np.array(list(itertools.product(range(n_tokens), repeat=horizon)), dtype=np.int64)
    if len(leaves) > 100_000:
        raise ValueError(
            f"fitting a reward model on {len(leaves)} completions is too slow; expected at most "
            "100000 (n_tokens ** horizon)"
        )
    y = torch.tensor([float(target(leaf)) for leaf in leaves], dtype=torch.float32)
    ids = torch.from_numpy(np.concatenate([np.full((len(leaves), 1), n_tokens), leaves], axis=1))
    model.config.pad_token_id = -1  # pool at the last position: there is no padding here
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(input_ids=ids).logits[:, 0], y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def tiny_causal_lm(
    n_tokens: int, horizon: int, seed: int = 0, n_layer: int = 1, n_embd: int = 32
) -> GPT2LMHeadModel:
    """A random GPT-2 causal LM over the token tree's vocabulary (for ABC-D).

    Example:
        >>> tiny_causal_lm(3, 2).config.vocab_size
        5
    """
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(_gpt2_config(n_tokens, horizon, n_layer, n_embd)).eval()
