"""Bad input loses nothing: every rejected call names the bad value and changes no state."""

from __future__ import annotations

import json
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import PROMPTS, word_tokenizer
from gymnasium.vector import SyncVectorEnv
from gymnasium.wrappers import TimeLimit
from hypothesis import given, settings
from hypothesis import strategies as st

import llm_gym  # noqa: F401  (registers the environments)
from llm_gym.agents import TokenPPO
from llm_gym.cli import main
from llm_gym.envs import LLMCompletionEnv
from llm_gym.rewards import (
    AttentionRequest,
    CompletionBatch,
    HFRewardModel,
    RewardModel,
    RewardOutput,
)
from llm_gym.wrappers import AttentionCredit, UniformCredit, redistribute
from llm_gym.wrappers import vector as vector_wrappers


def make(word_tok_dir, **kwargs):
    options = dict(
        tokenizer=word_tok_dir,
        reward_model=lambda text: float(text.count("good") - text.count("bad")),
        prompts=PROMPTS,
        max_prompt_tokens=4,
        max_new_tokens=(3, 6),
    )
    options.update(kwargs)
    return LLMCompletionEnv(**options)


def snapshot(env):
    """Everything an episode of LLMCompletionEnv consists of, and its generator's state."""
    ids, mask = env.window
    return (
        ids.tolist(),
        mask.tolist(),
        env.prompt_ids.tolist(),
        env.completion_ids.tolist(),
        env.horizon,
        json.dumps(env.np_random.bit_generator.state, sort_keys=True),
    )


# ---------------------------------------------------------------- the environment
@pytest.mark.parametrize(
    "options",
    [
        {"prompt": ""},
        {"prompt": "the film was very good and the plot"},  # 9 tokens > max_prompt_tokens
        {"rm_attention": "last layer"},  # not AttentionRequests
        {"rm_attention": (AttentionRequest(),)},  # the function RM has no attention
    ],
)
def test_a_rejected_reset_leaves_the_running_episode_as_it_was(word_tok_dir, options):
    env = make(word_tok_dir)
    env.reset(seed=0)
    env.step(7)
    before = snapshot(env)
    with pytest.raises((ValueError, TypeError, gym.error.Error)):
        env.reset(seed=5, options=options)
    assert snapshot(env) == before
    env.step(8)  # the episode goes on
    assert env.completion_ids.tolist() == [7, 8]


BAD_CALLS = {
    "empty prompt": lambda env: env.reset(seed=1, options={"prompt": ""}),
    "long prompt": lambda env: env.reset(options={"prompt": "good " * 9}),
    "attention option": lambda env: env.reset(options={"rm_attention": 3}),
    "action too large": lambda env: env.step(10_000),
    "negative action": lambda env: env.step(-1),
    "float action": lambda env: env.step(2.5),
    "string action": lambda env: env.step("7"),
}


@settings(max_examples=40, deadline=None)
@given(
    calls=st.lists(st.sampled_from(sorted(BAD_CALLS)), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    steps=st.integers(0, 2),
)
def test_reset_after_any_rejected_calls_equals_a_fresh_reset(word_tok_dir, calls, seed, steps):
    env = make(word_tok_dir)
    env.reset(seed=seed + 1)
    for _ in range(steps):
        env.step(9)
    for name in calls:
        with pytest.raises((ValueError, TypeError, gym.error.Error)):
            BAD_CALLS[name](env)
    obs, _ = env.reset(seed=seed)
    fresh = make(word_tok_dir)
    fresh_obs, _ = fresh.reset(seed=seed)
    assert snapshot(env) == snapshot(fresh)
    for key in obs:
        assert np.array_equal(obs[key], fresh_obs[key])


def test_step_before_reset_says_so(word_tok_dir):
    env = make(word_tok_dir)
    with pytest.raises(gym.error.ResetNeeded, match=r"before reset\(\)"):
        env.step(5)


@pytest.mark.parametrize("value", [2.7, "8", (1, 2, 3), (4, 2), 0, True, [3.0, 5.0], None])
def test_max_new_tokens_of_the_wrong_type_is_named(word_tok_dir, value):
    kwargs = {"max_new_tokens": value}
    if value is None:
        kwargs["task"] = None
    with pytest.raises(ValueError, match="max_new_tokens"):
        make(word_tok_dir, **kwargs)


@pytest.mark.parametrize(
    "option, value",
    [
        ("max_prompt_tokens", 0),
        ("max_prompt_tokens", "4"),
        ("eos_ends_episode", "yes"),
        ("vocab_size", 1.5),
        ("reward_model_kwargs", ["score"]),
        ("device", "gpu9"),
        ("prompts", 42),
    ],
)
def test_options_of_the_wrong_type_are_named(word_tok_dir, option, value):
    with pytest.raises(ValueError, match=option):
        make(word_tok_dir, **{option: value})


def test_completions_longer_than_the_reward_model_are_refused_at_construction(tiny_gpt2_rm):
    # the tiny RM has 64 positions; 4 prompt tokens + 200 new tokens do not fit
    with pytest.raises(ValueError, match=r"up to 204 tokens .* 64 positions"):
        LLMCompletionEnv(
            tokenizer=tiny_gpt2_rm,
            reward_model=tiny_gpt2_rm,
            prompts=PROMPTS,
            max_prompt_tokens=4,
            max_new_tokens=200,
        )


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda text: "good", TypeError, r"returned 'good' \(str\) for the text"),
        (lambda text: None, TypeError, r"returned None \(NoneType\)"),
        (lambda text: np.ones(2), TypeError, r"returned array\("),
        (lambda text: 1 / 0, RuntimeError, r"raised ZeroDivisionError on the text"),
    ],
)
def test_a_bad_reward_function_is_named_and_the_step_is_not_taken(word_tok_dir, fn, error, match):
    env = make(word_tok_dir, reward_model=fn, max_new_tokens=2)
    env.reset(seed=0)
    env.step(7)
    before = snapshot(env)
    with pytest.raises(error, match="FunctionRewardModel.*" + match):
        env.step(8)
    assert snapshot(env) == before  # scored before the token was appended


def test_a_failing_reward_model_leaves_every_sub_environment_as_it_was(word_tok_dir):
    def run(fail_once):
        calls = {"n": 0}

        def score(text):
            calls["n"] += 1
            if fail_once and calls["n"] == 3:
                raise RuntimeError("the scoring service is down")
            return float(len(text))

        envs = gym.make_vec(
            "LLMCompletion-v0",
            num_envs=2,
            tokenizer=word_tok_dir,
            reward_model=score,
            prompts=PROMPTS,
            max_prompt_tokens=4,
            max_new_tokens=2,
            eos_ends_episode=False,
        )
        envs.reset(seed=0)
        results = []
        for actions in ([5, 6], [5, 6], [5, 6], [7, 7], [8, 8]):
            try:
                results.append(envs.step(np.array(actions)))
            except RuntimeError:
                results.append(envs.step(np.array(actions)))  # the same step, once more
        return results

    for (obs_a, r_a, t_a, _, _), (obs_b, r_b, t_b, _, _) in zip(run(True), run(False)):
        assert np.array_equal(r_a, r_b) and np.array_equal(t_a, t_b)
        for key in obs_a:
            assert np.array_equal(obs_a[key], obs_b[key])


def test_a_bad_action_for_one_sub_environment_moves_none(word_tok_dir):
    envs = gym.make_vec(
        "LLMCompletion-v0",
        num_envs=3,
        tokenizer=word_tok_dir,
        reward_model=lambda t: 0.0,
        prompts=PROMPTS,
        max_prompt_tokens=4,
        max_new_tokens=5,
    )
    obs, _ = envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 999 is not a token id"):
        envs.step(np.array([5, 6, 999]))
    with pytest.raises(ValueError, match=r"reset_mask.*shape \(3,\)"):
        envs.reset(options={"reset_mask": np.ones(2, dtype=bool)})
    after, *_ = envs.step(np.array([5, 6, 7]))
    for key in obs:
        assert np.array_equal(after[key][:, :-1], obs[key][:, 1:])


# ---------------------------------------------------------------- time limits
def test_the_vector_env_honours_max_episode_steps_as_sync_mode_does(word_tok_dir):
    options = dict(
        tokenizer=word_tok_dir,
        reward_model=lambda t: float(len(t.split())),
        prompts=PROMPTS,
        max_prompt_tokens=4,
        max_new_tokens=8,
        eos_ends_episode=False,
    )
    native = gym.make_vec("LLMCompletion-v0", num_envs=2, max_episode_steps=3, **options)
    sync = SyncVectorEnv([lambda: gym.make("LLMCompletion-v0", max_episode_steps=3, **options)] * 2)
    native.reset(seed=0), sync.reset(seed=0)
    with pytest.warns(UserWarning, match="not scored|before the environment scored it"):
        for t in range(8):
            a, b = native.step(np.array([5, 6])), sync.step(np.array([5, 6]))
            for key in a[0]:
                assert np.array_equal(a[0][key], b[0][key])
            for x, y in zip(a[1:4], b[1:4]):
                assert np.array_equal(x, y)
            assert a[3].any() == (t in (2, 6))  # cut after 3 tokens, autoreset, cut again
    assert not a[2].any()  # never scored: the time limit cut every episode
    with pytest.raises(ValueError, match=r"max_episode_steps must be an int >= 1, got 0"):
        gym.make_vec("LLMCompletion-v0", num_envs=2, max_episode_steps=0, **options)


def test_an_outer_time_limit_that_cuts_before_scoring_is_warned_about(word_tok_dir):
    env = UniformCredit(TimeLimit(make(word_tok_dir, max_new_tokens=8, eos_ends_episode=False), 3))
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="truncated by an outer time limit before the environment"):
        for _ in range(3):
            _, _, terminated, truncated, info = env.step(5)
    assert truncated and not terminated and "score" not in info


# ---------------------------------------------------------------- credit maps
class AttentionEnv(gym.Env):
    """A custom token env of 3-token episodes answering attention requests with ``weights``."""

    metadata = {"render_modes": [], "rm_attention": True}

    def __init__(self, weights):
        self.weights = weights
        self.action_space = gym.spaces.Discrete(10)
        self.observation_space = gym.spaces.Box(0, 10, (1,), dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.requests, self.t = options["rm_attention"], 0
        return np.zeros(1, dtype=np.int64), {}

    def step(self, action):
        self.t += 1
        if self.t < 3:
            return np.zeros(1, dtype=np.int64), 0.0, False, False, {}
        info = {"score": 2.0, "rm_attention": {r.key: list(self.weights) for r in self.requests}}
        return np.zeros(1, dtype=np.int64), 2.0, True, False, info


@pytest.mark.parametrize(
    "weights, match",
    [
        ([1.0, 1.0, 0.0], r"summing to 2"),
        ([0.5, float("nan"), 0.5], r"non-finite credit weights"),
        ([1.5, -0.5, 0.0], r"negative credit weights"),
        ([0.5, 0.5], r"2 credit weights for a completion of 3 tokens"),
    ],
)
def test_a_bad_credit_map_is_an_error_naming_the_wrapper_and_values(weights, match):
    env = AttentionCredit(AttentionEnv(weights), beta=0.9)
    env.reset(seed=0)
    env.step(1), env.step(1)
    with pytest.raises(ValueError, match="AttentionCredit got .*" + match):
        env.step(1)
    assert AttentionCredit(AttentionEnv([0.2, 0.3, 0.5]), beta=0.9).reset(seed=0) is not None


class BadAttentionRM(RewardModel):
    supports_attention = True

    def score(self, batch, attention=None):
        weights = [np.full(len(c), 2.0 / len(c)) for c in batch.completion_ids]
        return RewardOutput(np.zeros(len(batch)), weights if attention else None)


def test_a_reward_model_returning_bad_attention_is_named():
    tok = word_tokenizer()
    batch = CompletionBatch([np.array([3])], [np.array([4, 5])], tok)
    with pytest.raises(ValueError, match=r"BadAttentionRM returned weights summing to 2"):
        BadAttentionRM()(batch, AttentionRequest())


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=40).filter(lambda w: sum(w) > 0),
    episode_return=st.floats(-100.0, 100.0),
    baseline=st.floats(-100.0, 100.0),
    beta=st.floats(0.0, 1.0),
)
def test_token_rewards_always_sum_to_the_return(weights, episode_return, baseline, beta):
    w = np.asarray(weights) / np.sum(weights)
    credit = redistribute(w, episode_return, beta, baseline)
    assert credit.sum() == pytest.approx(episode_return, abs=1e-9 * (1 + abs(baseline)))


# ---------------------------------------------------------------- reward-model loading
@pytest.fixture
def saved_rm(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(
        GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=30, pad_token_id=0, num_labels=1)
    )
    model.save_pretrained(tmp_path)
    return tmp_path, model


def test_a_folder_with_pickled_weights_only_names_the_real_cause(saved_rm):
    path, model = saved_rm
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(OSError, match=r"holds pytorch_model.bin but no model.safetensors"):
        HFRewardModel(str(path))


def test_a_config_that_needs_remote_code_says_trust_remote_code(saved_rm):
    path, _ = saved_rm
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "custom.Model"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match=r"trust_remote_code=True"):
        HFRewardModel(str(path))


def test_a_truncated_weights_file_names_the_file(saved_rm):
    path, _ = saved_rm
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(OSError, match=rf"{weights}.*truncated or corrupt"):
        HFRewardModel(str(path))


# ---------------------------------------------------------------- agents
def test_token_ppo_refuses_a_non_token_environment_in_its_own_words():
    with pytest.raises(ValueError, match=r"TokenPPO needs a token environment.*Box\("):
        TokenPPO("CausalLMPolicy", gym.make("CartPole-v1"))


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("n_steps", 0, r"n_steps must be an int >= 1"),
        ("batch_size", 1, r"batch_size must be an int >= 2"),
        ("gae_lambda", 1.5, r"gae_lambda must be in \[0, 1\]"),
        ("reward_scale", float("nan"), r"reward_scale must be a finite number"),
        ("kl_target", -1.0, r"target must be None or > 0"),
    ],
)
def test_token_ppo_checks_its_options_before_building_anything(option, value, match):
    made = []

    def factory():
        made.append(1)
        return gym.make("LLMCompletion-v0", max_new_tokens=2)

    with pytest.raises(ValueError, match=match):
        TokenPPO(
            "CausalLMPolicy",
            gym.make("LLMCompletion-v0", max_new_tokens=2),
            n_envs=2,
            env_factory=factory,
            **{option: value},
        )
    assert made == []


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize(
    "argv, match",
    [
        (["compare", "--seeds", "0"], r"--seeds: expected an int >= 1, got '0'"),
        (["demo", "--episodes", "0"], r"--episodes: expected an int >= 1, got '0'"),
        (["compare", "--rewards", "dense"], r"unknown method 'dense'"),
        (["compare", "--new-tokens", "ten"], r"--new-tokens: expected a token count"),
        (["compare", "--beta", "1.5"], r"beta must be a number in \[0, 1\], got 1.5"),
        (["compare", "--reward-model", "/no/such/rm"], r"could not load model '/no/such/rm'"),
    ],
)
def test_a_bad_command_exits_with_one_line_and_writes_nothing(argv, match, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *(["--out", str(out)] if argv[0] == "compare" else [])])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(match, err.strip().splitlines()[-1]), err
    assert not out.exists()


def test_vector_attention_credit_on_a_function_reward_is_refused_at_construction(word_tok_dir):
    envs = gym.make_vec(
        "LLMCompletion-v0",
        num_envs=2,
        tokenizer=word_tok_dir,
        reward_model=lambda t: 0.0,
        prompts=PROMPTS,
        max_prompt_tokens=4,
        max_new_tokens=2,
    )
    with pytest.raises(TypeError, match="has no attention weights"), warnings.catch_warnings():
        vector_wrappers.AttentionCredit(envs)
