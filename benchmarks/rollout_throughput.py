"""Rollout throughput: TokenPPO's KV-cached collection vs model.generate vs a naive loop.

All arms use the same LM, batch, prompt windows, completion length and sampling
(plain multinomial at temperature 1, no EOS stop), measured in one run, their
repeats interleaved so that a change in the machine's load hits every arm alike:

    python3 benchmarks/rollout_throughput.py [--batch 16] [--tokens 32] [--repeats 5]
        [--threads N] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--model DIR]

"TokenPPO collect" is the whole SB3 collection (env steps, rollout buffer, reward
model), over the native vector env or SB3's DummyVecEnv, without the KL reference
(kl_coef=0) and with it ("+ KL reference": the reference log-probs of the rollout
in one batched forward, about one window per episode, before GAE).
"IncrementalDecoder alone" is the cached decoding loop without SB3 or the env.
Each figure is the median over the repeats; "cpu" is the process's CPU time per
arm (user + system), less sensitive than wall time to other processes on a
shared machine. ``--model`` takes a causal-LM folder whose vocabulary may be wider
than the embedded tokenizer's (a random GPT-2-small, say): sampling is then kept
to the tokenizer's ids (the policy's ``n_tokens``, generate's ``suppress_tokens``).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import llm_gym  # noqa: F401
from llm_gym.agents import TokenPPO
from llm_gym.agents.decoding import IncrementalDecoder, position_ids_from_mask
from llm_gym.agents.policy import load_causal_lm
from llm_gym.rewards.loading import resolve_dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The policy's compute dtype for the arms that call the LM directly."""
    if dtype in (None, torch.float32):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def prompt_windows(env: gym.Env, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [env.reset(seed=i)[0] for i in range(batch)]
    ids = torch.as_tensor(np.stack([r["input_ids"] for r in rows]))
    mask = torch.as_tensor(np.stack([r["attention_mask"] for r in rows]))
    return ids, mask


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved(
    arms: dict[str, Callable[[], None]], repeats: int, sync: Callable[[], None]
) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds of each arm, the arms run in turn ``repeats`` times."""
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            sync()
            start, start_cpu = time.perf_counter(), cpu_seconds()
            fn()
            sync()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in arms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu", help="where the policy and the RM run")
    parser.add_argument("--dtype", default="float32", help="the policy's compute dtype")
    parser.add_argument("--model", default=None, help="causal-LM folder (default: embedded)")
    parser.add_argument("--no-naive", action="store_true", help="skip the full-prefix loop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    B, T = args.batch, args.tokens
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype)
    torch.manual_seed(0)
    env = gym.make("LLMCompletion-v0", max_new_tokens=T, device=args.device)
    n_tokens = len(env.unwrapped.tokenizer)
    vocab = load_causal_lm(args.model).get_output_embeddings().out_features
    env_options = {"max_new_tokens": T, "eos_ends_episode": False, "device": args.device}
    policy_kwargs: dict = {}
    if args.model:
        policy_kwargs["model"] = args.model
    if dtype not in (None, torch.float32):
        policy_kwargs["dtype"] = dtype
    if vocab != n_tokens:  # an output layer wider than the tokenizer: sample its ids only
        env_options["vocab_size"] = vocab
        policy_kwargs["n_tokens"] = n_tokens

    def make_model(kl: bool, native: bool) -> TokenPPO:
        if native:  # gymnasium VectorEnv: one batched RM forward per step
            venv = gym.make_vec("LLMCompletion-v0", num_envs=B, **env_options)
        else:  # SB3 DummyVecEnv over single envs
            venv = gym.make("LLMCompletion-v0", **env_options)
        kl_options = {} if kl else {"kl_coef": 0.0, "kl_target": None}
        model = TokenPPO(
            "CausalLMPolicy",
            venv,
            n_envs=B,
            n_steps=T,
            seed=0,
            device=device,
            policy_kwargs=policy_kwargs,
            **kl_options,
        )
        _, model.bench_callback = model._setup_learn(B * T, callback=None)
        return model

    models = {
        "TokenPPO collect (vector env)": make_model(False, True),
        "  + KL reference": make_model(True, True),
        "TokenPPO collect (DummyVecEnv)": make_model(False, False),
    }
    lm = models["TokenPPO collect (vector env)"].policy.lm
    ids, mask = prompt_windows(env, B)
    ids, mask = ids.to(device), mask.to(device)
    pad = int(env.unwrapped.task.pad_token_id)
    prompt_ids, prompt_mask = ids[:, T:], mask[:, T:]  # the prompt part of the window
    suppress = list(range(n_tokens, vocab)) if vocab != n_tokens else None

    @torch.no_grad()
    def generate() -> None:
        with autocast(device, dtype):
            lm.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                do_sample=True,
                top_k=0,
                max_new_tokens=T,
                min_new_tokens=T,
                pad_token_id=pad,
                suppress_tokens=suppress,
            )

    def sample(logits: torch.Tensor) -> torch.Tensor:
        if suppress:
            logits = logits[:, :n_tokens]
        return torch.multinomial(torch.softmax(logits.float(), -1), 1)

    @torch.no_grad()
    def naive() -> None:
        window, window_mask = ids.clone(), mask.clone()
        with autocast(device, dtype):
            for _ in range(T):
                logits = lm(
                    input_ids=window,
                    attention_mask=window_mask,
                    position_ids=position_ids_from_mask(window_mask),
                ).logits[:, -1]
                token = sample(logits)
                window = torch.cat([window[:, 1:], token], 1)
                window_mask = torch.cat([window_mask[:, 1:], torch.ones_like(token)], 1)

    @torch.no_grad()
    def decoder_alone() -> None:
        decoder = IncrementalDecoder(lm.base_model)
        head = lm.get_output_embeddings()
        window, window_mask = ids.clone(), mask.clone()
        with autocast(device, dtype):
            for _ in range(T):
                token = sample(head(decoder(window, window_mask)))
                window = torch.cat([window[:, 1:], token], 1)
                window_mask = torch.cat([window_mask[:, 1:], torch.ones_like(token)], 1)

    def collect(model: TokenPPO) -> Callable[[], None]:
        def run() -> None:
            model.collect_rollouts(model.env, model.bench_callback, model.rollout_buffer, T)

        return run

    arms = {"model.generate": generate}
    for name, model in models.items():
        collect(model)()  # warm up; episodes are aligned to the rollout from here on
        arms[name] = collect(model)
    arms["IncrementalDecoder alone"] = decoder_alone
    if not args.no_naive:
        arms["naive full-prefix loop"] = naive
    generate()  # warm up
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    seconds = interleaved(arms, args.repeats, sync)

    print(
        f"batch {B}, {T} new tokens, window {ids.shape[1]}, device {device}, dtype {args.dtype}, "
        f"torch threads {torch.get_num_threads()}, median of {args.repeats} interleaved repeats"
    )
    base_wall, base_cpu = seconds["model.generate"]
    for name, (wall, cpu) in seconds.items():
        rate = B * T / wall
        print(
            f"{name:31s} {rate:9.0f} tokens/s  {base_wall / wall:5.2f}x generate"
            f"  (cpu {base_cpu / max(cpu, 1e-9):5.2f}x)"
        )


if __name__ == "__main__":
    main()
