"""What the signed references cost per episode, against the reward-model forward that scores it.

On completions of the embedded LM (the default task's 64 tokens, or ``--tokens``),
it times, interleaved, per batch of 16 finished episodes (one update's worth):

- score: ``rm(batch)``, the environment's own scoring forward (the baseline);
- abc: ``rm(batch, AttentionRequest())``, the score with ABC's attention row;
- oracle-signed: :func:`~llm_gym.assets.contributions.world_contributions`, the
  world rule (VADER per word, mapped to tokens by character spans), no model;
- loo: :class:`~llm_gym.rewards.leave_one_out.LeaveOneOut` with the scores given,
  T deletions per episode in one batched call (what LeaveOneOutCredit runs; the
  wrapper makes one such call per episode, here all 16 episodes share one).

It prints the median wall and process-CPU seconds per batch and the ratio of each
to ``score``, and the per-update share against a measured update's time if given.

Run: ``python benchmarks/signed_credit_cost.py`` (``--repeats 5`` for a quick look).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="completion length")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per batch")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from llm_gym import assets
    from llm_gym.agents import sample_completions
    from llm_gym.assets.contributions import world_contributions
    from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel
    from llm_gym.rewards.leave_one_out import LeaveOneOut
    from llm_gym.rewards.loading import load_tokenizer

    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    rm = HFRewardModel(assets.reward_model_path("default"), device="cpu")
    infos = sample_completions(
        None, args.episodes, 0, max_new_tokens=args.tokens, min_new_tokens=args.tokens
    )
    batch = CompletionBatch(
        [np.asarray(i["prompt_ids"]) for i in infos],
        [np.asarray(i["completion_ids"]) for i in infos],
        tokenizer,
    )
    scores = rm(batch).scores
    loo = LeaveOneOut(rm)
    calls = {
        "score": lambda: rm(batch),
        "abc": lambda: rm(batch, AttentionRequest()),
        # a fresh batch each call: CompletionBatch caches its decoded texts
        "oracle-signed": lambda: world_contributions(
            CompletionBatch(batch.prompt_ids, batch.completion_ids, tokenizer)
        ),
        "loo": lambda: loo(batch, scores),
    }
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        call()
    for _ in range(args.repeats):
        for name, call in calls.items():
            w, c = time.perf_counter(), time.process_time()
            call()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    base_wall, base_cpu = statistics.median(wall["score"]), statistics.median(cpu["score"])
    print(
        f"{args.episodes} episodes x {args.tokens} tokens, {args.repeats} repeats, 1 thread; "
        "median seconds per batch (ratio to the scoring forward)"
    )
    print(f"{'method':>14} | {'wall s':>8} | {'ratio':>6} | {'cpu s':>8} | {'ratio':>6}")
    for name in calls:
        mw, mc = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:>14} | {mw:8.4f} | {mw / base_wall:6.1f} | {mc:8.4f} | {mc / base_cpu:6.1f}")


if __name__ == "__main__":
    main()
