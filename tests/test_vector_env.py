"""The native vector env: batched scoring, autoreset, equality with SyncVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import PROMPTS
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import llm_gym  # noqa: F401
from llm_gym.envs import LLMCompletionEnv, LLMCompletionVectorEnv, make_task
from llm_gym.rewards import FunctionRewardModel


class CountingRewardModel(FunctionRewardModel):
    """Counts forwards (score calls) and their batch sizes."""

    def __init__(self):
        super().__init__(lambda text: float(len(text.split())))
        self.batch_sizes: list[int] = []

    def score(self, batch, attention=None):
        self.batch_sizes.append(len(batch))
        return super().score(batch, attention)


def options(word_tok_dir, **kwargs):
    base = dict(
        tokenizer=word_tok_dir,
        prompts=PROMPTS,
        max_prompt_tokens=4,
        max_new_tokens=(2, 5),
        reward_model=lambda text: float(text.count("good")) - 0.5 * len(text.split()),
    )
    base.update(kwargs)
    return base


def test_make_vec_uses_native_vector_env(word_tok_dir):
    envs = gym.make_vec("LLMCompletion-v0", num_envs=3, **options(word_tok_dir))
    assert isinstance(envs, LLMCompletionVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = envs.reset(seed=0)
    assert obs["input_ids"].shape == (3, 9) and obs["input_ids"].dtype == np.int64


def test_episodes_ending_together_are_scored_in_one_forward(word_tok_dir):
    rm = CountingRewardModel()
    envs = LLMCompletionVectorEnv(
        8, **options(word_tok_dir, reward_model=rm, max_new_tokens=3, eos_ends_episode=False)
    )
    envs.reset(seed=0)
    for _ in range(3):
        _, rewards, terminated, _, infos = envs.step(np.full(8, 5))
    assert terminated.all() and rm.batch_sizes == [8]
    assert np.array_equal(rewards, infos["score"])
    # next step: NEXT_STEP autoreset, no scoring, reward 0
    _, rewards, terminated, _, _ = envs.step(np.full(8, 5))
    assert not terminated.any() and (rewards == 0).all() and rm.batch_sizes == [8]


def test_equals_sync_vector_env_over_single_envs(word_tok_dir):
    n, steps = 4, 25
    native = gym.make_vec("LLMCompletion-v0", num_envs=n, **options(word_tok_dir))
    sync = SyncVectorEnv(
        [lambda: gym.make("LLMCompletion-v0", **options(word_tok_dir)) for _ in range(n)]
    )
    rng = np.random.default_rng(0)
    obs_a, _ = native.reset(seed=42)
    obs_b, _ = sync.reset(seed=42)
    ended = 0
    for _ in range(steps):
        for key in obs_a:
            assert np.array_equal(obs_a[key], obs_b[key])
        actions = rng.integers(native.single_action_space.n, size=n)
        obs_a, r_a, t_a, tr_a, info_a = native.step(actions)
        obs_b, r_b, t_b, tr_b, info_b = sync.step(actions)
        assert np.array_equal(r_a, r_b) and np.array_equal(t_a, t_b) and np.array_equal(tr_a, tr_b)
        assert sorted(info_a) == sorted(info_b)
        for key in info_a:
            assert [np.asarray(x).tolist() for x in info_a[key]] == [
                np.asarray(x).tolist() for x in info_b[key]
            ]
        ended += int(t_a.sum())
    assert ended >= n  # several episodes, some ending in the same step


def test_shares_one_task_and_checks_actions(word_tok_dir):
    task = make_task(**options(word_tok_dir))
    envs = LLMCompletionVectorEnv(2, completion_task=task)
    assert all(env.task is task for env in envs.envs)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected 2 actions"):
        envs.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"action 99 is not a token id"):
        envs.step(np.array([0, 99]))


def test_single_env_and_vector_env_give_same_episode(word_tok_dir):
    single = LLMCompletionEnv(**options(word_tok_dir))
    vector = LLMCompletionVectorEnv(1, **options(word_tok_dir))
    obs_s, _ = single.reset(seed=7)
    obs_v, _ = vector.reset(seed=7)
    assert np.array_equal(obs_s["input_ids"], obs_v["input_ids"][0])
