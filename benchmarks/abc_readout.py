"""What ABC's attention read-out costs on top of scoring, against the naive eager route.

For each reward model and batch shape (16 x 128 and 4 x 512 tokens) it times
three ways of scoring the same batch, interleaved, and reports the ratios of
median wall times, and of median process CPU times (steadier on a shared
machine):

- sparse: ``rm(batch)``, the score only (the model's default sdpa attention);
- ABC: ``rm(batch, AttentionRequest())``, score plus last-layer credit, same forward;
- eager: the same weights loaded with eager attention, ``output_attentions=True``,
  the scoring row taken from the last layer (what ABC would cost naively).

Peak memory is the rise of the peak RSS (Linux VmHWM, reset before the call)
during one warm call, each in a fresh process (torch's CPU allocations are
invisible to tracemalloc).

Run: ``python benchmarks/abc_readout.py`` (``--quick`` for fewer repeats,
``--models default`` to skip the GPT-2-small-sized RM).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = [(16, 128), (4, 512)]
METHODS = ["sparse", "abc", "eager"]


def build_model(name: str, folder: Path) -> Path:
    """Save the named RM (with the embedded tokenizer) under ``folder``; return its path."""
    from transformers import AutoModelForSequenceClassification, GPT2Config

    from llm_gym import assets
    from llm_gym.rewards.loading import load_tokenizer

    path = folder / name
    if path.exists():
        return path
    if name == "default" and Path(assets.reward_model_path("default")).exists():
        return Path(assets.reward_model_path("default"))
    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    # stand-in for the bundled RM when its files are absent: one GPT-2 layer, width 128
    sizes = {"default": (1, 128, 4), "gpt2-small": (12, 768, 12)}[name]
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=sizes[0],
        n_embd=sizes[1],
        n_head=sizes[2],
        n_positions=1024,
        num_labels=2,
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def setup(path: Path, batch_size: int, length: int):
    from transformers import AutoModelForSequenceClassification

    from llm_gym import assets
    from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel
    from llm_gym.rewards.loading import load_tokenizer

    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    rm = HFRewardModel(str(path), tokenizer=tokenizer, device="cpu")
    eager = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
    eager.config.pad_token_id = -1
    eager.eval()
    rng = np.random.default_rng(0)
    vocab = len(tokenizer)
    prompts = [rng.integers(3, vocab, size=8) for _ in range(batch_size)]
    completions = [rng.integers(3, vocab, size=length - 8) for _ in range(batch_size)]
    batch = CompletionBatch(prompts, completions, tokenizer)
    request = AttentionRequest()

    @torch.no_grad()
    def naive():
        encoded = rm.encode(batch)
        out = eager(**rm.model_inputs(encoded), output_attentions=True)
        rows = out.attentions[-1][torch.arange(batch_size), :, encoded.score_index].mean(1)
        return rm.logits_to_scores(out.logits), rows

    return {
        "sparse": lambda: rm(batch),
        "abc": lambda: rm(batch, request),
        "eager": naive,
    }


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_memory(path: str, batch_size: int, length: int, method: str) -> None:
    """Child process: print the peak-RSS rise (MiB) of one call of ``method`` after a warm-up."""
    torch.set_num_threads(2)
    calls = setup(Path(path), batch_size, length)
    calls[method]()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    calls[method]()
    print(json.dumps({"mib": (_status_kib("VmHWM") - before) / 1024}))


def time_shape(
    path: Path, batch_size: int, length: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU seconds per call of each method, calls interleaved."""
    calls = setup(path, batch_size, length)
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(repeats):
        for method in METHODS:
            start, start_cpu = time.perf_counter(), time.process_time()
            calls[method]()
            times[method].append(time.perf_counter() - start)
            cpu[method].append(time.process_time() - start_cpu)
    medians = {m: statistics.median(v) for m, v in times.items()}
    return medians, {m: statistics.median(v) for m, v in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default", "gpt2-small"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="abc-bench-"))
    print(f"torch {torch.__version__}, {args.threads} threads, CPU; medians over repeats")
    header = f"{'model':<11}{'batch':>8}{'sparse s':>10}{'ABC s':>9}{'eager s':>9}"
    header += f"{'ABC/sparse':>11}{'eager/sparse':>13}{'(CPU-time ratios)':>19}"
    header += "   peak RSS rise MiB sparse/ABC/eager"
    print(header)
    for name in args.models:
        path = build_model(name, folder)
        positions = json.loads((path / "config.json").read_text()).get("n_positions", 1024)
        for batch_size, length in SHAPES:
            if length > positions:
                print(
                    f"{name:<11}{f'{batch_size}x{length}':>8}  skipped: the model has {positions} positions"
                )
                continue
            small = name == "default"
            repeats = (15 if small else 5) if args.quick else (41 if small else 9)
            t, cpu = time_shape(path, batch_size, length, repeats)
            memory = []
            for method in METHODS:
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--memory",
                        str(path),
                        str(batch_size),
                        str(length),
                        method,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                memory.append(json.loads(child.stdout.strip().splitlines()[-1])["mib"])
            print(
                f"{name:<11}{f'{batch_size}x{length}':>8}{t['sparse']:>10.4f}{t['abc']:>9.4f}"
                f"{t['eager']:>9.4f}{t['abc'] / t['sparse']:>11.3f}"
                f"{t['eager'] / t['sparse']:>13.3f}"
                f"{cpu['abc'] / cpu['sparse']:>7.3f} {cpu['eager'] / cpu['sparse']:.3f}"
                f"   {memory[0]:.0f} / {memory[1]:.0f} / {memory[2]:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        peak_memory(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
