"""PPO update throughput of TokenPPO at two completion lengths.

    python3 benchmarks/update_throughput.py [--lengths 16 120] [--repeats 3] [--threads N]
        [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--model DIR]

One rollout of 16 episodes is collected, then ``model.train()`` (4 epochs,
minibatches of 64 transitions) is timed. Training tokens/s counts each
transition once per epoch. Two arms, same run, their repeats interleaved:
TokenPPO's default EpisodeRolloutBuffer (minibatches of whole episodes; the
policy reads every step of an episode from one window forward: O(P + T) per
episode) and SB3's DictRolloutBuffer (shuffled transitions: a forward for about
every distinct (env, episode) of the minibatch, O(T * (P + T)) per episode).
Figures are medians over the repeats; "cpu" ratios use process CPU time (steadier
on a shared machine). The embedded LM knows 128 positions, so the longer default
setting is 8 + 120 tokens. ``--model`` takes a causal-LM folder whose vocabulary
may be wider than the embedded tokenizer's (sampling is kept to its ids).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import gymnasium as gym
import torch
from stable_baselines3.common.buffers import DictRolloutBuffer

import llm_gym  # noqa: F401
from llm_gym.agents import EpisodeRolloutBuffer, TokenPPO
from llm_gym.agents.policy import load_causal_lm


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 120])
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="the policy's compute dtype")
    parser.add_argument("--model", default=None, help="causal-LM folder (default: embedded)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    policy_kwargs: dict = {}
    if args.model:
        policy_kwargs["model"] = args.model
    if args.dtype not in ("float32", "fp32"):
        policy_kwargs["dtype"] = args.dtype
    env_options = {"eos_ends_episode": False, "device": args.device}
    vocab = load_causal_lm(args.model).get_output_embeddings().out_features
    n_tokens = len(gym.make("LLMCompletion-v0").unwrapped.tokenizer)
    if vocab != n_tokens:
        env_options["vocab_size"] = vocab
        policy_kwargs["n_tokens"] = n_tokens
    print(
        f"torch threads {torch.get_num_threads()}, device {device}, dtype {args.dtype}, "
        f"{args.envs} episodes per rollout, 4 epochs, median of {args.repeats} repeats"
    )
    for T in args.lengths:
        models = {}
        for buffer in (EpisodeRolloutBuffer, DictRolloutBuffer):
            env = gym.make_vec(
                "LLMCompletion-v0", num_envs=args.envs, max_new_tokens=T, **env_options
            )
            model = TokenPPO(
                "CausalLMPolicy",
                env,
                n_steps=T,
                batch_size=64,
                seed=0,
                rollout_buffer_class=buffer,
                device=device,
                policy_kwargs=policy_kwargs,
            )
            model.learn(args.envs * T)  # one rollout and one update (warm-up)
            model.collect_rollouts(
                model.env, model._init_callback(None), model.rollout_buffer, model.n_steps
            )
            models[buffer.__name__] = model
        wall: dict[str, list[float]] = {name: [] for name in models}
        cpu: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, model in models.items():
                sync()
                start, start_cpu = time.perf_counter(), cpu_seconds()
                model.train()
                sync()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(cpu_seconds() - start_cpu)
        window = env.single_observation_space["input_ids"].shape[0]
        rates = {}
        for name in models:
            seconds = statistics.median(wall[name])
            rates[name] = args.envs * T * 4 / seconds
            print(
                f"T={T:4d} window={window:4d} {name:21s} update {seconds:7.2f} s "
                f"{rates[name]:8.0f} training tokens/s"
            )
        ratio = rates["EpisodeRolloutBuffer"] / rates["DictRolloutBuffer"]
        cpu_ratio = statistics.median(cpu["DictRolloutBuffer"]) / statistics.median(
            cpu["EpisodeRolloutBuffer"]
        )
        print(
            f"T={T:4d} episode minibatches vs shuffled transitions: {ratio:.1f}x "
            f"(cpu {cpu_ratio:.1f}x)"
        )


if __name__ == "__main__":
    main()
