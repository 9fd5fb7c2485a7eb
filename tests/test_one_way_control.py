"""Control flows one way: wrappers ask the environment through reset options and read its
info, and write nothing onto it; two credit wrappers over one environment both work."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llm_gym  # noqa: F401
from llm_gym.envs import LLMCompletionEnv
from llm_gym.rewards import AttentionRequest, CompletionBatch
from llm_gym.wrappers import (
    AttentionCredit,
    PotentialShaping,
    RelevanceCredit,
    SparseReward,
    UniformCredit,
)
from llm_gym.wrappers import vector as vector_wrappers


def play(env, seed, steps=40):
    """Random tokens from a seeded generator until an episode ends; its rewards and last info."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    rewards = []
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(3, 150)))
        rewards.append(reward)
        if terminated or truncated:
            return rewards, info
    raise AssertionError("the episode did not end")


def state(env):
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(env).items()}


WRAPPERS = {
    "sparse": SparseReward,
    "uniform": UniformCredit,
    "abc": lambda e: AttentionCredit(e, beta=0.8),
    "abc-centred": lambda e: AttentionCredit(e, baseline="running_mean"),
    "oracle": lambda e: RelevanceCredit(e, lambda p, c: np.ones(len(c))),
    "pbrs": lambda e: PotentialShaping(e, "reward_model"),
    "pbrs over abc": lambda e: PotentialShaping(AttentionCredit(e), "reward_model"),
}


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_wrapping_writes_nothing_onto_the_environment(name):
    env = LLMCompletionEnv(max_new_tokens=5)
    before = state(env)
    wrapped = WRAPPERS[name](env)
    assert state(env) == before
    # episodes through the wrapper leave the env in the state the same episodes leave it
    # in without the wrapper
    play(wrapped, seed=3)
    after_wrapped = state(env)
    bare = LLMCompletionEnv(max_new_tokens=5)
    play(bare, seed=3)
    after_bare = state(bare)
    for key in ("_attention_requests", "task", "metadata"):
        after_wrapped.pop(key), after_bare.pop(key)
    after_wrapped.pop("_np_random"), after_bare.pop("_np_random")
    assert after_wrapped == after_bare


def test_two_attention_credit_wrappers_over_one_env_each_get_their_own_layer():
    env = LLMCompletionEnv(max_new_tokens=6, reward_model="deep")
    inner = AttentionCredit(env, beta=1.0, layers=0)
    outer = AttentionCredit(inner, beta=1.0, layers=-1)
    rewards, info = play(outer, seed=1)
    batch = CompletionBatch(
        [np.array(info["prompt_ids"])], [np.array(info["completion_ids"])], env.tokenizer
    )
    score = info["score"]
    for wrapper, layer in ((inner, 0), (outer, -1)):
        weights = env.reward_model(batch, AttentionRequest((layer,))).attention[0]
        np.testing.assert_allclose(wrapper.last_token_rewards, score * weights, atol=1e-9)
    np.testing.assert_allclose(info["token_rewards"], outer.last_token_rewards)
    assert not np.allclose(inner.last_token_rewards, outer.last_token_rewards)
    assert sorted(info["rm_attention"]) == ["layers=-1 heads=mean", "layers=0 heads=mean"]


def test_potential_shaping_over_attention_credit_reads_the_env_reward_model():
    env = LLMCompletionEnv(max_new_tokens=5)
    abc = AttentionCredit(env, beta=0.8)
    stack = PotentialShaping(abc, "reward_model")
    assert stack.get_wrapper_attr("reward_model") is env.reward_model
    assert stack.get_wrapper_attr("tokenizer") is env.tokenizer
    shaped, info = play(stack, seed=2)
    plain, _ = play(AttentionCredit(LLMCompletionEnv(max_new_tokens=5), beta=0.8), seed=2)
    # the ABC credit of the same episode plus the shaping terms the stream carries
    terms = np.asarray(shaped) - np.asarray(plain)
    np.testing.assert_allclose(info["token_rewards"], abc.last_token_rewards + terms, atol=1e-6)
    phi0 = stack.potential(np.asarray(info["prompt_ids"]), np.zeros(0, dtype=np.int64))
    assert sum(shaped) == pytest.approx(info["score"] - phi0, abs=1e-5)


def test_an_outer_wrapper_renders_words_not_ids():
    env = UniformCredit(AttentionCredit(LLMCompletionEnv(max_new_tokens=4, render_mode="ansi")))
    _, info = play(env, seed=0)
    text = env.render()
    words = [env.unwrapped.tokenizer.decode([t]) for t in info["completion_ids"]]
    assert all(word.strip() in text for word in words)
    assert "<1" not in text and "<2" not in text


def test_vector_attention_credit_asks_through_reset_and_leaves_the_vector_env_unchanged():
    envs = gym.make_vec("LLMCompletion-v0", num_envs=2, max_new_tokens=3)
    before = {k: v for k, v in vars(envs).items() if k != "envs"}
    wrapped = vector_wrappers.AttentionCredit(envs)
    assert {k: v for k, v in vars(envs).items() if k != "envs"}.keys() == before.keys()
    assert envs._attention_requests == ()
    wrapped.reset(seed=0)
    for _ in range(3):
        _, rewards, terminated, _, infos = wrapped.step(np.array([5, 6]))
    assert terminated.all()
    credit = np.asarray(infos["token_rewards"][0])
    assert credit.sum() == pytest.approx(rewards[0])
    assert len(infos["rm_attention"][wrapped.request.key][0]) == 3
