"""The world build, step by step: :func:`build_world`, and :func:`main`, its command line.

Holds :func:`build_world` and :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_gym.assets import ASSET_DIR
from llm_gym.assets.build.config import BUILDABLE_TASKS, FIDELITY_BAR, BuildConfig, quick_config
from llm_gym.assets.build.corpus import (
    build_tokenizer,
    check_lexicon,
    review_prompts,
    token_stream,
    token_valence_table,
    vader_analyzer,
    vader_scores,
)
from llm_gym.assets.build.long_task import build_long
from llm_gym.assets.build.measurement import (
    held_out_windows,
    measure_reward_model,
    perplexity,
    sample_eval_completions,
)
from llm_gym.assets.build.model_card import write_model_card
from llm_gym.assets.build.tasks import build_task
from llm_gym.assets.build.training import train_lm, train_rm
from llm_gym.assets.world import generate_corpus

__all__ = ["build_world", "main"]

#: the bundled reward models: name -> layers (the default's one layer is the faithful one)
REWARD_MODEL_LAYERS = {"default": 1, "deep": 4}


def build_world(
    out_dir: Path = ASSET_DIR, cfg: BuildConfig | None = None, enforce_fidelity: bool = True
) -> dict[str, Any]:
    """Build every asset into ``out_dir``; returns the measured report (also build_report.json).

    Raises ``RuntimeError`` when ``enforce_fidelity`` and the default RM's last layer
    misses :data:`FIDELITY_BAR`.
    """
    cfg = cfg or BuildConfig()
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    check_lexicon()

    # 1. text: corpus, tokenizer, token streams, the valence table, prompts
    corpus = generate_corpus(cfg.n_reviews + cfg.held_out, seed=cfg.seed)
    train_text, held_text = corpus[: cfg.n_reviews], corpus[cfg.n_reviews :]
    tokenizer = build_tokenizer(train_text, out_dir / "tokenizer")
    stream, starts = token_stream(tokenizer, train_text)
    held_stream, held_starts = token_stream(tokenizer, held_text)
    print(
        f"corpus: {len(train_text)} reviews, {len(stream)} tokens, vocab {len(tokenizer)}",
        flush=True,
    )
    valence = token_valence_table(tokenizer)
    (out_dir / "token_valence.json").write_text(json.dumps(valence))
    sentiment_share = float(np.mean(np.asarray(valence)[stream] != 0))
    prompts = review_prompts(held_text, cfg.n_prompts, cfg.seed)
    (out_dir / "prompts_reviews.json").write_text(json.dumps(prompts, indent=0))

    # 2. the LM, and its own completions (what the initial policy writes)
    lm = train_lm(cfg, tokenizer, stream, starts)
    lm.save_pretrained(str(out_dir / "lm"))
    tokenizer.save_pretrained(str(out_dir / "lm"))
    lm_perplexity = perplexity(lm, held_stream, held_starts, cfg)
    print(f"lm: held-out perplexity {lm_perplexity:.2f}", flush=True)
    longest_prompt = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    samples = sample_eval_completions(
        cfg, out_dir / "lm", out_dir / "tokenizer", prompts, longest_prompt
    )
    analyzer = vader_analyzer()
    samples_vader = vader_scores(samples.texts, analyzer)
    relevance = [np.abs(np.asarray(valence)[c]) for c in samples.completion_ids]
    held_out = held_out_windows(held_stream, held_starts, cfg)
    held_out_vader = vader_scores(tokenizer.batch_decode([h.tolist() for h in held_out]), analyzer)

    report: dict[str, Any] = {
        "seed": cfg.seed,
        "corpus": {
            "reviews": len(train_text),
            "tokens": int(len(stream)),
            "vocab": len(tokenizer),
            "sentiment_token_share": sentiment_share,
        },
        "lm": {
            "layers": cfg.lm_layers,
            "width": cfg.lm_width,
            "params": lm.num_parameters(),
            "held_out_perplexity": lm_perplexity,
            "samples": samples.texts[:6],
            "sample_sentiment_token_share": float(np.mean(np.concatenate(relevance) > 0)),
        },
        "reward_models": {},
    }

    # 3. the reward models, each measured as saved
    for name, layers in REWARD_MODEL_LAYERS.items():
        steps = cfg.rm_steps if name == "default" else cfg.deep_rm_steps
        rm = train_rm(cfg, tokenizer, stream, starts, layers, cfg.seed + 10 * layers, steps)
        rm.save_pretrained(str(out_dir / f"rm_{name}"))
        tokenizer.save_pretrained(str(out_dir / f"rm_{name}"))
        report["reward_models"][name] = measure_reward_model(
            out_dir / f"rm_{name}", held_out, held_out_vader, samples, samples_vader, relevance
        )
        print(f"rm {name}: {json.dumps(report['reward_models'][name], indent=1)}", flush=True)

    # 4. the report, the model card, and the bar
    report["build_seconds"] = time.perf_counter() - started
    (out_dir / "build_report.json").write_text(json.dumps(report, indent=2))
    write_model_card(report, out_dir, FIDELITY_BAR)
    last = report["reward_models"]["default"]["fidelity"]["layer_0"]
    failed = {k: last[k] for k, bar in FIDELITY_BAR.items() if not last[k] >= bar}
    if failed and enforce_fidelity:
        raise RuntimeError(
            f"the default reward model's last-layer attention is not faithful enough: {failed} "
            f"(bar: {FIDELITY_BAR})"
        )
    return report


def main(argv: list[str] | None = None) -> None:
    """``llm-gym build-assets`` / ``python -m llm_gym.assets.build``."""
    parser = argparse.ArgumentParser(
        prog="python -m llm_gym.assets.build",
        description="Build the embedded default world: corpus, tokenizer, tiny LM, tiny reward "
        "models, prompts.",
    )
    parser.add_argument(
        "--out", type=Path, default=ASSET_DIR, help="output folder (default: the package's assets)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="tiny budget, for testing the build itself"
    )
    parser.add_argument(
        "--task",
        action="append",
        choices=BUILDABLE_TASKS,
        help="build only this credit-benchmark task's models (repeatable; a rule task's RM, or "
        "the long task's LM and RM), reading the world already in --out",
    )
    args = parser.parse_args(argv)
    cfg = quick_config(args.seed) if args.quick else BuildConfig(seed=args.seed)
    if args.task:
        for task in dict.fromkeys(args.task):
            report = (
                build_long(args.out, cfg) if task == "long" else build_task(task, args.out, cfg)
            )
            print(f"task {task}: {json.dumps(report, indent=1)}", flush=True)
        return
    build_world(args.out, cfg, enforce_fidelity=not args.quick)
