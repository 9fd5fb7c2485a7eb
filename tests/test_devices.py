"""Precision and placement: dtype options, models on their own devices, one copy per step batch.

The device logic runs on the CPU here (every model on "cpu", named explicitly) and,
when CUDA is present, on CUDA (those cases are skipped without it). The bfloat16 /
float16 tolerances are measured against float32 on the CPU; the measured maxima
are in the comments (the bounds leave about 3x room).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from agents_world import one_thread  # noqa: F401

import llm_gym  # noqa: F401
from llm_gym import assets
from llm_gym.agents import TokenMaskablePPO, TokenPPO
from llm_gym.agents.policy import load_causal_lm
from llm_gym.agents.precision import GradientScaler
from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel
from llm_gym.rewards.attention import reference_attention
from llm_gym.rewards.loading import HostToDevice, load_tokenizer, resolve_dtype
from llm_gym.wrappers import vector as vector_wrappers

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
needs_two_gpus = pytest.mark.skipif(
    not CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices"
)

T, B = 8, 4


def collected(policy_kwargs=None, device="cpu", env_device="cpu", **options) -> TokenPPO:
    """A TokenPPO that has collected one rollout of B episodes of T tokens."""
    env = gym.make_vec(
        "LLMCompletion-v0", num_envs=B, max_new_tokens=T, eos_ends_episode=False, device=env_device
    )
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=T,
        batch_size=16,
        seed=0,
        device=device,
        policy_kwargs=policy_kwargs,
        **options,
    )
    _, callback = model._setup_learn(B * T, callback=None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, T)
    return model


def replayed_log_probs(model: TokenPPO, reference: TokenPPO) -> np.ndarray:
    """``model``'s rollout log-probs of the windows and actions ``reference`` collected."""
    buffer, policy = reference.rollout_buffer, model.policy
    policy.set_training_mode(False)
    policy.decoder.reset()
    device = policy.device
    rows = []
    with torch.no_grad():
        for step in range(T):
            obs = {
                k: torch.as_tensor(v[step], device=device) for k, v in buffer.observations.items()
            }
            actions = torch.as_tensor(buffer.actions[step, :, 0], device=device)
            rows.append(policy.get_distribution(obs).log_prob(actions).cpu().numpy())
    return np.stack(rows)


# ----------------------------------------------------------------------------- dtypes
def test_dtype_names_resolve_and_a_bad_one_is_named():
    assert resolve_dtype("bf16") is resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(None) is resolve_dtype("auto") is None
    with pytest.raises(ValueError, match=r"dtype must be .*got 'int8'"):
        resolve_dtype("int8")
    env = gym.make("LLMCompletion-v0", max_new_tokens=2)
    with pytest.raises(ValueError, match="reference_dtype must be"):
        TokenPPO("CausalLMPolicy", env, n_envs=1, policy_kwargs={"reference_dtype": "fp8"})


def test_bfloat16_policy_stays_within_tolerance_of_float32():
    fp32 = collected()
    bf16 = collected({"dtype": "bfloat16"})
    policy = bf16.policy
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # the optimizer's copy
    log_probs = replayed_log_probs(bf16, fp32)
    # measured: 0.0027 max, 0.0004 mean (embedded LM, 16 x 8 windows)
    assert np.abs(log_probs - fp32.rollout_buffer.log_probs).max() < 0.01
    assert policy.decoder._cache.layers[0].keys.dtype == torch.bfloat16  # the KV cache halves
    obs = {k: torch.as_tensor(v[-1]) for k, v in fp32.rollout_buffer.observations.items()}
    assert policy.hidden_state(obs).dtype == torch.float32
    assert policy.logits(policy.hidden_state(obs)).dtype == torch.float32


def test_bfloat16_update_reads_the_rollout_log_probs_back():
    """The PPO ratio of the first epoch stays near 1 although rollout and update forwards
    differ (incremental vs whole window) and run in bfloat16."""
    model = collected({"dtype": "bfloat16"})
    buffer, policy = model.rollout_buffer, model.policy
    policy.set_training_mode(True)
    obs = {k: torch.as_tensor(v).reshape(T * B, -1) for k, v in buffer.observations.items()}
    with torch.no_grad():
        _, log_prob, _ = policy.evaluate_actions(obs, torch.as_tensor(buffer.actions).reshape(-1))
    ratio = np.exp(log_prob.numpy().reshape(T, B) - buffer.log_probs)
    assert np.abs(ratio - 1).max() < 0.01  # measured: 0.0019


def test_float16_updates_scale_their_gradients_and_skip_overflow():
    layer = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    scaler = GradientScaler(layer.parameters(), optimizer, scale=2.0**10)
    before = layer.weight.detach().clone()
    scaler.scale_gradients(layer(torch.ones(1, 3))).sum().backward()
    assert torch.equal(layer.weight.grad, torch.ones(1, 3))  # unscaled on accumulation
    optimizer.step()
    assert torch.allclose(layer.weight, before - 0.5)
    optimizer.zero_grad()
    before = layer.weight.detach().clone()
    scaler.scale_gradients(layer(torch.full((1, 3), float("inf")))).sum().backward()
    optimizer.step()
    assert torch.equal(layer.weight, before) and scaler.skipped == 1
    assert scaler.scale == 2.0**9


def test_float16_policy_trains_with_finite_weights():
    env = gym.make_vec("LLMCompletion-v0", num_envs=B, max_new_tokens=T, eos_ends_episode=False)
    model = TokenPPO(
        "CausalLMPolicy", env, n_steps=T, batch_size=16, n_epochs=1, seed=0,
        policy_kwargs={"dtype": "float16"}, learning_rate=1e-3,
    )  # fmt: skip
    before = [p.detach().clone() for p in model.policy.lm.parameters()]
    model.learn(B * T)
    assert model.policy.gradient_scaler is not None
    after = list(model.policy.lm.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_reference_runs_in_its_own_dtype_within_tolerance():
    fp32 = collected()
    bf16_ref = collected({"reference_dtype": "bfloat16"})
    assert bf16_ref.ref_lm.dtype == torch.bfloat16
    assert fp32.ref_lm.dtype == torch.float32
    # same policy, same rollout: only the reference's precision differs
    np.testing.assert_array_equal(fp32.rollout_buffer.log_probs, bf16_ref.rollout_buffer.log_probs)
    # measured: 0.041 nats max per token
    assert np.abs(bf16_ref.last_kl - fp32.last_kl).max() < 0.15
    assert bf16_ref.last_kl.dtype == np.float64


def test_reward_model_in_half_precision_within_tolerance():
    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    rng = np.random.default_rng(0)
    batch = CompletionBatch(
        [rng.integers(2, 190, 6) for _ in range(8)],
        [rng.integers(2, 190, 32) for _ in range(8)],
        tokenizer,
    )
    path = assets.reward_model_path("default")
    fp32 = HFRewardModel(path, device="cpu")(batch, AttentionRequest())
    for dtype, score_bound, weight_bound in (("bfloat16", 0.03, 0.012), ("float16", 0.003, 0.001)):
        rm = HFRewardModel(path, device="cpu", torch_dtype=dtype)
        assert rm.model.dtype == resolve_dtype(dtype)
        out = rm(batch, AttentionRequest())
        assert out.scores.dtype == np.float64
        # measured (bf16 / fp16): scores 0.0087 / 0.0009 (range 3.1), weights 0.0036 / 0.00025
        assert np.abs(out.scores - fp32.scores).max() < score_bound
        for weights, exact in zip(out.attention, fp32.attention, strict=True):
            assert abs(weights.sum() - 1) < 1e-9  # the row's softmax is float32, renormalised
            assert np.abs(weights - exact).max() < weight_bound
        # the hooked read-out agrees with eager attention in the same dtype
        eager = reference_attention(rm, batch, AttentionRequest())
        for weights, plain in zip(out.attention, eager.attention, strict=True):
            assert np.abs(weights - plain).max() < 3 * weight_bound


def test_both_dtype_spellings_at_once_must_agree():
    with pytest.raises(ValueError, match="expected one"):
        HFRewardModel(assets.reward_model_path("default"), dtype="bf16", torch_dtype="fp16")


# ----------------------------------------------------------------------------- devices
def placements() -> list[tuple[str, str, str]]:
    """(policy, reference, reward model) devices to try: every model named explicitly."""
    cases = [("cpu", "cpu", "cpu")]
    if CUDA:
        cases += [("cuda:0", "cpu", "cuda:0"), ("cpu", "cuda:0", "cuda:0"), ("cuda:0",) * 3]
    if CUDA and torch.cuda.device_count() > 1:
        cases.append(("cuda:0", "cuda:1", "cuda:1"))
    return cases


@pytest.mark.parametrize("policy_device,reference_device,rm_device", placements())
def test_models_run_on_their_own_devices(policy_device, reference_device, rm_device):
    env = vector_wrappers.AttentionCredit(
        gym.make_vec(
            "LLMCompletion-v0", num_envs=B, max_new_tokens=T, eos_ends_episode=False,
            device=rm_device,
        )
    )  # fmt: skip
    model = TokenPPO(
        "CausalLMPolicy", env, n_steps=T, batch_size=16, n_epochs=1, seed=0,
        device=policy_device, policy_kwargs={"reference_device": reference_device},
    )  # fmt: skip
    model.learn(2 * B * T)
    assert next(model.policy.parameters()).device == torch.device(policy_device)
    assert next(model.ref_lm.parameters()).device == torch.device(reference_device)
    rm = env.unwrapped.reward_model
    assert next(rm.model.parameters()).device == torch.device(rm_device)
    assert np.isfinite(model.last_kl).all() and np.isfinite(model.rollout_stats["score_mean"])


@needs_cuda
def test_cuda_policy_matches_the_cpu_one_in_float32():
    cpu, cuda = collected(), collected(device="cuda", env_device="cuda")
    log_probs = replayed_log_probs(cuda, cpu)
    assert np.abs(log_probs - cpu.rollout_buffer.log_probs).max() < 1e-4


@needs_cuda
def test_cuda_bfloat16_policy_within_tolerance():
    cpu = collected()
    bf16 = collected({"dtype": "bfloat16"}, device="cuda", env_device="cuda")
    assert np.abs(replayed_log_probs(bf16, cpu) - cpu.rollout_buffer.log_probs).max() < 0.02


@needs_two_gpus
def test_maskable_reference_on_a_second_gpu():
    env = gym.make("LLMCompletion-v0", max_new_tokens=T)
    model = TokenMaskablePPO(
        "CausalLMPolicy", env, n_envs=2, n_steps=T, batch_size=16, device="cuda:0",
        policy_kwargs={"mask_top_k": 5, "reference_device": "cuda:1"},
    )  # fmt: skip
    model.learn(2 * T)
    assert next(model.policy.reference.parameters()).device == torch.device("cuda:1")


def test_maskable_reference_dtype_and_device_options():
    env = gym.make("LLMCompletion-v0", max_new_tokens=T)
    model = TokenMaskablePPO(
        "CausalLMPolicy", env, n_envs=2, n_steps=T, batch_size=16, n_epochs=1, seed=0,
        policy_kwargs={"mask_top_k": 5, "reference_dtype": "bfloat16", "reference_device": "cpu"},
    )  # fmt: skip
    model.learn(2 * T)
    assert model.policy.reference.dtype == torch.bfloat16
    assert np.isfinite(model.last_kl).all()


# ----------------------------------------------------------------------------- transfers
class CountingCopier(HostToDevice):
    def __init__(self, device) -> None:
        super().__init__(device)
        self.calls = 0

    def __call__(self, array, key):
        self.calls += 1
        return super().__call__(array, key)


def test_observations_cross_to_the_device_once_per_step_batch():
    """One copy per observation array and step, for all environments together."""
    env = gym.make_vec("LLMCompletion-v0", num_envs=8, max_new_tokens=T, eos_ends_episode=False)
    model = TokenPPO("CausalLMPolicy", env, n_steps=T, batch_size=16, seed=0, device="cpu")
    model._obs_to_device = copier = CountingCopier(model.device)
    rm = env.unwrapped.reward_model
    scored = []
    score = rm.score
    rm.score = lambda batch, attention=None: scored.append(len(batch)) or score(batch, attention)
    _, callback = model._setup_learn(8 * T, callback=None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, T)
    assert copier.calls == 2 * T  # input_ids and attention_mask, whatever the number of envs
    assert scored == [8]  # the 8 episodes ending together: one batched reward-model call


def test_host_to_device_on_the_cpu_wraps_without_copying():
    array = np.arange(6).reshape(2, 3)
    tensor = HostToDevice("cpu")(array, "ids")
    assert tensor.data_ptr() == array.__array_interface__["data"][0]


@needs_cuda
def test_host_to_device_reuses_one_pinned_buffer_per_key():
    copier = HostToDevice("cuda")
    first = copier(np.arange(6).reshape(2, 3), "ids")
    buffer = copier._buffers["ids"][0]
    second = copier(np.arange(4).reshape(2, 2) + 10, "ids")
    assert copier._buffers["ids"][0] is buffer and buffer.is_pinned()
    assert first.tolist() == [[0, 1, 2], [3, 4, 5]] and second.tolist() == [[10, 11], [12, 13]]
    assert second.device.type == "cuda"


def test_load_causal_lm_casts_and_places():
    lm = load_causal_lm(None, dtype="float16", device="cpu")
    assert lm.dtype == torch.float16 and not lm.training
