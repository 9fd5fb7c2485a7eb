"""Shared fixtures: tiny reward models built from configs, saved and loaded back by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_gym import assets
from llm_gym.rewards import CompletionBatch, HFRewardModel
from llm_gym.rewards.loading import load_tokenizer


@pytest.fixture(scope="session")
def env_tokenizer():
    return load_tokenizer(str(assets.TOKENIZER_DIR))


def tiny_config(family: str, vocab_size: int):
    """A two-label sequence-classifier config of ``family``, small enough for CPU tests."""
    from transformers import (
        BertConfig,
        DistilBertConfig,
        GPT2Config,
        LlamaConfig,
        Qwen2Config,
    )

    common = {"vocab_size": vocab_size, "num_labels": 2, "bos_token_id": 1, "eos_token_id": 1}
    if family == "gpt2":
        return GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, **common)
    if family == "bert":
        return BertConfig(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            **common,
        )
    if family == "distilbert":
        return DistilBertConfig(
            n_layers=2, dim=32, n_heads=4, hidden_dim=64, max_position_embeddings=64, **common
        )
    cls = LlamaConfig if family == "llama" else Qwen2Config
    return cls(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **common,
    )


def build_reward_model(family: str, path, tokenizer, seed: int = 0, vocab_size: int | None = None):
    """Save a random ``family`` classifier and its ``tokenizer`` to ``path``; load it as an RM."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    vocab_size = vocab_size or len(tokenizer.get_vocab())
    model = AutoModelForSequenceClassification.from_config(tiny_config(family, vocab_size))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    pooling = "first" if family in ("bert", "distilbert") else "last"
    return HFRewardModel(str(path), pooling=pooling, device="cpu")


def random_batch(tokenizer, n: int, seed: int = 0, vocab_low: int = 4) -> CompletionBatch:
    """Pairs of random word ids with different lengths, so the batch needs padding."""
    rng = np.random.default_rng(seed)
    vocab = len(tokenizer.get_vocab())
    prompts = [rng.integers(vocab_low, vocab, size=rng.integers(2, 6)) for _ in range(n)]
    completions = [rng.integers(vocab_low, vocab, size=rng.integers(3, 12)) for _ in range(n)]
    return CompletionBatch(prompts, completions, tokenizer)
