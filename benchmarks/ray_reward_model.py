"""Episodes scored per second by one shared RayRewardModel actor against a reward model per process.

P env processes (P = 1, 2, 4) score finished episodes of the embedded world
(8 prompt + 64 completion tokens) with ABC's attention read in the same call. Each
round the P processes score ``--batch`` episodes in all (``batch / P`` each), as a
vector env of ``batch`` sub-environments split over P rollout workers would:

- local: every process holds its own HFRewardModel (one torch thread);
- shared: every process calls one RayRewardModel actor (one torch thread), which
  merges the calls that arrive while it runs a forward into its next forward.

It prints episodes per second of both, their ratio, the forwards the actor ran
per call, and the overhead of one call to the actor against a local call in this
process (batches of 1 and 16). All figures are medians of ``--repeats``
repeats measured in the same run; the processes start once and stay warm.

    python benchmarks/ray_reward_model.py [--rounds 40] [--repeats 5] [--batch 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import statistics
import time
from typing import Any

import numpy as np

PROMPT, COMPLETION = 8, 64


def episodes(tokenizer: Any, n: int, seed: int) -> Any:
    from llm_gym.rewards import CompletionBatch

    rng = np.random.default_rng(seed)
    vocab = len(tokenizer)
    prompts = [rng.integers(3, vocab, size=PROMPT) for _ in range(n)]
    completions = [rng.integers(3, vocab, size=COMPLETION) for _ in range(n)]
    return CompletionBatch(prompts, completions, tokenizer)


def worker(index: int, remote_blob: bytes, commands: Any, results: Any) -> None:
    """An env process: holds a local RM and a copy of the shared one; scores on command."""
    import torch

    from llm_gym import assets
    from llm_gym.rewards import AttentionRequest, HFRewardModel
    from llm_gym.rewards.loading import load_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    models = {
        "local": HFRewardModel(assets.reward_model_path("default"), device="cpu"),
        "shared": pickle.loads(remote_blob),  # connects to the cluster on its first call
    }
    request = AttentionRequest()
    warm = episodes(tokenizer, 4, seed=index)
    for model in models.values():
        model(warm, request)
    results.put(("ready", index))
    while True:
        command = commands.get()
        if command is None:
            return
        mode, per_process, rounds, start_at = command
        batch = episodes(tokenizer, per_process, seed=100 + index)
        time.sleep(max(0.0, start_at - time.time()))  # all processes start together
        for _ in range(rounds):
            models[mode](batch, request)
        results.put(("done", time.time()))


def call_overhead(remote: Any, repeats: int) -> list[tuple[int, float, float]]:
    """Median seconds per call, local and through the actor, for batches of 1 and 16."""
    import torch

    from llm_gym import assets
    from llm_gym.rewards import AttentionRequest, HFRewardModel
    from llm_gym.rewards.loading import load_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    local = HFRewardModel(assets.reward_model_path("default"), device="cpu")
    request = AttentionRequest()
    rows = []
    for size in (1, 16):
        batch = episodes(tokenizer, size, seed=size)
        times: dict[str, list[float]] = {"local": [], "shared": []}
        for model in (local, remote):
            model(batch, request)
        for _ in range(repeats * 10):  # interleaved, so machine noise hits both alike
            for name, model in (("local", local), ("shared", remote)):
                start = time.perf_counter()
                model(batch, request)
                times[name].append(time.perf_counter() - start)
        rows.append((size, statistics.median(times["local"]), statistics.median(times["shared"])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="episodes per round, all processes")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    import ray

    from llm_gym import assets
    from llm_gym.rewards import RayRewardModel

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    remote = RayRewardModel(assets.reward_model_path("default"), device="cpu", num_cpus=1)
    context = multiprocessing.get_context("spawn")
    commands = [context.Queue() for _ in range(max(args.processes))]
    results = context.Queue()
    blob = pickle.dumps(remote)
    procs = [
        context.Process(target=worker, args=(i, blob, commands[i], results), daemon=True)
        for i in range(max(args.processes))
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        results.get(timeout=600)

    print(
        f"embedded RM, episodes of {PROMPT}+{COMPLETION} tokens with ABC attention, "
        f"{args.batch} episodes per round in all, {args.rounds} rounds, medians of "
        f"{args.repeats} repeats; 1 torch thread per process and in the actor"
    )
    print(
        f"{'processes':>9}{'local ep/s':>12}{'shared ep/s':>13}{'shared/local':>14}"
        f"{'forwards/call':>15}"
    )
    for n in args.processes:
        per_process = args.batch // n
        rates: dict[str, list[float]] = {"local": [], "shared": []}
        calls = forwards = 0
        for _ in range(args.repeats):
            for mode in ("local", "shared"):
                before = remote.forwards() if mode == "shared" else 0
                start_at = time.time() + 0.5
                for i in range(n):
                    commands[i].put((mode, per_process, args.rounds, start_at))
                ends = [results.get(timeout=600)[1] for _ in range(n)]
                rates[mode].append(n * per_process * args.rounds / (max(ends) - start_at))
                if mode == "shared":
                    forwards += remote.forwards() - before
                    calls += n * args.rounds
        local, shared = statistics.median(rates["local"]), statistics.median(rates["shared"])
        print(
            f"{n:>9}{local:>12.0f}{shared:>13.0f}{shared / local:>14.2f}{forwards / calls:>15.2f}",
            flush=True,
        )
    for command in commands:
        command.put(None)

    print("\ncall overhead in this process (medians):")
    print(f"{'batch':>6}{'local ms':>10}{'actor ms':>10}{'overhead ms':>13}{'actor/local':>13}")
    for size, local, shared in call_overhead(remote, args.repeats):
        print(
            f"{size:>6}{local * 1e3:>10.2f}{shared * 1e3:>10.2f}"
            f"{(shared - local) * 1e3:>13.2f}{shared / local:>13.2f}"
        )
    for proc in procs:
        proc.join(timeout=30)
    remote.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
