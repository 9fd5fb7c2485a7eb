"""Building the long task's models: ``llm-gym build-assets --task long``.

The long task is the ABC paper's longest setting: sentiment (the default task's
score, :data:`~llm_gym.assets.build.corpus.SCORE_SCALE` x VADER compound) at
140-160 new tokens. Prompt and completion take up to 168 tokens, more than the
128 positions of the embedded LM and reward models, so the task brings both:

- ``lm_long``: the embedded LM with its position table extended to
  ``BuildConfig.long_context`` (positions past 128 start as copies of the first
  ones) and fine-tuned on windows of ``BuildConfig.long_window`` tokens, as long as
  the task's prompt and completion together;
- ``rm_long``: a sentiment RM trained from lm_long's weights (its three layers and
  positions, a new score head), on windows up to that length. A one-layer RM, the
  default RM's design, follows VADER at these lengths only loosely (Pearson about
  0.6): a text of 140-176 tokens holds several sentiment words, each negated or
  not by the word before it, and one layer cannot tell which negation goes with
  which word; the LM's layers read word order already.

The tokenizer, prompts and the other models are read, never rewritten, so the
other tasks reproduce bit for bit. Holds :func:`extend_positions` and
:func:`build_long`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_gym.assets import ASSET_DIR
from llm_gym.assets.build.config import BuildConfig
from llm_gym.assets.build.corpus import (
    token_stream,
    token_valence_table,
    vader_analyzer,
    vader_scores,
    windows,
)
from llm_gym.assets.build.measurement import (
    held_out_windows,
    measure_reward_model,
    perplexity,
    sample_eval_completions,
)
from llm_gym.assets.build.tasks import check_world, record_task_report
from llm_gym.assets.build.training import train, train_rm
from llm_gym.assets.world import generate_corpus
from llm_gym.rewards.loading import load_tokenizer

__all__ = ["LONG_NEW_TOKENS", "build_long", "extend_positions", "reward_model_from_lm"]

#: the long task's completion lengths (its preset's), at which its models are measured
LONG_NEW_TOKENS = (140, 160)


def extend_positions(lm: Any, positions: int) -> Any:
    """A copy of a GPT-2 LM with ``positions`` positions; position p starts as p mod the old count.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> small = GPT2LMHeadModel(GPT2Config(n_positions=4, n_embd=8, n_layer=1, n_head=2))
    >>> big = extend_positions(small, 10)
    >>> big.config.n_positions, bool((big.transformer.wpe.weight[6] == small.transformer.wpe.weight[2]).all())
    (10, True)
    """
    from transformers import GPT2LMHeadModel

    old = lm.config.n_positions
    if positions < old:
        raise ValueError(f"positions must be >= the LM's {old}, got {positions}")
    config = lm.config.to_dict()
    config["n_positions"] = positions
    longer = GPT2LMHeadModel(type(lm.config).from_dict(config))
    state = lm.state_dict()
    table = state["transformer.wpe.weight"]
    state["transformer.wpe.weight"] = table[torch.arange(positions) % old]
    longer.load_state_dict(state)
    return longer.eval()


def reward_model_from_lm(lm_dir: Path, tokenizer: Any, seed: int) -> Any:
    """A GPT-2 NEGATIVE/POSITIVE classifier holding the causal LM's layers and positions.

    Its score head (the LM has none) is drawn under ``seed``; the LM head is dropped.
    """
    from transformers import GPT2ForSequenceClassification
    from transformers.utils import logging

    torch.manual_seed(seed)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the unused LM head and the new score head are meant
    try:
        rm = GPT2ForSequenceClassification.from_pretrained(
            str(lm_dir),
            num_labels=2,
            id2label={0: "NEGATIVE", 1: "POSITIVE"},
            label2id={"NEGATIVE": 0, "POSITIVE": 1},
            pad_token_id=tokenizer.pad_token_id,
        )
    finally:
        logging.set_verbosity(verbosity)
    return rm


def _fine_tune_lm(
    lm: Any, cfg: BuildConfig, stream: np.ndarray, starts: np.ndarray, seed: int
) -> None:
    rng = np.random.default_rng(seed)

    def batch(_: int) -> torch.Tensor:
        return torch.from_numpy(windows(stream, starts, rng, cfg.lm_batch, cfg.long_window))

    def loss(m: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return m(input_ids=ids, labels=ids).loss

    torch.manual_seed(seed)
    train(lm, cfg.long_lm_steps, cfg.long_lm_lr, batch, loss, "lm long")


def build_long(out_dir: Path = ASSET_DIR, cfg: BuildConfig | None = None) -> dict[str, Any]:
    """Build, save and measure ``lm_long`` and ``rm_long`` into ``out_dir``.

    ``out_dir`` must hold a built world (tokenizer, LM, review prompts). Returns the
    task's measured report, also stored under ``"long"`` in ``tasks_report.json``.
    """
    from transformers import AutoModelForCausalLM

    cfg = cfg or BuildConfig()
    out_dir = Path(out_dir)
    check_world(out_dir)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    long_cfg = replace(cfg, context=cfg.long_window)

    corpus = generate_corpus(cfg.n_reviews + cfg.held_out, seed=cfg.seed)
    tokenizer = load_tokenizer(str(out_dir / "tokenizer"))
    stream, starts = token_stream(tokenizer, corpus[: cfg.n_reviews])
    held_stream, held_starts = token_stream(tokenizer, corpus[cfg.n_reviews :])
    prompts = json.loads((out_dir / "prompts_reviews.json").read_text())

    # 1. the LM: the embedded one, at long_context positions, fine-tuned on long_window windows
    base = AutoModelForCausalLM.from_pretrained(str(out_dir / "lm")).eval()
    base_perplexity = perplexity(base, held_stream, held_starts, cfg)  # at its own 128
    lm = extend_positions(base, cfg.long_context)
    _fine_tune_lm(lm, cfg, stream, starts, cfg.seed + 300)
    lm.save_pretrained(str(out_dir / "lm_long"))
    tokenizer.save_pretrained(str(out_dir / "lm_long"))
    lm_report = {
        "positions": cfg.long_context,
        "fine_tune_steps": cfg.long_lm_steps,
        "fine_tune_window": cfg.long_window,
        "held_out_perplexity": perplexity(lm, held_stream, held_starts, long_cfg),
        "held_out_perplexity_128": perplexity(lm, held_stream, held_starts, cfg),
        "held_out_perplexity_128_before": base_perplexity,
    }
    print(f"lm long: {json.dumps(lm_report)}", flush=True)

    # 2. the RM: lm_long's layers and a new score head, VADER's score, half its windows
    # 45 to long_window tokens long
    rm = train_rm(
        replace(cfg, context=cfg.long_window, rm_lr=cfg.long_rm_lr),
        tokenizer,
        stream,
        starts,
        lm.config.n_layer,
        cfg.seed + 310,
        cfg.long_rm_steps,
        long_share=0.5,
        model=reward_model_from_lm(out_dir / "lm_long", tokenizer, cfg.seed + 310),
    )
    rm_dir = out_dir / "rm_long"
    rm.save_pretrained(str(rm_dir))
    tokenizer.save_pretrained(str(rm_dir))

    # 3. measured where the task runs: held-out windows and the LM's completions at its lengths
    prompt_tokens = max(len(p.split()) for p in prompts)
    held_out = held_out_windows(
        held_stream, held_starts, cfg, (LONG_NEW_TOKENS[0], LONG_NEW_TOKENS[1] + prompt_tokens)
    )
    analyzer = vader_analyzer()
    held_vader = vader_scores(tokenizer.batch_decode([h.tolist() for h in held_out]), analyzer)
    samples = sample_eval_completions(
        cfg,
        out_dir / "lm_long",
        out_dir / "tokenizer",
        prompts,
        prompt_tokens,
        new_tokens=LONG_NEW_TOKENS,
        min_new_tokens=LONG_NEW_TOKENS[0],
    )
    samples_vader = vader_scores(samples.texts, analyzer)
    valence = np.abs(np.asarray(token_valence_table(tokenizer)))
    relevance = [valence[c] for c in samples.completion_ids]
    report = measure_reward_model(
        rm_dir, held_out, held_vader, samples, samples_vader, relevance, target="rule"
    )
    report.update(
        task="long",
        rule="sentiment (4 x VADER compound, the default task's) at 140-160 tokens",
        prompts=len(prompts),
        rule_samples_mean=float(np.mean(samples_vader)),
        rule_samples_std=float(np.std(samples_vader)),
        relevant_token_share=float(np.mean(np.concatenate(relevance) > 0)),
        completion_tokens_mean=float(np.mean([len(c) for c in samples.completion_ids])),
        lm=lm_report,
        seed=cfg.seed,
        rm_steps=cfg.long_rm_steps,
        rm_init="lm_long",
        rm_lr=cfg.long_rm_lr,
        build_seconds=time.perf_counter() - started,
    )
    record_task_report("long", report, out_dir)
    return report
