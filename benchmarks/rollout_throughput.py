"""Rollout throughput: TokenPPO's KV-cached collection vs model.generate vs a naive loop.

All arms use the same LM, batch, prompt windows, completion length and sampling
(plain multinomial at temperature 1, no EOS stop), measured in one run:

    python3 benchmarks/rollout_throughput.py [--batch 16] [--tokens 32] [--repeats 3] [--threads N]

"TokenPPO collect" is the whole SB3 collection (env steps, rollout buffer, reward
model), over the native vector env or SB3's DummyVecEnv, without the KL reference
(kl_coef=0) and with it ("+ KL reference": the reference log-probs of the rollout
in one batched forward, about one window per episode, before GAE).
"IncrementalDecoder alone" is the cached decoding loop without SB3 or the env.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import llm_gym  # noqa: F401
from llm_gym.agents import TokenPPO
from llm_gym.agents.decoding import IncrementalDecoder, position_ids_from_mask


def prompt_windows(env: gym.Env, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [env.reset(seed=i)[0] for i in range(batch)]
    ids = torch.as_tensor(np.stack([r["input_ids"] for r in rows]))
    mask = torch.as_tensor(np.stack([r["attention_mask"] for r in rows]))
    return ids, mask


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    B, T = args.batch, args.tokens
    torch.manual_seed(0)

    def make_model(kl: bool, native: bool) -> TokenPPO:
        options = {"max_new_tokens": T, "eos_ends_episode": False}
        if native:  # gymnasium VectorEnv: one batched RM forward per step
            env = gym.make_vec("LLMCompletion-v0", num_envs=B, **options)
        else:  # SB3 DummyVecEnv over single envs
            env = gym.make("LLMCompletion-v0", **options)
        kl_options = {} if kl else {"kl_coef": 0.0, "kl_target": None}
        model = TokenPPO("CausalLMPolicy", env, n_envs=B, n_steps=T, seed=0, **kl_options)
        model._setup_learn(B * T, callback=None)
        return model

    models = {
        "TokenPPO collect (vector env)": make_model(False, True),
        "  + KL reference": make_model(True, True),
        "TokenPPO collect (DummyVecEnv)": make_model(False, False),
    }
    lm = models["TokenPPO collect (vector env)"].policy.lm
    env = gym.make("LLMCompletion-v0", max_new_tokens=T)
    ids, mask = prompt_windows(env, B)
    pad = int(env.unwrapped.task.pad_token_id)
    prompt_ids, prompt_mask = ids[:, :-T], mask[:, :-T]  # the prompt part of the window

    @torch.no_grad()
    def generate() -> None:
        lm.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            do_sample=True,
            top_k=0,
            max_new_tokens=T,
            min_new_tokens=T,
            pad_token_id=pad,
        )

    @torch.no_grad()
    def naive() -> None:
        window, window_mask = ids.clone(), mask.clone()
        for _ in range(T):
            logits = lm(
                input_ids=window,
                attention_mask=window_mask,
                position_ids=position_ids_from_mask(window_mask),
            ).logits[:, -1]
            token = torch.multinomial(torch.softmax(logits, -1), 1)
            window = torch.cat([window[:, 1:], token], 1)
            window_mask = torch.cat([window_mask[:, 1:], torch.ones_like(token)], 1)

    @torch.no_grad()
    def decoder_alone() -> None:
        decoder = IncrementalDecoder(lm.base_model)
        head = lm.get_output_embeddings()
        window, window_mask = ids.clone(), mask.clone()
        for _ in range(T):
            logits = head(decoder(window, window_mask))
            token = torch.multinomial(torch.softmax(logits, -1), 1)
            window = torch.cat([window[:, 1:], token], 1)
            window_mask = torch.cat([window_mask[:, 1:], torch.ones_like(token)], 1)

    def collect(model: TokenPPO):
        def run() -> None:
            callback = model.token_callback
            model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)

        return run

    seconds = {"model.generate": best_of(args.repeats, generate)}
    for name, model in models.items():
        collect(model)()  # warm up; episodes are aligned to the rollout from here on
        seconds[name] = best_of(args.repeats, collect(model))
    seconds["IncrementalDecoder alone"] = best_of(args.repeats, decoder_alone)
    seconds["naive full-prefix loop"] = best_of(args.repeats, naive)

    print(
        f"batch {B}, {T} new tokens, window {ids.shape[1]}, torch threads {torch.get_num_threads()}"
    )
    base = B * T / seconds["model.generate"]
    for name, s in seconds.items():
        rate = B * T / s
        print(f"{name:31s} {rate:9.0f} tokens/s  {rate / base:5.2f}x generate")


if __name__ == "__main__":
    main()
