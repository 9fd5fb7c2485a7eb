"""LLMCompletion-v0: semantics, seeding, checkers and bad input."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from conftest import PROMPTS, rollout, word_tokenizer
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import llm_gym  # noqa: F401  (registers the environments)
from llm_gym.envs import LLMCompletionEnv
from llm_gym.rewards import FunctionRewardModel


def make(word_tok_dir, **kwargs):
    options = dict(
        tokenizer=word_tok_dir,
        reward_model=lambda text: float(text.count("good") - text.count("bad")),
        prompts=PROMPTS,
        max_prompt_tokens=4,
        max_new_tokens=6,
    )
    options.update(kwargs)
    return gym.make("LLMCompletion-v0", **options)


def test_default_world_episode():
    env = gym.make("LLMCompletion-v0")
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"].dtype == np.int64 and obs["input_ids"].shape == (8 + 64,)
    steps = rollout(env, np.random.default_rng(0), seed=0)
    info = steps[-1][2]
    assert set(info) == {"prompt_ids", "completion_ids", "score", "text", "token_rewards"}
    assert np.isfinite(info["score"]) and steps[-1][1] == info["score"]
    assert len(info["completion_ids"]) == 64  # the default task runs to its horizon


@pytest.mark.parametrize("checker", [check_env, sb3_check_env])
def test_passes_env_checkers(word_tok_dir, checker):
    env = make(word_tok_dir).unwrapped
    checker(env)


def test_observation_is_left_padded_and_grows(word_tok_dir):
    env = make(word_tok_dir, eos_ends_episode=False)
    obs, _ = env.reset(seed=3)
    prompt = env.unwrapped.prompt_ids
    n = len(prompt)
    assert np.array_equal(obs["input_ids"][-n:], prompt)
    assert obs["attention_mask"].sum() == n and obs["attention_mask"][-n:].all()
    obs, *_ = env.step(7)
    assert obs["input_ids"][-1] == 7 and obs["attention_mask"].sum() == n + 1
    assert np.array_equal(obs["input_ids"][-n - 1 : -1], prompt)


def test_sparse_reward_and_last_step_info(word_tok_dir):
    env = make(word_tok_dir, eos_ends_episode=False)
    tok = env.unwrapped.tokenizer
    good = tok.convert_tokens_to_ids("good")
    env.reset(seed=0)
    rewards = []
    for _ in range(6):
        _, reward, terminated, truncated, info = env.step(good)
        rewards.append(reward)
        assert truncated is False and isinstance(terminated, bool)
    assert terminated and rewards[:-1] == [0.0] * 5
    assert rewards[-1] == info["score"] == 6.0
    assert info["completion_ids"] == [good] * 6
    assert info["token_rewards"] == [0.0] * 5 + [6.0]
    assert info["prompt_ids"] == env.unwrapped.prompt_ids.tolist()
    assert info["text"] == "good good good good good good"


def test_eos_ends_episode_only_after_min_new_tokens(word_tok_dir):
    env = make(word_tok_dir, min_new_tokens=2)
    eos = env.unwrapped.tokenizer.eos_token_id
    env.reset(seed=0)
    assert env.step(eos)[2] is False  # before min_new_tokens EOS is an ordinary token
    assert env.step(eos)[2] is True
    env = make(word_tok_dir, eos_ends_episode=False)
    env.reset(seed=0)
    assert not any(env.step(eos)[2] for _ in range(5))


def test_horizon_range_sampled_per_episode(word_tok_dir):
    env = make(word_tok_dir, max_new_tokens=(2, 5), eos_ends_episode=False)
    lengths = {len(rollout(env, np.random.default_rng(s), seed=s)) - 1 for s in range(30)}
    assert lengths == {2, 3, 4, 5}
    assert env.observation_space["input_ids"].shape == (4 + 5,)


def test_same_seed_and_actions_give_identical_episodes(word_tok_dir):
    env = make(word_tok_dir, max_new_tokens=(3, 6))
    a = rollout(env, np.random.default_rng(5), seed=11)
    b = rollout(env, np.random.default_rng(5), seed=11)
    assert len(a) == len(b)
    for (obs_a, r_a, info_a), (obs_b, r_b, info_b) in zip(a, b):
        assert all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_a)
        assert r_a == r_b and info_a == info_b
    prompts = {tuple(make(word_tok_dir).reset(seed=s)[0]["input_ids"]) for s in range(20)}
    assert len(prompts) > 1  # the seed really draws the prompt


def test_infos_and_observations_are_fresh_objects(word_tok_dir):
    env = make(word_tok_dir, eos_ends_episode=False)
    obs1, _ = env.reset(seed=0)
    obs2, *_ = env.step(5)
    assert obs1["input_ids"] is not obs2["input_ids"]
    assert (
        obs1["input_ids"][-1] != 5 or obs1["attention_mask"].sum() != obs2["attention_mask"].sum()
    )


def test_render_ansi(word_tok_dir):
    env = make(word_tok_dir, render_mode="ansi", eos_ends_episode=False)
    env.reset(seed=0, options={"prompt": "the film was"})
    env.step(env.unwrapped.tokenizer.convert_tokens_to_ids("good"))
    assert env.render() == "the film was \u2502 good\n"


# ------------------------------------------------------------------ bad input
def test_action_outside_space_names_it(word_tok_dir):
    env = make(word_tok_dir)
    env.reset(seed=0)
    n = int(env.action_space.n)
    for bad in (n, -1, 2.5, "x"):
        with pytest.raises(
            ValueError, match=re.escape(f"action {bad!r} is not a token id") + rf".*Discrete\({n}\)"
        ):
            env.step(bad)


def test_step_after_end_needs_reset(word_tok_dir):
    env = make(word_tok_dir, eos_ends_episode=False, max_new_tokens=1)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(3)  # never reset
    env.reset(seed=0)
    env.step(3)
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(3)


def test_prompt_too_long_is_an_error_or_left_truncated(word_tok_dir):
    long_prompt = "the film was very very good but the plot"
    with pytest.raises(ValueError, match=r"has 9 tokens, more than max_prompt_tokens=4"):
        make(word_tok_dir, prompts=[long_prompt])
    env = make(word_tok_dir, prompts=[long_prompt], truncate_prompts=True)
    env.reset(seed=0)
    assert env.unwrapped.tokenizer.decode(env.unwrapped.prompt_ids.tolist()) == "good but the plot"


def test_missing_models_name_themselves(word_tok_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        OSError, match=r"could not load model 'no-such-org/no-such-rm'.*offline|HF_HUB_OFFLINE"
    ):
        make(word_tok_dir, reward_model="no-such-org/no-such-rm")
    with pytest.raises(OSError, match=r"could not load tokenizer '/nonexistent/tok'"):
        make(word_tok_dir, tokenizer="/nonexistent/tok")


def test_tokenizer_without_pad_token_is_handled(tiny_gpt2_rm):
    tok = word_tokenizer(pad=False)
    assert tok.pad_token_id is None
    env = gym.make(
        "LLMCompletion-v0",
        tokenizer=tok,
        reward_model=lambda t: 1.0,
        prompts=PROMPTS,
        max_prompt_tokens=4,
        max_new_tokens=3,
    )
    obs, _ = env.reset(seed=0)
    assert (obs["input_ids"][obs["attention_mask"] == 0] == tok.eos_token_id).all()
    assert rollout(env, np.random.default_rng(0), seed=0)[-1][1] == 1.0
    assert tok.pad_token_id is None  # the user's tokenizer is not modified


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_score_names_the_text(word_tok_dir, bad):
    env = make(
        word_tok_dir, reward_model=lambda text: bad, eos_ends_episode=False, max_new_tokens=1
    )
    env.reset(seed=0, options={"prompt": "the film"})
    with pytest.raises(ValueError, match=r"non-finite score .* 'the film good'"):
        env.step(env.unwrapped.tokenizer.convert_tokens_to_ids("good"))


def test_invalid_options(word_tok_dir):
    with pytest.raises(ValueError, match="max_new_tokens"):
        make(word_tok_dir, max_new_tokens=(5, 2))
    with pytest.raises(ValueError, match="min_new_tokens"):
        make(word_tok_dir, min_new_tokens=9)
    with pytest.raises(ValueError, match="task must be one of"):
        make(word_tok_dir, task="nope")
    with pytest.raises(ValueError, match="prompts is empty"):
        make(word_tok_dir, prompts=[])
    with pytest.raises(ValueError, match="render_mode"):
        make(word_tok_dir, render_mode="human")


def test_function_reward_model_scores_full_or_completion_text(word_tok_dir):
    env = LLMCompletionEnv(
        tokenizer=word_tok_dir,
        prompts=["good"],
        max_prompt_tokens=4,
        max_new_tokens=1,
        eos_ends_episode=False,
        reward_model=FunctionRewardModel(lambda t: t.count("good"), on="completion"),
    )
    env.reset(seed=0)
    assert env.step(env.tokenizer.convert_tokens_to_ids("bad"))[1] == 0.0
