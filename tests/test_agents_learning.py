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
