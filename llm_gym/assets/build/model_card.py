"""MODEL_CARD.md of the embedded world, written from the build's measured report.

Holds :func:`write_model_card`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_model_card"]


def write_model_card(report: dict[str, Any], out_dir: Path, fidelity_bar: dict[str, float]) -> None:
    """MODEL_CARD.md: how each asset was built and what was measured."""
    lm, corpus = report["lm"], report["corpus"]
    lines = [
        "# The embedded default world",
        "",
        f"Built by `llm-gym build-assets --seed {report['seed']}` (llm_gym/assets/build/) in "
        f"{report['build_seconds'] / 60:.1f} minutes. Everything below was measured by that build "
        "and is also in build_report.json.",
        "",
        "## Corpus and tokenizer (tokenizer/)",
        f"- {corpus['reviews']} grammar-generated movie reviews (llm_gym/assets/world.py): mostly neutral "
        "plot and production talk, about one sentence in six an opinion with negation, intensifiers "
        f"or a 'but' contrast; {corpus['tokens']} tokens.",
        f"- Sentiment (VADER lexicon) words are {corpus['sentiment_token_share']:.1%} of corpus tokens and "
        f"{lm['sample_sentiment_token_share']:.1%} of the LM's own completions: the score hangs on rare words.",
        f"- Word-level tokenizer, {corpus['vocab']} tokens, `<pad>` (0), `<eos>` (1), `<unk>` (2).",
        "",
        "## Policy / reference LM (lm/)",
        f"- GPT-2 architecture, {lm['layers']} layers, width {lm['width']}, 4 heads, 128 positions, "
        f"{lm['params']:,} parameters; trained on 128-token windows of reviews joined by `<eos>`.",
        f"- Held-out perplexity: {lm['held_out_perplexity']:.2f}.",
        "- Samples (prompt + 32 sampled tokens):",
        *[f"  - `{s}`" for s in lm["samples"][:4]],
        "",
        "## Reward models (rm_default/, rm_deep/)",
        "GPT-2 sequence classifiers, labels NEGATIVE/POSITIVE; score = logit(POSITIVE) - "
        "logit(NEGATIVE), trained with soft labels sigmoid(4 x VADER compound) on 6-128-token windows, "
        "so score is about 4 x VADER compound and neutral text scores about 0. Fidelity: the scoring "
        "row's head-mean attention over the completion, on 512 completions of the LM, against the "
        "tokens' lexicon valence (mass ratio: attention mass on sentiment tokens / their token share, "
        "chance 1.0; top-1: how often the largest weight is on a sentiment token; Spearman with "
        "|valence|, chance 0).",
        "",
        "| RM | layers | params | Pearson vs VADER (held-out) | Pearson (LM samples) | mean score of LM samples | credit map | mass ratio | top-1 (chance) | Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rm in report["reward_models"].items():
        for i, (layer, fid) in enumerate(rm["fidelity"].items()):
            head = (
                f"| {name} | {rm['layers']} | {rm['params']:,} | {rm['held_out_pearson_vader']:.3f} | "
                f"{rm['policy_samples_pearson_vader']:.3f} | {rm['policy_samples_mean_score']:+.3f} "
                if i == 0
                else "| | | | | | "
            )
            lines.append(
                head + f"| {layer} | {fid['mass_ratio']:.2f}x | {fid['top_hit_rate']:.2f} "
                f"({fid['top_hit_chance']:.2f}) | {fid['spearman']:.2f} |"
            )
    lines += [
        "",
        f"The build fails unless the default RM's last layer reaches {fidelity_bar}.",
        "",
        "## Prompts and relevance",
        "- prompts_reviews.json: the first 2-8 tokens of held-out reviews (as the ABC paper does "
        "with IMDb).",
        "- token_valence.json: VADER valence of every token id (0 for neutral tokens); "
        "`llm_gym.assets.token_relevance` is its absolute value, the oracle credit map.",
        "",
    ]
    (Path(out_dir) / "MODEL_CARD.md").write_text("\n".join(lines))
