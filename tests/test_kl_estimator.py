"""What the KL controller reads: the exact per-state KL equals an independent full-vocabulary
computation, leaves the penalty and the rollouts as they were, and reaches every agent."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from agents_world import make_env, one_thread  # noqa: F401
from stable_baselines3.common.callbacks import BaseCallback

from llm_gym.agents import TokenGRPO, TokenMaskablePPO, TokenPPO
from llm_gym.agents.decoding import position_ids_from_mask
from llm_gym.agents.kl import KL_ESTIMATORS, check_kl_estimator, state_kl
from llm_gym.experiments.presets import ComparePreset


@torch.no_grad()
def full_forward_log_probs(lm, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log softmax`` of ``lm``'s logits at the newest token, float64, one full forward."""
    position_ids = position_ids_from_mask(mask)
    logits = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    return torch.log_softmax(logits[:, -1].double(), -1)


class ExactKLRecorder(BaseCallback):
    """Per rollout: the agent's exact and sampled KL, and the exact KL from independent forwards.

    The independent KL reads every stored window through full forwards of the policy
    LM (tempered as it samples) and of the reference LM, one step at a time, and sums
    ``p (log p - log q)`` over the vocabulary in float64, before the update changes the
    weights.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.exact: list[np.ndarray] = []
        self.sampled: list[np.ndarray] = []
        self.expected: list[np.ndarray] = []
        self.logged: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        return True

    @torch.no_grad()
    def _on_rollout_end(self) -> None:
        buffer, policy = self.model.rollout_buffer, self.model.policy
        self.exact.append(self.model.reference.last_exact_kl.copy())
        self.sampled.append(self.model.last_kl.copy())
        self.logged.append(dict(self.model.rollout_stats))
        expected = np.zeros(buffer.rewards.shape, dtype=np.float64)
        for t in range(buffer.buffer_size):
            ids = torch.as_tensor(buffer.observations["input_ids"][t]).long()
            mask = torch.as_tensor(buffer.observations["attention_mask"][t]).long()
            # the policy samples from its LM's logits divided by the temperature
            log_p = torch.log_softmax(
                full_forward_log_probs(policy.lm, ids, mask) / self.temperature, -1
            )
            log_q = full_forward_log_probs(self.model.ref_lm, ids, mask)
            expected[t] = (log_p.exp() * (log_p - log_q)).sum(-1).numpy()
        self.expected.append(expected)


def small_ppo(**options: Any) -> TokenPPO:
    """TokenPPO on up-to-4-token episodes in rollouts of 6 steps x 2 envs, one epoch each."""
    return TokenPPO(
        "CausalLMPolicy",
        make_env(max_new_tokens=4),
        n_steps=6,
        batch_size=12,
        n_epochs=1,
        n_envs=2,
        learning_rate=1e-3,
        **options,
    )


def test_exact_kl_equals_a_per_state_full_vocabulary_computation():
    # episodes of up to 4 tokens span rollouts of 6 steps; the policy samples at
    # temperature 0.8 and learns, so its KL to the untempered reference is not zero
    model = small_ppo(
        seed=0,
        kl_target=6.0,
        kl_controller="pid",
        kl_estimator="exact",
        policy_kwargs={"temperature": 0.8},
    )
    recorder = ExactKLRecorder(temperature=0.8)
    model.learn(6 * 2 * 3, callback=recorder)
    assert len(recorder.exact) == 3
    for exact, expected in zip(recorder.exact, recorder.expected, strict=True):
        assert exact.shape == (6, 2)
        np.testing.assert_allclose(exact, expected, rtol=0, atol=1e-5)
        assert exact.min() > 0  # a KL, and the tempered policy is never its reference
    for exact, sampled, logged in zip(
        recorder.exact, recorder.sampled, recorder.logged, strict=True
    ):
        # both per completion are (mean per-token KL) x (the same mean length)
        ratio = logged["kl_per_completion"] / logged["kl_sampled_per_completion"]
        np.testing.assert_allclose(ratio, exact.mean() / sampled.mean(), rtol=1e-9)


def run_rollouts(estimator: str) -> tuple[TokenPPO, list[np.ndarray], list[np.ndarray]]:
    class Rewards(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rewards: list[np.ndarray] = []
            self.actions: list[np.ndarray] = []

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            self.rewards.append(self.model.rollout_buffer.rewards.copy())
            self.actions.append(self.model.rollout_buffer.actions.copy())

    # a fixed coefficient: what the controller reads changes nothing
    model = small_ppo(seed=3, kl_coef=0.3, kl_target=None, kl_estimator=estimator)
    recorder = Rewards()
    model.learn(6 * 2 * 3, callback=recorder)
    return model, recorder.rewards, recorder.actions


def test_the_exact_estimator_changes_what_is_read_not_the_penalty_or_the_rollouts():
    sampled_model, sampled_rewards, sampled_actions = run_rollouts("sampled")
    exact_model, exact_rewards, exact_actions = run_rollouts("exact")
    for a, b in zip(sampled_rewards, exact_rewards, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(sampled_actions, exact_actions, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sampled_model.reference.last_exact_kl is None
    assert "kl_sampled_per_completion" not in sampled_model.rollout_stats
    assert exact_model.reference.last_exact_kl is not None
    assert (
        exact_model.rollout_stats["kl_sampled_per_completion"]
        == sampled_model.rollout_stats["kl_per_completion"]
    )


def test_the_maskable_agent_reads_the_exact_kl_of_its_masked_distribution():
    # TokenMaskablePPO runs the reference on every step (its masks): the per-step path
    model = TokenMaskablePPO(
        "CausalLMPolicy",
        make_env(max_new_tokens=4),
        n_steps=4,
        batch_size=8,
        n_envs=2,
        seed=0,
        kl_target=6.0,
        kl_estimator="exact",
        policy_kwargs={"mask_top_k": 5},
    )

    class Check(BaseCallback):
        def _on_step(self) -> bool:
            return True

        @torch.no_grad()
        def _on_rollout_end(self) -> None:
            buffer, policy = self.model.rollout_buffer, self.model.policy
            expected = np.zeros(buffer.rewards.shape, dtype=np.float64)
            for t in range(buffer.buffer_size):
                obs = {k: torch.as_tensor(v[t]) for k, v in buffer.observations.items()}
                ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
                log_q = full_forward_log_probs(self.model.ref_lm, ids, mask)
                allowed = torch.zeros_like(log_q, dtype=torch.bool)
                allowed.scatter_(1, log_q.topk(5, -1).indices, True)
                log_p = full_forward_log_probs(policy.lm, ids, mask).masked_fill(
                    ~allowed, -torch.inf
                )
                log_p = torch.log_softmax(log_p, -1)
                expected[t] = state_kl(log_p, log_q).numpy()
                # before any update the policy is its reference: KL = -log(top-5 mass)
                mass = -log_q.topk(5, -1).values.logsumexp(-1).numpy()
                np.testing.assert_allclose(expected[t], mass, rtol=0, atol=1e-6)
            self.exact = self.model.reference.last_exact_kl.copy()
            self.expected = expected

    check = Check()
    model.learn(4 * 2, callback=check)
    np.testing.assert_allclose(check.exact, check.expected, rtol=0, atol=1e-5)
    assert check.exact.min() > 0


def test_the_group_agents_take_the_estimator():
    envs = gym.make_vec("LLMCompletion-v0", num_envs=4, group_size=2, max_new_tokens=3)
    model = TokenGRPO("CausalLMPolicy", envs, batch_size=12, seed=0, kl_estimator="exact")
    model.learn(3 * 4)
    assert model.reference.last_exact_kl is not None
    assert "kl_sampled_per_completion" in model.rollout_stats


def test_state_kl_is_zero_for_equal_distributions_and_ignores_what_p_cannot_sample():
    log_q = torch.log_softmax(torch.tensor([[1.0, 2.0, 3.0, -1.0]]), -1)
    assert abs(float(state_kl(log_q, log_q))) < 1e-7
    # p cannot sample id 3 (-inf: suppressed): its term is 0, not nan
    log_p = torch.log_softmax(torch.tensor([[1.0, 2.0, 3.0, -torch.inf]]), -1)
    p = log_p.exp()[0, :3]
    expected = float((p * (log_p[0, :3] - log_q[0, :3])).sum())
    assert float(state_kl(log_p, log_q)) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("estimator", ["k3", "Exact", ""])
def test_an_unknown_estimator_is_refused_by_name(estimator):
    with pytest.raises(ValueError, match=repr(estimator)):
        check_kl_estimator(estimator)
    with pytest.raises(ValueError, match="kl_estimator must be one of"):
        ComparePreset(kl_estimator=estimator)
    with pytest.raises(ValueError, match=repr(estimator)):
        TokenPPO("CausalLMPolicy", make_env(), n_steps=4, n_envs=2, kl_estimator=estimator)
    assert KL_ESTIMATORS == ("sampled", "exact")


def test_a_policy_without_logits_is_refused_by_the_exact_estimator():
    from llm_gym.agents.kl import ReferenceKL

    model = TokenPPO(
        "CausalLMPolicy", make_env(), n_steps=4, n_envs=2, batch_size=8, kl_estimator="exact"
    )
    reference = ReferenceKL(model.ref_lm, model.ref_decoder, per_step=False, exact=True)
    with pytest.raises(ValueError, match="needs the policy's logits"):
        reference.record_step({}, torch.zeros(2), None)
