"""TokenPPO learns on the embedded default world (sparse reward) without collapsing."""

from __future__ import annotations

import time

import gymnasium as gym
import pytest
from agents_world import one_thread  # noqa: F401  (autouse fixture)

from llm_gym.agents import TokenPPO, evaluate_completions

NEW_TOKENS = 8


@pytest.mark.slow
def test_sparse_reward_score_goes_up_without_collapse():
    env = gym.make_vec("LLMCompletion-v0", num_envs=16, max_new_tokens=NEW_TOKENS)
    # a short run: a larger step size and a quicker KL controller than the defaults
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=NEW_TOKENS,
        batch_size=64,
        learning_rate=5e-4,
        kl_horizon=1000,
        seed=0,
    )
    before = evaluate_completions(model, n_episodes=128, seed=1000, max_new_tokens=NEW_TOKENS)
    start = time.perf_counter()
    model.learn(16 * NEW_TOKENS * 48)
    seconds = time.perf_counter() - start
    after = evaluate_completions(model, n_episodes=128, seed=1000, max_new_tokens=NEW_TOKENS)
    print(
        f"\nscore {before['score']:+.2f} -> {after['score']:+.2f}, distinct "
        f"{before['distinct']:.2f} -> {after['distinct']:.2f}, KL coef {model.kl.coef:.3f}, "
        f"{seconds:.0f} s"
    )
    assert after["score"] > before["score"] + 0.5
    assert after["distinct"] > 0.6


def test_sample_completions_are_seeded_and_match_evaluate_completions():
    import numpy as np
    import torch

    from llm_gym.agents import sample_completions

    env = gym.make("LLMCompletion-v0", max_new_tokens=4)
    model = TokenPPO("CausalLMPolicy", env, n_envs=2, n_steps=4, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(sample_completions(model, n_episodes=6, seed=3, max_new_tokens=4))
    for a, b in zip(*runs, strict=True):
        assert list(a["prompt_ids"]) == list(b["prompt_ids"])
        assert list(a["completion_ids"]) == list(b["completion_ids"])
    # episode i is seeded with seed + i, as a single env seeded that way draws its prompt
    for i, info in enumerate(runs[0]):
        single = gym.make("LLMCompletion-v0", max_new_tokens=4).unwrapped
        single.reset(seed=3 + i)
        assert np.array_equal(single.prompt_ids, info["prompt_ids"])
    torch.manual_seed(7)
    summary = evaluate_completions(model, n_episodes=6, seed=3, max_new_tokens=4)
    assert summary["score"] == np.mean([info["score"] for info in runs[0]])
