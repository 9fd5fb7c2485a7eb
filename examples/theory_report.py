"""Regenerate docs/theory_report.md: reward-shaping claims checked exactly on token trees.

Sections: (1) potential-based shaping, (2) redistribution (ABC, uniform, ABC-D)
at gamma = 1 and gamma < 1, (3) a negative control (a per-token bonus), (4) the
expected policy-gradient update under redistribution and a score offset, (5) sample
efficiency of stock stable-baselines3 algorithms (examples/theory_sample_efficiency.py).

Usage: python examples/theory_report.py [--trees 6] [--seeds 3] [--budget 4000]
       [--out docs/theory_report.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from llm_gym.envs import TokenTreeEnv
from llm_gym.envs.token_tree_models import tiny_causal_lm
from llm_gym.rewards import RewardModel
from llm_gym.theory import compare_solutions, enumerate_tree, is_policy_invariant, solve
from llm_gym.wrappers import (
    AttentionCredit,
    GeneratorAttentionCredit,
    PotentialShaping,
    UniformCredit,
)

N_TOKENS, HORIZON = 3, 4
GAMMAS = (1.0, 0.99, 0.9, 0.5)


def table_reward(seed: int):
    values = np.random.default_rng(seed).normal(size=N_TOKENS**HORIZON)
    weights = N_TOKENS ** np.arange(HORIZON - 1, -1, -1)
    return lambda ids: float(values[int(ids @ weights)])


def random_potential(seed: int):
    rng, table = np.random.default_rng(seed), {}

    def phi(prompt: np.ndarray, prefix: np.ndarray) -> float:
        key = tuple(prefix.tolist())
        if key not in table:
            table[key] = float(rng.normal(scale=3.0))
        return table[key]

    return phi


def potential_shaping(trees: int) -> list[str]:
    rows = ["| gamma | trees invariant | max abs(Q*_shaped - (Q* - Phi)) | return offset spread |"]
    rows.append("|---|---|---|---|")
    for gamma in GAMMAS:
        invariant, q_error, spread = 0, 0.0, 0.0
        for seed in range(trees):
            env = TokenTreeEnv(N_TOKENS, HORIZON, reward=table_reward(seed))
            phi = random_potential(100 + seed)
            shaped = lambda e, p=phi, g=gamma: PotentialShaping(e, p, g)  # noqa: E731
            report = is_policy_invariant(env, shaped, gamma)
            invariant += report.invariant and report.sequences_kept
            spread = max(spread, report.return_offset_spread)
            for t in range(HORIZON):
                for i in range(N_TOKENS**t):
                    prefix = report.base.tree.prefix(t, i)
                    shift = phi(np.array([N_TOKENS]), np.array(prefix, dtype=np.int64))
                    expected = report.base.q_values(prefix) - shift
                    q_error = max(
                        q_error, float(np.abs(report.wrapped.q_values(prefix) - expected).max())
                    )
        rows.append(f"| {gamma} | {invariant}/{trees} | {q_error:.1e} | {spread:.1e} |")
    return rows


def redistribution(trees: int) -> tuple[list[str], list[str]]:
    lm = tiny_causal_lm(N_TOKENS, HORIZON, seed=0)
    wrappers = {
        "ABC beta=0.8": lambda e: AttentionCredit(e, beta=0.8),
        "ABC beta=1": lambda e: AttentionCredit(e, beta=1.0),
        "uniform": UniformCredit,
        "ABC-D beta=0.8": lambda e: GeneratorAttentionCredit(e, model=lm, beta=0.8, device="cpu"),
    }
    header = (
        "| credit | gamma | max abs(G_0 change) | optimal sequences changed | "
        "states with changed optimal actions (mean of 40) | of which on an optimal path |"
    )
    rows = [header, "|---|---|---|---|---|---|"]
    examples: list[str] = []
    for name, wrapper in wrappers.items():
        per_gamma = {g: [0.0, 0, 0, 0] for g in GAMMAS}
        for seed in range(trees):
            env = TokenTreeEnv(N_TOKENS, HORIZON, reward_seed=seed)
            base_tree = enumerate_tree(env)
            wrapped_tree = enumerate_tree(wrapper(env))
            for gamma in GAMMAS:
                report = compare_solutions(
                    solve(base_tree, gamma), solve(wrapped_tree, gamma, view="token_rewards")
                )
                stats = per_gamma[gamma]
                change = report.wrapped.returns[:, 0] - report.base.returns[:, 0]
                stats[0] = max(stats[0], float(np.abs(change).max()))
                stats[1] += not report.sequences_kept
                stats[2] += len(report.changes)
                stats[3] += sum(c.on_optimal_path for c in report.changes)
                if report.changes and len(examples) < 6 and gamma in (1.0, 0.9):
                    examples.append(f"{name}, reward model seed {seed}: {report.summary(3)}")
        for gamma, (g0, seq, states, on_path) in per_gamma.items():
            rows.append(
                f"| {name} | {gamma} | {g0:.1e} | {seq}/{trees} | {states / trees:.1f} | "
                f"{on_path / trees:.1f} |"
            )
    return rows, examples


def negative_control(trees: int) -> tuple[list[str], str]:
    rows = ["| gamma | trees whose optimal policy changed | optimal sequences changed |"]
    rows.append("|---|---|---|")
    example = ""
    for gamma in (1.0, 0.9):
        changed = sequences = 0
        for seed in range(trees):
            env = TokenTreeEnv(N_TOKENS, HORIZON, reward=table_reward(seed))
            report = is_policy_invariant(env, lambda e: TokenBonus(e, token=0), gamma, "stream")
            changed += not report.invariant
            sequences += not report.sequences_kept
            example = example or report.summary(4)
        rows.append(f"| {gamma} | {changed}/{trees} | {sequences}/{trees} |")
    return rows, example


def efficiency_task_credit() -> str:
    """The solver's view of ABC on the sample-efficiency task: Q* along the optimal path."""
    from theory_sample_efficiency import HORIZON as H
    from theory_sample_efficiency import N_TOKENS as N
    from theory_sample_efficiency import matches

    from llm_gym.envs.token_tree_models import tiny_reward_model

    env = TokenTreeEnv(N, H, reward=tiny_reward_model(N, H, seed=0, target=matches))
    report = is_policy_invariant(env, lambda e: AttentionCredit(e, beta=0.8), gamma=1.0)
    lines = [report.summary(4), "", "Q* along the optimal completion (sparse | ABC token rewards):"]
    best = report.base.optimal_sequences()[0]
    for t in range(H):
        prefix = best[:t]
        base = np.round(report.base.q_values(prefix), 3).tolist()
        abc = np.round(report.wrapped.q_values(prefix), 3).tolist()
        lines.append(f"  state {list(prefix)}: {base} | {abc}")
    return "\n".join(lines)


class ScoreOffset(RewardModel):
    """A reward model's scores plus ``offset``, with its attention unchanged."""

    supports_attention = True

    def __init__(self, model: RewardModel, offset: float) -> None:
        self.model, self.offset = model, offset

    def score(self, batch, attention=None):
        output = self.model.score(batch, attention)
        output.scores = np.asarray(output.scores) + self.offset
        return output


#: the policy's mean score, in units of its score standard deviation, that the offset sets
MEAN_SCORES = (0.0, 1.0, 3.0)


def _flat(gradient: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([g.ravel() for g in gradient])


def gradient_alignment(trees: int) -> list[str]:
    """Cosine between each credit scheme's expected PPO-style update and the true gradient."""
    schemes = ("ABC beta=0.8", "ABC beta=0.8, centred", "uniform")
    header = "| credit | " + " | ".join(f"mean score {m:g} sd" for m in MEAN_SCORES) + " |"
    rows = [header, "|---|" + "---|" * len(MEAN_SCORES)]
    cosines = {(name, m): [] for name in schemes for m in MEAN_SCORES}
    for seed in range(trees):
        rm = TokenTreeEnv(N_TOKENS, HORIZON, reward_seed=seed).reward_model
        rng = np.random.default_rng(1000 + seed)
        logits = [rng.normal(scale=0.5, size=(N_TOKENS**t, N_TOKENS)) for t in range(HORIZON)]
        policy = [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits]
        plain = solve(TokenTreeEnv(N_TOKENS, HORIZON, reward=rm))
        reach = plain.visit_probabilities(policy)
        p_sequence = (reach[-1][:, None] * policy[-1]).reshape(-1)
        scores = plain.returns[:, 0]
        mean = float(p_sequence @ scores)
        sd = float(np.sqrt(p_sequence @ (scores - mean) ** 2))
        for m in MEAN_SCORES:
            env = TokenTreeEnv(N_TOKENS, HORIZON, reward=ScoreOffset(rm, m * sd - mean))
            sparse = solve(env)
            true = _flat(sparse.policy_gradient(policy))
            mean_score = sparse.policy_value(policy)  # the baseline a running mean tracks
            wrappers = {
                "ABC beta=0.8": lambda e: AttentionCredit(e, beta=0.8),
                "ABC beta=0.8, centred": lambda e, b=mean_score: AttentionCredit(
                    e, beta=0.8, baseline=b
                ),
                "uniform": UniformCredit,
            }
            for name, wrapper in wrappers.items():
                tree = enumerate_tree(wrapper(env))
                update = _flat(solve(tree, view="token_rewards").policy_gradient(policy))
                cosine = update @ true / (np.linalg.norm(update) * np.linalg.norm(true))
                cosines[(name, m)].append(float(cosine))
    for name in schemes:
        cells = []
        for m in MEAN_SCORES:
            values = np.array(cosines[(name, m)])
            cells.append(f"{values.mean():.3f} (min {values.min():.3f})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def group_alignment(trees: int) -> list[str]:
    """Cosine with the true gradient of the group estimators' expected updates (TokenRLOO)."""
    from llm_gym.wrappers import PotentialShaping

    combos = (
        ("sparse", "returns to go - leave-one-out (RLOO)"),
        ("ABC beta=0.8", "returns to go - leave-one-out (RLOO)"),
        ("ABC beta=0.8, centred", "returns to go - leave-one-out (RLOO)"),
        ("ABC beta=0.8", "group-centred credit"),
        ("uniform", "returns to go - leave-one-out (RLOO)"),
        ("uniform", "group-centred credit"),
        ("prefix-score shaping", "returns to go - leave-one-out (RLOO)"),
    )
    header = (
        "| credit | estimator | " + " | ".join(f"mean score {m:g} sd" for m in MEAN_SCORES) + " |"
    )
    rows = [header, "|---|---|" + "---|" * len(MEAN_SCORES)]
    cosines = {(combo, m): [] for combo in combos for m in MEAN_SCORES}
    for seed in range(trees):
        rm = TokenTreeEnv(N_TOKENS, HORIZON, reward_seed=seed).reward_model
        rng = np.random.default_rng(1000 + seed)
        logits = [rng.normal(scale=0.5, size=(N_TOKENS**t, N_TOKENS)) for t in range(HORIZON)]
        policy = [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits]
        plain = solve(TokenTreeEnv(N_TOKENS, HORIZON, reward=rm))
        p_sequence = plain.sequence_probabilities(policy)
        scores = plain.returns[:, 0]
        mean = float(p_sequence @ scores)
        sd = float(np.sqrt(p_sequence @ (scores - mean) ** 2))
        for m in MEAN_SCORES:
            env = TokenTreeEnv(N_TOKENS, HORIZON, reward=ScoreOffset(rm, m * sd - mean))
            sparse = solve(env)
            true = _flat(sparse.policy_gradient(policy))
            mean_score = sparse.policy_value(policy)
            wrappers = {
                "sparse": None,
                "ABC beta=0.8": lambda e: AttentionCredit(e, beta=0.8),
                "ABC beta=0.8, centred": lambda e, b=mean_score: AttentionCredit(
                    e, beta=0.8, baseline=b
                ),
                "uniform": UniformCredit,
                "prefix-score shaping": lambda e: PotentialShaping(e, "reward_model"),
            }
            solutions = {
                name: solve(enumerate_tree(w(env) if w else env), view="token_rewards")
                if w
                else sparse
                for name, w in wrappers.items()
            }
            for combo in combos:
                name, estimator = combo
                solution = solutions[name]
                if estimator.startswith("group"):
                    update = _flat(solution.group_centred_update(policy))
                else:  # the leave-one-out baseline leaves the expectation unchanged
                    update = _flat(solution.policy_gradient(policy))
                cosine = update @ true / (np.linalg.norm(update) * np.linalg.norm(true))
                cosines[(combo, m)].append(float(cosine))
    for combo in combos:
        cells = []
        for m in MEAN_SCORES:
            values = np.array(cosines[(combo, m)])
            cells.append(f"{values.mean():.3f} (min {values.min():.3f})")
        rows.append(f"| {combo[0]} | {combo[1]} | " + " | ".join(cells) + " |")
    return rows


class TokenBonus(gym.Wrapper):
    """+1 whenever ``token`` is emitted: not a potential difference."""

    def __init__(self, env: gym.Env, token: int) -> None:
        super().__init__(env)
        self.token = token

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward + float(action == self.token), terminated, truncated, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=6, help="random trees per setting")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds for section 5")
    parser.add_argument("--budget", type=int, default=4000, help="training steps for section 5")
    parser.add_argument("--out", default="docs/theory_report.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from theory_sample_efficiency import table as sample_efficiency

    start = time.perf_counter()
    shaping = potential_shaping(args.trees)
    credit, credit_examples = redistribution(args.trees)
    control, control_example = negative_control(args.trees)
    alignment = gradient_alignment(args.trees)
    group = group_alignment(args.trees)
    efficiency_credit = efficiency_task_credit()
    efficiency = sample_efficiency(seeds=args.seeds, budget=args.budget)
    template = (Path(__file__).parent / "theory_report_template.md").read_text()
    text = template.format(
        command=f"python examples/theory_report.py --trees {args.trees} --seeds {args.seeds} "
        f"--budget {args.budget}",
        n_tokens=N_TOKENS,
        horizon=HORIZON,
        trees=args.trees,
        trees_minus_one=args.trees - 1,
        shaping="\n".join(shaping),
        credit="\n".join(credit),
        credit_examples="\n".join(credit_examples) or "(none)",
        control="\n".join(control),
        control_example=control_example,
        alignment="\n".join(alignment),
        group_alignment="\n".join(group),
        efficiency=efficiency,
        efficiency_credit=efficiency_credit,
        seconds=f"{time.perf_counter() - start:.0f}",
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
