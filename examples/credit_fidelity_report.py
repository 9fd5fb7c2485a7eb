"""Credit fidelity of every credit map on the embedded world's reward models.

For each bundled RM: ABC at each layer, the mean of layers and attention
rollout; ABC-D (the starting LM's attention, mean over steps and last step);
uniform; and the oracle itself, on completions of the initial policy, against
the tokens' lexicon relevance. Writes a markdown table.

    python examples/credit_fidelity_report.py [--completions 512] [--out docs/credit_fidelity.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from llm_gym import assets
from llm_gym.agents import sample_completions
from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel
from llm_gym.rewards.credit import credit_fidelity
from llm_gym.rewards.generator import GeneratorAttention
from llm_gym.rewards.loading import load_tokenizer


def completions_of_initial_policy(n: int, new_tokens: int, seed: int) -> CompletionBatch:
    """``n`` completions of the embedded LM on the review prompts, ending at EOS or ``new_tokens``."""
    infos = sample_completions(
        str(assets.LM_DIR),
        n_episodes=n,
        seed=seed,
        tokenizer=str(assets.TOKENIZER_DIR),
        prompts="reviews",
        task=None,
        max_prompt_tokens=8,
        max_new_tokens=new_tokens,
        reward_model=lambda text: 0.0,  # scored below by each reward model
        device="cpu",
    )
    return CompletionBatch(
        [np.asarray(info["prompt_ids"]) for info in infos],
        [np.asarray(info["completion_ids"]) for info in infos],
        load_tokenizer(str(assets.TOKENIZER_DIR)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/credit_fidelity.md"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    batch = completions_of_initial_policy(args.completions, args.new_tokens, args.seed)
    relevance = [assets.token_relevance(c) for c in batch.completion_ids]
    lines = [
        "# Credit fidelity on the embedded world",
        "",
        f"`python examples/credit_fidelity_report.py --completions {args.completions} "
        f"--new-tokens {args.new_tokens} --seed {args.seed}`: {args.completions} completions of "
        f"the initial policy ({args.new_tokens} new tokens), scored against each token's |VADER "
        "valence|. Mass ratio: credit on sentiment tokens / their token share (chance 1.0). "
        "Top-1: how often the largest weight is on a sentiment token (ties split). Spearman: "
        "per-completion rank correlation with |valence|, averaged (chance 0). Only completions "
        "with at least one sentiment token count.",
        "",
        "| reward model | credit map | mass ratio | top-1 (chance) | Spearman | completions |",
        "|---|---|---|---|---|---|",
    ]
    shared = {
        "uniform": "uniform",
        "ABC-D (LM attention, mean over steps)": GeneratorAttention(
            str(assets.LM_DIR), device="cpu"
        ),
        "ABC-D (LM attention, last step)": GeneratorAttention(
            str(assets.LM_DIR), steps="last", device="cpu"
        ),
        "oracle (relevance itself)": lambda b: [r / max(r.sum(), 1e-12) for r in relevance],
    }
    for name in assets.REWARD_MODELS:
        rm = HFRewardModel(assets.reward_model_path(name), device="cpu")
        n_layers = rm.model.config.num_hidden_layers
        maps = {
            f"ABC layer {i}" + (" (last)" if i == n_layers - 1 else ""): AttentionRequest((i,))
            for i in range(n_layers)
        }
        if n_layers > 1:
            maps["ABC mean of layers"] = AttentionRequest(tuple(range(n_layers)))
            maps["ABC attention rollout"] = AttentionRequest(rollout=True)
        maps.update(shared if name == "default" else {"uniform": "uniform"})
        reports = credit_fidelity(batch, relevance, reward_model=rm, credit_maps=maps)
        for label, report in reports.items():
            lines.append(
                f"| {name} ({n_layers} layer{'s' if n_layers > 1 else ''}) | {label} | "
                f"{report.mass_ratio:.2f}x | {report.top_hit_rate:.2f} ({report.top_hit_chance:.2f}) | "
                f"{report.spearman:.2f} | {report.n_completions} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
