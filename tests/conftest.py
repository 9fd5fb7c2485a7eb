"""Shared fixtures: tiny Hugging Face models saved to temporary folders and loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel, WordPiece
from tokenizers.pre_tokenizers import Whitespace, WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

WORDS = "the a film movie was is good bad great awful not very plot acting . , but and".split()


def word_tokenizer(pad: bool = True) -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<eos>", "<unk>"] if pad else ["<eos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    kwargs = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>", **kwargs
    )


def bert_tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer with [CLS]/[SEP]: genuinely different from the word-level one."""
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS + ["##s", "##ing", "g", "##o", "##d"]
    vocab = {w: i for i, w in enumerate(pieces)}
    backend = Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


@pytest.fixture(scope="session")
def tiny_gpt2_rm(tmp_path_factory) -> str:
    """A 2-label GPT-2 classifier over the word tokenizer, saved with its tokenizer."""
    path = tmp_path_factory.mktemp("gpt2_rm")
    tok = word_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        pad_token_id=tok.pad_token_id,
    )
    GPT2ForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert_rm(tmp_path_factory) -> str:
    """A 2-label BERT classifier with its own WordPiece tokenizer."""
    path = tmp_path_factory.mktemp("bert_rm")
    tok = bert_tokenizer()
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        pad_token_id=tok.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def word_tok_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("word_tok")
    word_tokenizer().save_pretrained(path)
    return str(path)


PROMPTS = ["the film was", "a movie", "the plot is very", "the acting"]


def rollout(env, actions_rng: np.random.Generator, seed: int):
    """One episode with random actions from ``actions_rng``; returns all (obs, reward, info)."""
    obs, info = env.reset(seed=seed)
    steps = [(obs, 0.0, info)]
    terminated = False
    while not terminated:
        action = int(actions_rng.integers(env.action_space.n))
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, info))
    return steps
