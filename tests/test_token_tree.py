"""TokenTree-v0: spaces, seeding, checkers, errors, and the wrapper protocol."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import llm_gym  # noqa: F401  (registers the environments)
from llm_gym.envs import TokenTreeEnv
from llm_gym.envs.token_tree_models import SequenceRewardModel, TokenTreeTokenizer
from llm_gym.rewards import AttentionRequest, CompletionBatch
from llm_gym.wrappers import AttentionCredit, PotentialShaping, UniformCredit


def total(ids: np.ndarray) -> float:
    return float(ids.sum())


def rollout(env: gym.Env, actions: list[int]):
    env.reset(seed=0)
    for action in actions:
        out = env.step(action)
    return out


@pytest.mark.parametrize("observation", ["ids", "onehot"])
@pytest.mark.parametrize("reward", [total, "transformer"])
def test_passes_gymnasium_and_sb3_checkers(observation, reward):
    env = gym.make("TokenTree-v0", n_tokens=3, horizon=3, reward=reward, observation=observation)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)


def test_ids_observation_matches_llm_completion_layout():
    env = TokenTreeEnv(n_tokens=3, horizon=2, reward=total)
    obs, info = env.reset(seed=0)
    assert obs["input_ids"].tolist() == [4, 4, 3] and obs["attention_mask"].tolist() == [0, 0, 1]
    obs, *_ = env.step(2)
    assert obs["input_ids"].tolist() == [4, 3, 2] and obs["attention_mask"].tolist() == [0, 1, 1]
    assert info == {"prompt_ids": [3]}


def test_onehot_observation_marks_each_written_position():
    env = TokenTreeEnv(
        n_tokens=3, horizon=2, reward=total, prompts=[[3], [0, 1]], observation="onehot"
    )
    obs, _ = env.reset(seed=0, options={"prompt": [0, 1]})
    assert obs.tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    obs, *_ = env.step(2)
    assert obs.tolist() == [0, 1, 0, 0, 1, 0, 0, 0]


def test_last_step_info_and_sparse_reward():
    env = TokenTreeEnv(n_tokens=3, horizon=3, reward=total)
    env.reset(seed=0)
    assert env.step(2)[1:4] == (0.0, False, False)
    assert env.step(1)[1] == 0.0
    _, reward, terminated, truncated, info = env.step(2)
    assert (reward, terminated, truncated) == (5.0, True, False)
    assert info["completion_ids"] == [2, 1, 2] and info["prompt_ids"] == [3]
    assert info["token_rewards"] == [0.0, 0.0, 5.0] and info["text"] == "t2 t1 t2"
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def test_seeded_prompt_draws_repeat():
    def draws(seed):
        env = TokenTreeEnv(n_tokens=3, horizon=2, reward=total, prompts=[[3], [0], [1], [2]])
        env.reset(seed=seed)
        return [env.reset()[1]["prompt_ids"][0] for _ in range(10)]

    assert draws(1) == draws(1)
    assert len(set(draws(1))) > 1


def test_transformer_reward_is_seeded():
    actions = [0, 1, 1]
    a = rollout(TokenTreeEnv(3, 3, reward_seed=5), actions)[1]
    b = rollout(TokenTreeEnv(3, 3, reward_seed=5), actions)[1]
    c = rollout(TokenTreeEnv(3, 3, reward_seed=6), actions)[1]
    assert a == b != c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_tokens": 9}, "n_tokens must be in \\[2, 8\\], got 9"),
        ({"horizon": 1}, "horizon must be in \\[2, 8\\], got 1"),
        ({"observation": "pixels"}, "observation must be 'ids' or 'onehot'"),
        ({"prompts": [[7]]}, "prompts must be non-empty sequences of ids in \\[0, 4\\]"),
        ({"reward": 3}, "reward must be a function of the completion ids"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenTreeEnv(**{"reward": total, **kwargs})


def test_bad_action_and_prompt():
    env = TokenTreeEnv(n_tokens=3, horizon=2, reward=total)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expected an int in \\[0, 3\\)"):
        env.step(3)
    with pytest.raises(ValueError, match="not one of the env's prompts"):
        env.reset(options={"prompt": [0]})


def test_attention_credit_applies_unchanged():
    env = AttentionCredit(gym.make("TokenTree-v0", n_tokens=3, horizon=4), beta=1.0)
    *_, info = rollout(env, [0, 2, 1, 1])
    attention = info["rm_attention"][env.request.key]
    assert len(attention) == 4
    assert np.isclose(sum(info["token_rewards"]), info["score"])
    assert np.allclose(np.array(info["token_rewards"]) / info["score"], attention)


def test_uniform_and_shaping_apply():
    env = PotentialShaping(UniformCredit(TokenTreeEnv(3, 2, reward=total)), lambda p, c: len(c))
    *_, info = rollout(env, [2, 2])
    assert info["token_rewards"] == [2.0 + 1.0, 2.0 - 1.0]


def test_function_reward_refuses_attention():
    rm = SequenceRewardModel(total)
    batch = CompletionBatch([np.array([3])], [np.array([1, 2])], TokenTreeTokenizer(3))
    assert rm(batch).scores.tolist() == [3.0]
    with pytest.raises(TypeError, match="has no attention weights"):
        rm(batch, AttentionRequest())
    with pytest.raises(TypeError, match="has no attention weights"):
        rollout(AttentionCredit(TokenTreeEnv(3, 2, reward=total)), [0, 0])
