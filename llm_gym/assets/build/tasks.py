"""Building one credit-benchmark task's reward model: ``llm-gym build-assets --task NAME``.

Each task of :data:`llm_gym.assets.rules.RULES` brings its own reward model,
trained on its rule's scores of the world's corpus and measured like the
sentiment models (Pearson with the rule, and the credit fidelity of each layer's
attention against the rule's per-token terms). The tokenizer, LM and sentiment
models are read, never rewritten, so the existing tasks reproduce bit for bit.

Holds :data:`TASK_RM_LAYERS`, :func:`build_task`, :func:`check_world`,
:func:`record_task_report` and :func:`write_tasks_card` (the long task, whose LM is
its own too, is built by :mod:`llm_gym.assets.build.long_task`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_gym.assets import ASSET_DIR
from llm_gym.assets.build.config import BuildConfig
from llm_gym.assets.build.corpus import token_stream
from llm_gym.assets.build.measurement import (
    held_out_windows,
    measure_reward_model,
    sample_eval_completions,
)
from llm_gym.assets.build.training import train_rm
from llm_gym.assets.rules import CHARACTER_WORDS, RULES
from llm_gym.assets.world import generate_corpus
from llm_gym.rewards.loading import load_tokenizer

__all__ = [
    "LOOSE_PEARSON",
    "TASKS_REPORT",
    "TASK_RM_LAYERS",
    "build_task",
    "check_world",
    "openings",
    "record_task_report",
    "write_tasks_card",
]

#: layers of each task's reward model (a pair rule needs a second layer to combine words)
TASK_RM_LAYERS = {"decisive": 2, "diffuse": 1, "interaction": 2}
#: the measured report of every task build, by task (next to the assets)
TASKS_REPORT = "tasks_report.json"
#: the Pearson (RM against its rule, on the LM's samples) below which TASKS.md flags a task
LOOSE_PEARSON = 0.8
#: the completion length the tasks' reward models are measured at (the tasks' own)
TASK_NEW_TOKENS = 64


def openings(prompts: list[str]) -> list[str]:
    """The prompts that name no character (the decisive task's, so its completion names the first).

    >>> openings(["the story begins when", "a chef visits"])
    ['the story begins when']
    """
    return [p for p in prompts if not any(w in CHARACTER_WORDS for w in p.split())]


def build_task(
    task: str, out_dir: Path = ASSET_DIR, cfg: BuildConfig | None = None
) -> dict[str, Any]:
    """Train, save and measure the reward model of ``task`` into ``out_dir/rm_<task>``.

    ``out_dir`` must hold the world's tokenizer, LM and review prompts (a built
    world). Returns the task's measured report, also stored in ``tasks_report.json``.
    """
    if task not in RULES:
        raise ValueError(f"no credit-benchmark task {task!r}; expected one of {sorted(RULES)}")
    cfg = cfg or BuildConfig()
    out_dir = Path(out_dir)
    check_world(out_dir)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    rule = RULES[task]
    layers = TASK_RM_LAYERS[task]

    corpus = generate_corpus(cfg.n_reviews + cfg.held_out, seed=cfg.seed)
    tokenizer = load_tokenizer(str(out_dir / "tokenizer"))
    stream, starts = token_stream(tokenizer, corpus[: cfg.n_reviews])
    held_stream, held_starts = token_stream(tokenizer, corpus[cfg.n_reviews :])
    prompts = json.loads((out_dir / "prompts_reviews.json").read_text())
    if task == "decisive":
        prompts = openings(prompts)
        (out_dir / "prompts_openings.json").write_text(json.dumps(prompts, indent=0))

    # half the windows as long as the tasks' texts: the rules sum over the whole text
    rm = train_rm(
        cfg,
        tokenizer,
        stream,
        starts,
        layers,
        cfg.seed + 100 + 10 * layers + sorted(RULES).index(task),
        cfg.rm_steps,
        target=lambda texts: rule.scores(texts),
        long_share=0.5,
    )
    rm_dir = out_dir / f"rm_{task}"
    rm.save_pretrained(str(rm_dir))
    tokenizer.save_pretrained(str(rm_dir))

    held_out = held_out_windows(held_stream, held_starts, cfg)
    held_texts = tokenizer.batch_decode([h.tolist() for h in held_out])
    longest_prompt = max(len(p.split()) for p in prompts)
    samples = sample_eval_completions(
        cfg,
        out_dir / "lm",
        out_dir / "tokenizer",
        prompts,
        longest_prompt,
        new_tokens=TASK_NEW_TOKENS,
        min_new_tokens=TASK_NEW_TOKENS,
    )
    relevance = [rule.relevance(p, c) for p, c in zip(samples.prompt_ids, samples.completion_ids)]
    report = measure_reward_model(
        rm_dir,
        held_out,
        rule.scores(held_texts),
        samples,
        rule.scores(samples.texts),
        relevance,
        target="rule",
    )
    report.update(
        task=task,
        rule=rule.description,
        prompts=len(prompts),
        rule_samples_mean=float(np.mean(rule.scores(samples.texts))),
        rule_samples_std=float(np.std(rule.scores(samples.texts))),
        relevant_token_share=float(np.mean(np.concatenate(relevance) > 0)),
        seed=cfg.seed,
        rm_steps=cfg.rm_steps,
        build_seconds=time.perf_counter() - started,
    )
    record_task_report(task, report, out_dir)
    return report


def check_world(out_dir: Path) -> None:
    """Refuse to build a task's models into a folder without the world they read."""
    for needed in ("tokenizer", "lm", "prompts_reviews.json"):
        if not (Path(out_dir) / needed).exists():
            raise ValueError(
                f"{out_dir} has no {needed}; build the world first (llm-gym build-assets --out "
                f"{out_dir}), then its tasks"
            )


def record_task_report(task: str, report: dict[str, Any], out_dir: Path) -> None:
    """Store one task's report in ``tasks_report.json`` (beside the others) and rewrite TASKS.md."""
    report_path = Path(out_dir) / TASKS_REPORT
    reports = json.loads(report_path.read_text()) if report_path.exists() else {}
    reports[task] = report
    report_path.write_text(json.dumps(dict(sorted(reports.items())), indent=2) + "\n")
    write_tasks_card(reports, out_dir)


def write_tasks_card(reports: dict[str, Any], out_dir: Path) -> None:
    """TASKS.md: each credit-benchmark task's rule, reward model and measured fidelity."""
    lines = [
        "# The credit-benchmark tasks",
        "",
        "Each task scores the embedded world's text by a rule (llm_gym/assets/rules.py) that is an "
        "exact sum of one signed term per word: its signed oracle, and in magnitude its oracle "
        "credit map. Each has its own reward model, trained on the rule's scores of the corpus by "
        "`llm-gym build-assets --task NAME`; the tokenizer, LM and sentiment models are shared and "
        "untouched. Everything below was measured by those builds (also in tasks_report.json); "
        f"the LM's completions are {TASK_NEW_TOKENS} tokens, the tasks' length.",
        "",
        "The long task is the exception: its score is the sentiment tasks' (4 x VADER compound, "
        "whose per-word terms are the sentiment oracle), at 140-160 new tokens, the ABC paper's "
        "longest setting. Prompt and completion take up to 168 tokens, past the 128 positions of "
        "the embedded models, so it brings its own LM (lm_long: the embedded LM with its "
        "positions extended to 256 and fine-tuned on 176-token windows) and RM (rm_long: "
        "lm_long's three layers and a score head, trained on the score; a one-layer RM cannot "
        "pair each negation with its word in texts this long); its row is measured on "
        "lm_long's completions at 140-160 tokens.",
        "",
        "Fidelity: the scoring row's head-mean attention over the completion against the rule's "
        "|term| per token (mass ratio: attention mass on relevant tokens / their share, chance 1; "
        "top-1: how often the largest weight is on a relevant token; Spearman with |term|). On "
        "diffuse every token is relevant with the same |term|, so mass ratio and top-1 are 1 by "
        "construction and Spearman is undefined (nan): there uniform credit is the oracle's map.",
        "",
        "How credit-limited each task is (the oracles' updates to sparse's threshold, against "
        "sparse's) is measured by `llm-gym compare --suite`; the figures are in results/README.md "
        "(suite).",
        "",
        "| task | rule | RM layers | params | build (min) | Pearson with rule (held-out / LM samples) "
        "| LM samples: rule mean (sd) | relevant tokens | credit map | mass ratio | top-1 (chance) "
        "| Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, r in reports.items():
        head = (
            f"| {task} | {r['rule']} | {r['layers']} | {r['params']:,} | "
            f"{r['build_seconds'] / 60:.1f} | {r['held_out_pearson_rule']:.3f} / "
            f"{r['policy_samples_pearson_rule']:.3f} | {r['rule_samples_mean']:+.2f} "
            f"({r['rule_samples_std']:.2f}) | {r['relevant_token_share']:.1%} |"
        )
        blank = "| | | | | | | | |"
        for i, (name, f) in enumerate(r["fidelity"].items()):
            spearman = "nan" if f["spearman"] is None else f"{f['spearman']:.2f}"
            lines.append(
                f"{head if i == 0 else blank} {name} | {f['mass_ratio']:.2f}x | "
                f"{f['top_hit_rate']:.2f} ({f['top_hit_chance']:.2f}) | {spearman} |"
            )
    loose = [t for t, r in reports.items() if r["policy_samples_pearson_rule"] < LOOSE_PEARSON]
    if loose:
        lines += [
            "",
            f"Below {LOOSE_PEARSON} Pearson on the LM's samples ({', '.join(loose)}), the reward "
            "model follows its rule loosely: there the rule's terms are the credit of the rule, "
            "and only approximately of the reward the agents are trained on.",
        ]
    if "long" in reports:
        lm = reports["long"]["lm"]
        lines += [
            "",
            f"lm_long: {lm['positions']} positions, {lm['fine_tune_steps']} fine-tuning steps "
            f"on {lm.get('fine_tune_window', lm['positions'])}-token windows; held-out perplexity "
            f"{lm['held_out_perplexity']:.2f} on windows that long, {lm['held_out_perplexity_128']:.2f} on 128-token windows (the embedded "
            f"LM: {lm['held_out_perplexity_128_before']:.2f}).",
        ]
    (Path(out_dir) / "TASKS.md").write_text("\n".join(lines) + "\n")
