"""Training the world's models: the tiny GPT-2 LM and the tiny GPT-2 reward models.

Holds :func:`warmup_cosine` (the learning-rate schedule), :func:`train` (the
loop), :func:`train_lm` and :func:`train_rm`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from llm_gym.assets.build.config import BuildConfig
from llm_gym.assets.build.corpus import vader_analyzer, vader_scores, windows

__all__ = ["train", "train_lm", "train_rm", "warmup_cosine"]


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """Learning-rate factor of step s: linear warmup over ``steps // 20`` steps, times a cosine
    decay over all ``steps``.

    Not transformers' ``get_cosine_schedule_with_warmup``: that one starts at 0 and
    decays over the steps after the warmup only, so it would change the shipped weights.

    >>> factor = warmup_cosine(100)
    >>> round(factor(0), 4), round(factor(4), 4), round(factor(50), 4), factor(100)
    (0.2, 0.9961, 0.5, 0.0)
    """
    warmup = max(1, steps // 20)
    return lambda s: (
        min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )


def train(
    model: torch.nn.Module,
    steps: int,
    lr: float,
    make_batch: Callable[[int], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    log: str,
) -> None:
    """AdamW (weight decay 0.01, gradients clipped at norm 1) on :func:`warmup_cosine`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        loss = loss_fn(model, make_batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            seconds = time.perf_counter() - start
            print(
                f"  [{log}] step {step + 1}/{steps} loss {loss.item():.4f} ({seconds:.0f}s)",
                flush=True,
            )
    model.eval()


def train_lm(cfg: BuildConfig, tokenizer: Any, stream: np.ndarray, starts: np.ndarray) -> Any:
    """The policy / reference LM: a GPT-2 trained on full-context windows of the stream."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.context,
        n_embd=cfg.lm_width,
        n_layer=cfg.lm_layers,
        n_head=4,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(config)
    rng = np.random.default_rng(cfg.seed + 1)

    def batch(_: int) -> torch.Tensor:
        return torch.from_numpy(windows(stream, starts, rng, cfg.lm_batch, cfg.context))

    def loss(m: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return m(input_ids=ids, labels=ids).loss

    train(model, cfg.lm_steps, cfg.lm_lr, batch, loss, "lm")
    return model


def train_rm(
    cfg: BuildConfig,
    tokenizer: Any,
    stream: np.ndarray,
    starts: np.ndarray,
    layers: int,
    seed: int,
    steps: int,
    target: Callable[[list[str]], np.ndarray] | None = None,
    long_share: float = 0.2,
    model: Any | None = None,
) -> Any:
    """A GPT-2 classifier (NEGATIVE/POSITIVE) whose logit difference learns a score of the text.

    ``target`` maps window texts to scores (default: the VADER score,
    :func:`~llm_gym.assets.build.corpus.vader_scores`; a task's rule, e.g.
    :meth:`llm_gym.assets.rules.WorldRule.scores`). Trained on windows of 6-44 tokens,
    and with probability ``long_share`` of 45 to ``cfg.context``, with soft labels
    p(positive) = sigmoid(target), which drives logit(pos) - logit(neg) to the target.
    ``model`` (a GPT2ForSequenceClassification) is trained in place of a new one of
    ``layers`` layers; either way the windows are at most ``cfg.context`` tokens.
    """
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    if model is None:
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=cfg.context,
            n_embd=cfg.rm_width,
            n_layer=layers,
            n_head=cfg.rm_heads,
            # transformers 5 takes num_labels through PretrainedConfig's keyword arguments,
            # which GPT2Config's typed signature leaves out
            num_labels=2,  # type: ignore[call-arg]
            id2label={0: "NEGATIVE", 1: "POSITIVE"},
            label2id={"NEGATIVE": 0, "POSITIVE": 1},
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        model = GPT2ForSequenceClassification(config)
    rng = np.random.default_rng(seed + 1)
    if target is None:
        analyzer = vader_analyzer()
        target = lambda texts: vader_scores(texts, analyzer)  # noqa: E731
    score_of = target

    def batch(_: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = (
            int(rng.integers(6, 45))
            if rng.random() < 1 - long_share
            else int(rng.integers(45, cfg.context + 1))
        )
        ids = windows(stream, starts, rng, cfg.rm_batch, length)
        texts = tokenizer.batch_decode(ids.tolist())
        return torch.from_numpy(ids), torch.from_numpy(score_of(texts)).float()

    def loss(m: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, target = data
        logits = m(input_ids=ids).logits
        p = torch.sigmoid(target)
        logp = torch.log_softmax(logits, -1)
        return -(p * logp[:, 1] + (1 - p) * logp[:, 0]).mean()

    train(model, steps, cfg.rm_lr, batch, loss, f"rm{model.config.n_layer}")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
