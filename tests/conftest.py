"""Shared fixtures: tiny Hugging Face models built from configs, saved to temporary folders and
loaded back by path."""

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

from llm_gym import assets
from llm_gym.rewards import CompletionBatch, HFRewardModel
from llm_gym.rewards.loading import load_tokenizer

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


def world_folder(folder) -> None:
    """A built world in ``folder`` for the task builds: the embedded tokenizer and LM (linked)
    and its review prompts (copied)."""
    folder.mkdir()
    for part in ("tokenizer", "lm"):
        (folder / part).symlink_to(assets.ASSET_DIR / part)
    (folder / "prompts_reviews.json").write_text(
        (assets.ASSET_DIR / "prompts_reviews.json").read_text()
    )
