"""What each reward scheme taught the policy: token shifts after training.

Trains TokenPPO with each method on the default task (the same settings and
seed as ``llm-gym compare``), samples completions from the trained policy and
from the initial one on the same prompts, and reports per method: the mean
score, how many completions hold a sentiment word, positive and negative
sentiment-token counts, the tokens whose frequency rose and fell most, and the
correlation, over neutral tokens, between the RM attention a token draws and
how much more often the policy emits it. A credit map that rewards tokens for
drawing attention, rather than for deciding the score, shows up in that last
number. Writes a markdown report.

    python examples/policy_shift_report.py [--methods sparse oracle abc] [--updates 60]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from llm_gym import assets
from llm_gym.agents import sample_completions
from llm_gym.experiments.compare import PRESETS, make_agent
from llm_gym.rewards import AttentionRequest, CompletionBatch


def sample(model, n: int, seed: int) -> list[dict]:
    """One completion per seeded episode: the same prompts, and draws, for every model."""
    torch.manual_seed(seed)
    return sample_completions(model, n_episodes=n, seed=seed)


def describe(infos: list[dict], task) -> dict:
    prompts = [np.asarray(i["prompt_ids"]) for i in infos]
    completions = [np.asarray(i["completion_ids"]) for i in infos]
    batch = CompletionBatch(prompts, completions, task.tokenizer)
    attention = task.reward_model(batch, AttentionRequest((-1,))).attention
    valence = [assets.token_valence(c) for c in completions]
    counts = collections.Counter(int(t) for c in completions for t in c)
    drawn = collections.defaultdict(list)
    for c, a in zip(completions, attention):
        for token, weight in zip(c, a):
            drawn[int(token)].append(float(weight))
    return {
        "score": float(np.mean([i["score"] for i in infos])),
        "with_sentiment": float(np.mean([np.any(v != 0) for v in valence])),
        "positive": int(sum((v > 0).sum() for v in valence)),
        "negative": int(sum((v < 0).sum() for v in valence)),
        "counts": counts,
        "attention": {t: float(np.mean(w)) for t, w in drawn.items()},
    }


def shifts(before: dict, after: dict) -> list[tuple[float, int]]:
    """(log frequency ratio, token) per token, add-one smoothed."""
    n0, n1 = sum(before["counts"].values()), sum(after["counts"].values())
    tokens = set(before["counts"]) | set(after["counts"])
    return sorted(
        (float(np.log((after["counts"][t] + 1) / n1 / ((before["counts"][t] + 1) / n0))), t)
        for t in tokens
    )


def attention_shift_correlation(before: dict, after: dict, min_count: int = 20) -> float:
    neutral = [
        (before["attention"][t], ratio)
        for ratio, t in shifts(before, after)
        if before["counts"][t] >= min_count and assets.token_valence([t])[0] == 0
    ]
    x, y = np.array(neutral).T
    return float(np.corrcoef(x, y)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["sparse", "oracle", "abc"])
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--completions", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--show", type=int, default=8, help="tokens listed per direction")
    parser.add_argument("--out", default="docs/policy_shift.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = gym.make("LLMCompletion-v0").unwrapped.task
    tokenizer = task.tokenizer
    preset = PRESETS["default"]
    initial_policy = make_agent("sparse", args.seed, preset)
    initial = describe(sample(initial_policy, args.completions, 123), task)
    stats = {"initial policy": initial}
    for method in args.methods:
        print(f"training {method} for {args.updates} updates ...", flush=True)
        model = make_agent(method, args.seed, preset)
        model.learn(args.updates * model.n_steps * model.n_envs)
        stats[method] = describe(sample(model, args.completions, 123), task)

    lines = [
        "# What each reward scheme taught the policy",
        "",
        f"`python examples/policy_shift_report.py --methods {' '.join(args.methods)} "
        f"--updates {args.updates} --seed {args.seed} --completions {args.completions}`: "
        f"TokenPPO with each method for {args.updates} updates on the default task (compare's "
        f"settings, seed {args.seed}), then {args.completions} sampled completions per policy on "
        "the same prompts. One seed: read it as a diagnosis, not a comparison.",
        "",
        "| policy | mean score | completions with a sentiment word | positive / negative "
        "sentiment tokens | corr(RM attention drawn, frequency change), neutral tokens |",
        "|---|---|---|---|---|",
    ]
    for name, s in stats.items():
        corr = "-" if s is initial else f"{attention_shift_correlation(initial, s):+.2f}"
        lines.append(
            f"| {name} | {s['score']:+.3f} | {s['with_sentiment']:.2f} | "
            f"{s['positive']} / {s['negative']} | {corr} |"
        )
    for name, s in stats.items():
        if s is initial:
            continue
        ranked = shifts(initial, s)
        lines += [
            "",
            f"## {name}: tokens emitted more and less often than by the initial policy",
            "",
            "| token | frequency ratio | count before -> after | RM attention it drew (initial) "
            "| valence |",
            "|---|---|---|---|---|",
        ]
        for ratio, t in ranked[::-1][: args.show] + ranked[: args.show]:
            lines.append(
                f"| {tokenizer.decode([t])} | {np.exp(ratio):.2f}x | {initial['counts'][t]} -> "
                f"{s['counts'][t]} | {initial['attention'].get(t, float('nan')):.3f} | "
                f"{assets.token_valence([t])[0]:+.1f} |"
            )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
