"""Reward wrappers on a token environment defined here and on LLMCompletionEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import build_reward_model, random_batch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForSequenceClassification

from llm_gym.envs import LLMCompletionEnv, LLMCompletionVectorEnv, make_task
from llm_gym.envs.protocol import attention_requests
from llm_gym.rewards import AttentionRequest, CompletionBatch, credit_fidelity
from llm_gym.wrappers import (
    AttentionCredit,
    GeneratorAttentionCredit,
    PotentialShaping,
    SparseReward,
    UniformCredit,
    credit_html,
    credit_png,
)
from llm_gym.wrappers import vector as vector_wrappers

VOCAB = 191  # the embedded world's tokenizer


class TokenEnv(gym.Env):
    """A token environment outside llm_gym: R = (#token 10) - (#token 20) + 0.5, at the end.

    With ``attention=True`` it follows the attention protocol with its own
    random weights; with ``ids=False`` its last info lacks the token ids.
    """

    def __init__(self, attention: bool = False, ids: bool = True, tokenizer=None) -> None:
        self.action_space = spaces.Discrete(VOCAB)
        self.observation_space = spaces.Box(0, VOCAB, shape=(1,), dtype=np.int64)
        self.metadata = {"render_modes": [], **({"rm_attention": True} if attention else {})}
        self._requests = ()
        if tokenizer is not None:
            self.tokenizer = tokenizer
        self.ids = ids
        self._prompt: list[int] = []
        self._completion: list[int] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._requests = attention_requests(options)
        self._prompt = self.np_random.integers(
            3, VOCAB, size=self.np_random.integers(2, 5)
        ).tolist()
        self._completion = []
        self._horizon = int(self.np_random.integers(3, 9))
        return np.array([self._prompt[-1]]), {"prompt_ids": list(self._prompt)}

    def step(self, action):
        self._completion.append(int(action))
        if len(self._completion) < self._horizon:
            return np.array([int(action)]), 0.0, False, False, {}
        score = self._completion.count(10) - self._completion.count(20) + 0.5
        info = {}
        if self.ids:
            info = {"prompt_ids": list(self._prompt), "completion_ids": list(self._completion)}
        if self._requests:
            weights = self.np_random.dirichlet(np.ones(len(self._completion))).tolist()
            info["rm_attention"] = {request.key: weights for request in self._requests}
        return np.array([int(action)]), score, True, False, info


def run_episode(env, actions, seed=None, options=None):
    """Play ``actions`` (cycled) until the episode ends; returns rewards and the last info."""
    env.reset(seed=seed, options=options)
    rewards, t = [], 0
    while True:
        _, reward, terminated, truncated, info = env.step(int(actions[t % len(actions)]))
        rewards.append(reward)
        t += 1
        if terminated or truncated:
            return rewards, info


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, env_tokenizer):
    path = tmp_path_factory.mktemp("rm")
    build_reward_model("gpt2", path, env_tokenizer)
    return path


@pytest.fixture(scope="module")
def task(rm_dir, env_tokenizer):
    from llm_gym.rewards import HFRewardModel

    return make_task(
        None,
        prompts=["the film was", "a story", "film follows story"],
        tokenizer=env_tokenizer,
        reward_model=HFRewardModel(str(rm_dir), device="cpu"),
        max_prompt_tokens=4,
        max_new_tokens=(3, 7),
    )


# ---------------------------------------------------------------- return preservation
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    beta=st.floats(0.0, 1.0),
    actions=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=10),
)
def test_every_scheme_keeps_the_return(seed, beta, actions):
    for env in (
        AttentionCredit(TokenEnv(attention=True), beta=beta),
        UniformCredit(TokenEnv()),
        SparseReward(TokenEnv()),
    ):
        rewards, info = run_episode(env, actions, seed)
        assert rewards[:-1] == [0.0] * (len(rewards) - 1), "the step stream stays sparse"
        assert len(info["token_rewards"]) == len(rewards)
        assert abs(sum(info["token_rewards"]) - sum(rewards)) < 1e-9
    phi = lambda prompt, prefix: float(np.sin(len(prefix) + prompt.sum()))  # noqa: E731
    shaped, info = run_episode(PotentialShaping(TokenEnv(), phi), actions, seed)
    plain, _ = run_episode(TokenEnv(), actions, seed)
    prompt = np.asarray(TokenEnv().reset(seed=seed)[1]["prompt_ids"])
    assert abs(sum(shaped) - (sum(plain) - phi(prompt, np.zeros(0)))) < 1e-9
    assert info["token_rewards"] == shaped


def test_attention_credit_formula_on_custom_env():
    rewards, info = run_episode(AttentionCredit(TokenEnv(attention=True), beta=0.6), [10, 4], 3)
    _, plain = run_episode(TokenEnv(attention=True), [10, 4], 3)
    env = TokenEnv(attention=True)
    request = AttentionRequest()
    _, with_attention = run_episode(env, [10, 4], 3, options={"rm_attention": (request,)})
    r = rewards[-1]
    expected = 0.6 * r * np.asarray(with_attention["rm_attention"][request.key])
    expected[-1] += 0.4 * r
    np.testing.assert_allclose(info["token_rewards"], expected, atol=1e-12)


def test_uniform_is_uniform_and_sparse_is_sparse():
    rewards, info = run_episode(UniformCredit(TokenEnv()), [10, 10, 3], 1)
    np.testing.assert_allclose(info["token_rewards"], rewards[-1] / len(rewards))
    rewards, info = run_episode(SparseReward(TokenEnv()), [10, 10, 3], 1)
    assert info["token_rewards"] == rewards


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_potential_shaping_telescopes(gamma):
    phi = lambda prompt, prefix: 0.3 * len(prefix) + 0.01 * prompt.sum()  # noqa: E731
    shaped, _ = run_episode(PotentialShaping(TokenEnv(), phi, gamma=gamma), [10, 20, 10], 5)
    plain, _ = run_episode(TokenEnv(), [10, 20, 10], 5)
    prompt = np.asarray(TokenEnv().reset(seed=5)[1]["prompt_ids"])
    discount = gamma ** np.arange(len(plain))
    # sum_t gamma^t r'_t = sum_t gamma^t r_t + gamma^T Phi(terminal) - Phi(s_0), Phi(terminal) = 0
    assert np.dot(discount, shaped) == pytest.approx(np.dot(discount, plain) - phi(prompt, []))


def test_shaping_composes_with_redistribution():
    phi = lambda prompt, prefix: 0.2 * len(prefix)  # noqa: E731
    env = PotentialShaping(UniformCredit(TokenEnv()), phi)
    shaped, info = run_episode(env, [10, 3], 2)
    plain, _ = run_episode(TokenEnv(), [10, 3], 2)
    uniform = np.full(len(plain), plain[-1] / len(plain))
    terms = np.asarray(shaped) - np.asarray(plain)
    np.testing.assert_allclose(info["token_rewards"], uniform + terms)


# ---------------------------------------------------------------- ABC on the real env
def eager_abc(rm_dir, info, beta):
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, attn_implementation="eager")
    ids = torch.tensor([info["prompt_ids"] + info["completion_ids"]])
    with torch.no_grad():
        attention = model(input_ids=ids, output_attentions=True).attentions[-1]
    row = attention[0, :, -1].mean(0).double().numpy()[len(info["prompt_ids"]) :]
    expected = beta * info["score"] * row / row.sum()
    expected[-1] += (1 - beta) * info["score"]
    return expected


def test_abc_equals_independent_eager_computation(task, rm_dir):
    env = AttentionCredit(LLMCompletionEnv(completion_task=task), beta=0.8)
    for seed in range(3):
        rewards, info = run_episode(env, [10, 11, 12, 5], seed)
        assert rewards[-1] == info["score"]
        np.testing.assert_allclose(info["token_rewards"], eager_abc(rm_dir, info, 0.8), atol=1e-6)


def test_abc_is_deterministic_under_a_seed(task):
    first = run_episode(AttentionCredit(LLMCompletionEnv(completion_task=task)), [7, 9], 11)
    second = run_episode(AttentionCredit(LLMCompletionEnv(completion_task=task)), [7, 9], 11)
    assert first[1]["token_rewards"] == second[1]["token_rewards"]


def test_abc_from_a_given_reward_model_on_custom_env(task, env_tokenizer):
    env = AttentionCredit(
        TokenEnv(tokenizer=env_tokenizer), beta=1.0, reward_model=task.reward_model
    )
    rewards, info = run_episode(env, [10, 30, 40], 4)
    batch = CompletionBatch(
        [np.array(info["prompt_ids"])], [np.array(info["completion_ids"])], env_tokenizer
    )
    weights = task.reward_model(batch, AttentionRequest()).attention[0]
    np.testing.assert_allclose(info["token_rewards"], rewards[-1] * weights, atol=1e-12)


@pytest.mark.parametrize("wrapper", [SparseReward, UniformCredit, AttentionCredit])
def test_vector_wrappers_equal_single_env(task, wrapper):
    n, steps = 3, 25
    envs = getattr(vector_wrappers, wrapper.__name__)(
        LLMCompletionVectorEnv(n, completion_task=task)
    )
    actions = np.random.default_rng(0).integers(3, VOCAB, size=(steps, n))
    envs.reset(seed=0)
    vector_credit = [[] for _ in range(n)]
    for t in range(steps):
        _, _, terminated, _, infos = envs.step(actions[t])
        for i in np.flatnonzero(terminated):
            vector_credit[i].append(infos["token_rewards"][i])
    for i in range(n):
        env = wrapper(LLMCompletionEnv(completion_task=task))
        env.reset(seed=i)
        single, ended = [], False
        for t in range(steps):
            if ended:
                env.reset()
                ended = False
                continue
            _, _, ended, _, info = env.step(int(actions[t, i]))
            if ended:
                single.append(info["token_rewards"])
        assert len(single) == len(vector_credit[i]) >= 2
        for a, b in zip(single, vector_credit[i], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- ABC-D
def test_generator_attention_credit(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=4)).save_pretrained(
        tmp_path
    )
    for steps in ("mean", "last"):
        env = GeneratorAttentionCredit(
            TokenEnv(), str(tmp_path), beta=1.0, steps=steps, device="cpu"
        )
        rewards, info = run_episode(env, [10, 11, 12, 13], 0)
        model = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager")
        n = len(info["prompt_ids"])
        ids = torch.tensor([info["prompt_ids"] + info["completion_ids"]])
        with torch.no_grad():
            block = model(ids, output_attentions=True).attentions[-1][0, :, n:, n:].mean(0)
        block = (block / block.sum(-1, keepdim=True)).double().numpy()
        w = block[-1] if steps == "last" else block.mean(0)
        np.testing.assert_allclose(info["token_rewards"], rewards[-1] * w / w.sum(), atol=1e-6)


# ---------------------------------------------------------------- protocol errors
def test_bad_beta_is_an_error():
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\].*1.5"):
        AttentionCredit(TokenEnv(attention=True), beta=1.5)
    with pytest.raises(ValueError, match="beta"):
        AttentionCredit(TokenEnv(attention=True), beta=-0.1)


def test_missing_protocol_pieces_are_named(task):
    with pytest.raises(gym.error.Error, match="rm_attention"):
        AttentionCredit(TokenEnv())
    env = AttentionCredit(
        TokenEnv(ids=False, tokenizer=task.tokenizer), reward_model=task.reward_model
    )
    with pytest.raises(gym.error.Error, match="prompt_ids"):
        run_episode(env, [10], 0)
    with pytest.raises(gym.error.Error, match="tokenizer"):
        AttentionCredit(TokenEnv(), reward_model=task.reward_model)


def test_wrappers_record_constructor_args():
    env = AttentionCredit(TokenEnv(attention=True), beta=0.3, layers=0)
    assert env._saved_kwargs["beta"] == 0.3 and env.request.layers == (0,)


# ---------------------------------------------------------------- seeing and measuring credit
def test_rendering(task, tmp_path):
    env = AttentionCredit(LLMCompletionEnv(completion_task=task, render_mode="ansi"))
    _, info = run_episode(env, [10, 11, 12], 0)
    text = env.render()
    assert text.count("\x1b[48;2;") == len(info["completion_ids"])
    tokens = [task.tokenizer.decode([t]) for t in info["completion_ids"]]
    assert credit_html(tokens, info["token_rewards"]).count("<span") == len(tokens)
    png = credit_png(tokens, info["token_rewards"], tmp_path / "credit.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_credit_fidelity(task, env_tokenizer):
    batch = random_batch(env_tokenizer, 6, seed=1)
    relevance = [(c % 7 == 0).astype(float) for c in batch.completion_ids]
    oracle = lambda b: [r / r.sum() if r.sum() else np.ones(len(r)) / len(r) for r in relevance]  # noqa: E731
    reports = credit_fidelity(batch, relevance, task.reward_model)
    assert set(reports) == {"uniform", "last layer", "first layer", "mean of layers", "rollout"}
    assert reports["uniform"].mass_ratio == pytest.approx(1.0)
    maps = {"oracle": oracle, "uniform": "uniform"}
    reports = credit_fidelity(batch, relevance, credit_maps=maps)
    assert reports["oracle"].mass_ratio > reports["uniform"].mass_ratio
    assert reports["oracle"].top_hit_rate == 1.0


def test_reward_model_potential_is_incremental_and_exact(task):
    from llm_gym.wrappers import RewardModelPotential

    potential = RewardModelPotential(task.reward_model, task.tokenizer)
    assert potential.incremental
    prompt, completion = np.array([5, 10, 11]), np.array([12, 13, 14, 15])
    for t in range(len(completion) + 1):
        value = potential(prompt, completion[:t])
        batch = CompletionBatch([prompt], [completion[:t]], task.tokenizer)
        assert value == pytest.approx(float(task.reward_model(batch).scores[0]), abs=1e-5)


def test_reward_model_shaping_telescopes_on_the_completion_env(task):
    env = PotentialShaping(LLMCompletionEnv(completion_task=task), "reward_model")
    shaped, info = run_episode(env, [10, 11, 12], 2)
    prompt = np.asarray(info["prompt_ids"])
    phi0 = task.reward_model(CompletionBatch([prompt], [np.zeros(0, int)], task.tokenizer)).scores[
        0
    ]
    assert sum(shaped) == pytest.approx(info["score"] - phi0, abs=1e-5)
    assert info["token_rewards"] == shaped


def test_abc_on_an_episode_truncated_before_scoring(task):
    env = AttentionCredit(gym.wrappers.TimeLimit(LLMCompletionEnv(completion_task=task), 2))
    rewards, info = run_episode(env, [10, 11, 12], 0)
    assert rewards == [0.0, 0.0] and info["token_rewards"] == [0.0, 0.0]


# ---------------------------------------------------------------- relevance (oracle) credit
def test_relevance_credit_follows_relevance_and_keeps_return():
    from llm_gym.wrappers import RelevanceCredit

    relevance = lambda prompt, completion: (np.asarray(completion) == 10).astype(float)  # noqa: E731
    env = RelevanceCredit(TokenEnv(), relevance, beta=0.8)
    rewards, info = run_episode(env, [10, 5, 5, 5, 5, 5, 5, 5], seed=3)
    token_rewards = np.asarray(info["token_rewards"])
    score = sum(rewards)
    assert token_rewards.sum() == pytest.approx(score)
    assert token_rewards[0] == pytest.approx(
        0.8 * score
    )  # all dense credit on the one relevant token
    assert token_rewards[-1] == pytest.approx(0.2 * score)
    # nothing relevant: R stays on the last token
    _, info = run_episode(env, [5], seed=3)
    assert info["token_rewards"][:-1] == [0.0] * (len(info["token_rewards"]) - 1)
    with pytest.raises(ValueError, match="expected one finite value per token"):
        run_episode(
            RelevanceCredit(TokenEnv(), lambda p, c: [1.0]), [5, 5, 5, 5, 5, 5, 5, 5], seed=3
        )
    with pytest.raises(gym.error.Error, match=r"RelevanceCredit needs info\['prompt_ids'\]"):
        run_episode(RelevanceCredit(TokenEnv(ids=False), relevance), [5], seed=3)


# ---------------------------------------------------------------- score baseline
@pytest.mark.parametrize("wrapper", [AttentionCredit, UniformCredit])
def test_running_mean_baseline_spreads_only_the_deviation(wrapper):
    env = wrapper(TokenEnv(attention=True), baseline="running_mean", baseline_rate=0.25)
    plain = wrapper(TokenEnv(attention=True))
    scores: list[float] = []
    rng = np.random.default_rng(0)
    for episode in range(12):
        actions = rng.choice([10, 20, 4], size=8).tolist()
        rewards, info = run_episode(env, actions, seed=episode)
        _, plain_info = run_episode(plain, actions, seed=episode)
        score = rewards[-1]
        # the baseline, computed independently: mean of earlier scores, then a 0.25-rate EMA
        b = 0.0
        for k, s in enumerate(scores, start=1):
            b += max(0.25, 1 / k) * (s - b)
        beta = env.beta
        weights = np.asarray(plain_info["token_rewards"], dtype=float)
        weights[-1] -= (1 - beta) * score
        weights = weights / (beta * score) if score else weights
        expected = beta * (score - b) * weights
        expected[-1] += (1 - beta) * (score - b) + b
        np.testing.assert_allclose(info["token_rewards"], expected, atol=1e-9)
        assert sum(info["token_rewards"]) == pytest.approx(score, abs=1e-9)  # return kept
        scores.append(score)
    assert env.baseline.value == pytest.approx(b + max(0.25, 1 / len(scores)) * (scores[-1] - b))


def test_fixed_baseline_and_bad_baselines():
    env = AttentionCredit(TokenEnv(attention=True), beta=1.0, baseline=0.5)
    rewards, info = run_episode(env, [4, 4, 4], seed=1)
    assert rewards[-1] == 0.5  # no token 10 or 20: R = b, nothing to spread
    np.testing.assert_allclose(
        info["token_rewards"], [0.0] * (len(info["token_rewards"]) - 1) + [0.5]
    )
    with pytest.raises(
        ValueError, match="baseline must be None, a number or 'running_mean', got 'mean'"
    ):
        AttentionCredit(TokenEnv(attention=True), baseline="mean")
    with pytest.raises(ValueError, match="baseline must be finite, got nan"):
        UniformCredit(TokenEnv(), baseline=float("nan"))
    with pytest.raises(ValueError, match=r"rate must be in \(0, 1\], got 0"):
        UniformCredit(TokenEnv(), baseline="running_mean", baseline_rate=0)


def test_vector_running_mean_baseline_keeps_each_return(task):
    n, steps = 3, 30
    envs = vector_wrappers.AttentionCredit(
        LLMCompletionVectorEnv(n, completion_task=task), baseline="running_mean"
    )
    actions = np.random.default_rng(1).integers(3, VOCAB, size=(steps, n))
    envs.reset(seed=0)
    ended: list[float] = []
    for t in range(steps):
        # episodes ending in one step share the mean of the scores that ended before it
        b = np.mean(ended) if ended else 0.0
        assert envs.baseline.value == pytest.approx(b, abs=1e-9)
        _, rewards, terminated, _, infos = envs.step(actions[t])
        for i in np.flatnonzero(terminated):
            credit = np.asarray(infos["token_rewards"][i])
            assert credit.sum() == pytest.approx(rewards[i], abs=1e-6)
            weights = np.asarray(infos["rm_attention"][envs.request.key][i])
            np.testing.assert_allclose(
                credit[:-1], 0.8 * (rewards[i] - b) * weights[:-1], atol=1e-6
            )
        ended += [float(rewards[i]) for i in np.flatnonzero(terminated)]
    assert len(ended) >= 6
