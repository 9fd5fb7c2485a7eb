"""The GPU check: every figure a GPU run of llm-gym owes, in one run that writes docs/gpu.md.

    bash benchmarks/gpu_check.sh                 # on a machine with a CUDA GPU (< 8 minutes)
    bash benchmarks/gpu_check.sh --device cpu    # dry run with small sizes (no GPU figures)

1. ABC's attention read-out against sparse scoring, GPT-2-small-sized reward model
   (random weights), batch 16 x 1024 tokens, float32 and bfloat16: median times
   (goal: ABC / sparse <= 1.02x) and the peak ``torch.cuda.max_memory_allocated``
   above the weights for sparse, ABC and eager attention with
   ``output_attentions=True``, beside what the shapes predict: ABC's extra is
   O(B * T) (one row per head), eager's O(L * H * B * T^2) (every layer's matrix).
2. Rollout collection against ``model.generate`` and 3. update tokens/s, with a
   GPT-2-small-sized policy (random weights), float32 and bfloat16
   (``benchmarks/rollout_throughput.py`` and ``update_throughput.py``).
4. A 20-update TokenPPO run of the default preset (``llm-gym compare --rewards abc``).

The dry run (``--device cpu``) runs the same code with the embedded LM, a
two-layer RM and short sequences, and says in docs/gpu.md that the GPU figures
are still missing.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def gpt2_config(vocab: int, layers: int, width: int, heads: int, **extra):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab, n_layer=layers, n_embd=width, n_head=heads, n_positions=1024,
        bos_token_id=1, eos_token_id=1, pad_token_id=0, **extra,
    )  # fmt: skip


def build_models(folder: Path, gpu: bool) -> tuple[Path, Path | None]:
    """A random GPT-2-small-sized RM (the embedded tokenizer's vocabulary) and, on a GPU, a
    random GPT-2-small LM (50,257 ids, wider than the tokenizer: sampling keeps to its ids)."""
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    from llm_gym import assets
    from llm_gym.rewards.loading import load_tokenizer

    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    torch.manual_seed(0)
    sizes = (12, 768, 12) if gpu else (2, 128, 4)
    rm_path = folder / "rm"
    rm = GPT2ForSequenceClassification(gpt2_config(len(tokenizer), *sizes, num_labels=2))
    rm.save_pretrained(rm_path)
    tokenizer.save_pretrained(rm_path)
    if not gpu:
        return rm_path, None
    lm_path = folder / "lm"
    GPT2LMHeadModel(gpt2_config(50257, 12, 768, 12)).save_pretrained(lm_path)
    return rm_path, lm_path


def timed(calls: dict[str, Callable[[], object]], repeats: int, sync) -> dict[str, float]:
    """Median seconds per call, the calls interleaved after one warm-up each."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def abc_readout(rm_path: Path, device: torch.device, batch: int, length: int, repeats: int):
    """Rows of the ABC table: (dtype, times, peak MiB or None, predicted MiB)."""
    from transformers import AutoModelForSequenceClassification

    from llm_gym import assets
    from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel
    from llm_gym.rewards.loading import load_tokenizer

    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    rng = np.random.default_rng(0)
    pairs = CompletionBatch(
        [rng.integers(3, len(tokenizer), size=8) for _ in range(batch)],
        [rng.integers(3, len(tokenizer), size=length - 8) for _ in range(batch)],
        tokenizer,
    )
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        rm = HFRewardModel(str(rm_path), tokenizer=tokenizer, device=device, dtype=dtype)
        eager = AutoModelForSequenceClassification.from_pretrained(
            rm_path, attn_implementation="eager", dtype=dtype
        ).to(device)
        eager.config.pad_token_id = -1
        eager.eval()

        @torch.no_grad()
        def naive(rm=rm, eager=eager):
            encoded = rm.encode(pairs)
            out = eager(**rm.model_inputs(encoded), output_attentions=True)
            rows_ = out.attentions[-1][torch.arange(batch), :, encoded.score_index].float().mean(1)
            return rm.logits_to_scores(out.logits), rows_.cpu()

        calls = {
            "sparse": lambda rm=rm: rm(pairs),
            "abc": lambda rm=rm: rm(pairs, AttentionRequest()),
        }
        calls["eager"] = naive
        times = timed(calls, repeats, sync)
        peaks = None
        if cuda:
            peaks = {}
            for name, call in calls.items():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                call()
                torch.cuda.synchronize()
                peaks[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        config = rm.model.config
        width = torch.finfo(dtype).bits // 8
        predicted = {
            # one float32 row per head and position of the chosen layer
            "abc": batch * config.n_head * length * 4 / 2**20,
            # every layer's B x H x T x T probabilities (the weights are kept for the output)
            "eager": config.n_layer * config.n_head * batch * length**2 * width / 2**20,
        }
        rows.append((str(dtype).removeprefix("torch."), times, peaks, predicted))
        del rm, eager
        if cuda:
            torch.cuda.empty_cache()
    return rows


def run(command: list[str], log: list[str]) -> tuple[str, float]:
    """Run a benchmark script; its output (last lines) and wall seconds."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [
        line
        for line in done.stdout.splitlines()
        if line.strip() and "padding" not in line and "warn" not in line.lower()
    ]
    if done.returncode != 0:
        lines.append(f"FAILED (exit {done.returncode}): " + done.stderr.strip()[-2000:])
    shown = ["python" if part == sys.executable else part for part in command]  # no local paths
    log.append(f"$ {' '.join(shown)}   # {seconds:.0f} s")
    return "\n".join(lines), seconds


def compare_run(device: torch.device, updates: int, folder: Path, log: list[str]) -> str:
    out = folder / "compare"
    command = ["llm-gym", "compare", "--rewards", "abc", "--seeds", "1"]
    command += ["--updates", str(updates), "--no-fidelity", "--out", str(out)]
    if device.type == "cpu":
        command += ["--threads", "1"]
    text, seconds = run(command, log)
    summary = [f"wall time {seconds:.0f} s for {updates} updates (model loading included)"]
    timings = out / "timings.csv"
    if timings.exists():
        per_update = [float(r["seconds"]) for r in csv.DictReader(timings.open())]
        summary.append(f"median {statistics.median(per_update):.2f} s per update")
    curves = out / "curves.csv"
    if curves.exists():
        rows = list(csv.DictReader(curves.open()))
        first, last = rows[0], rows[-1]
        summary.append(
            f"score {float(first['score']):.3f} at update 0 -> {float(last['score']):.3f} at "
            f"update {last['update']}, KL per completion {float(last['kl']):.2f} nats"
        )
    elif text:
        summary.append(text[-1500:])
    return "; ".join(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (dry run)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "gpu.md"))
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu for the dry run")
    if not gpu:  # one thread: a second one contends with itself on a small shared CPU
        torch.set_num_threads(1)
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    rm_path, lm_path = build_models(folder, gpu)
    batch, length = (16, 1024) if gpu else (4, 128)
    log: list[str] = []

    readout = abc_readout(rm_path, device, batch, length, repeats=10 if gpu else 3)
    model = ["--model", str(lm_path)] if lm_path else []
    rollout_size = (
        ["--batch", "16", "--tokens", "128"] if gpu else ["--batch", "4", "--tokens", "8"]
    )
    rollouts, updates = {}, {}
    for dtype in ("float32", "bfloat16"):
        common = ["--device", args.device, "--dtype", dtype, *model]
        if not gpu:  # one thread: a second one contends with itself on a small shared CPU
            common += ["--threads", "1"]
        rollouts[dtype], _ = run(
            [sys.executable, "benchmarks/rollout_throughput.py", *common, *rollout_size]
            + ["--repeats", "3" if gpu else "1", "--no-naive"],
            log,
        )
        updates[dtype], _ = run(
            [sys.executable, "benchmarks/update_throughput.py", *common]
            + ["--lengths", "120" if gpu else "8", "--repeats", "3" if gpu else "1"],
            log,
        )
    training = compare_run(device, 20 if gpu else 2, folder, log)
    total = time.perf_counter() - started

    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or 'x86'})"
    lines = ["# llm-gym on a GPU", ""]
    if not gpu:
        lines += [
            "**The GPU figures are still missing.** No CUDA device has run this check yet; what",
            "follows is the dry run on the CPU (`bash benchmarks/gpu_check.sh --device cpu`:",
            "the embedded LM, a two-layer reward model, short sequences), which only shows",
            "that every step runs. The one command that produces the GPU figures, on a",
            "machine with a CUDA GPU (under 8 minutes on one GPU):",
        ]
    else:
        lines += ["Produced on one GPU by the one command:"]
    lines += [
        "",
        "```",
        "bash benchmarks/gpu_check.sh",
        "```",
        "",
        f"Device: {name}; torch {torch.__version__}; whole check {total:.0f} s.",
        "",
        f"## ABC's read-out against sparse scoring ({batch} x {length} tokens)",
        "",
        "Reward model: GPT-2-small-sized (12 layers, width 768, 12 heads), random weights"
        if gpu
        else "Reward model: 2 layers, width 128, 4 heads, random weights (dry run)",
        "(goal: ABC / sparse <= 1.02x). Peak memory: `torch.cuda.max_memory_allocated` above",
        "the memory held before the call; predicted: ABC's rows, one float32 row per head",
        "(O(B*T)), and eager attention's matrices, every layer's B x H x T x T (O(L*H*B*T^2)).",
        "",
        "| dtype | sparse ms | ABC ms | eager ms | ABC / sparse | eager / sparse | peak MiB sparse / ABC / eager | predicted MiB ABC / eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dtype, times, peaks, predicted in readout:
        peak = (
            f"{peaks['sparse']:.0f} / {peaks['abc']:.0f} / {peaks['eager']:.0f}"
            if peaks
            else "needs CUDA"
        )
        lines.append(
            f"| {dtype} | {times['sparse'] * 1e3:.1f} | {times['abc'] * 1e3:.1f} | "
            f"{times['eager'] * 1e3:.1f} | {times['abc'] / times['sparse']:.3f}x | "
            f"{times['eager'] / times['sparse']:.2f}x | {peak} | "
            f"{predicted['abc']:.1f} / {predicted['eager']:.0f} |"
        )
    policy = "a GPT-2-small-sized LM, random weights" if gpu else "the embedded LM (dry run)"
    for title, results in (("Rollout collection against `model.generate`", rollouts),
                           ("Update throughput", updates)):  # fmt: skip
        lines += ["", f"## {title}", "", f"Policy: {policy}.", ""]
        for dtype, text in results.items():
            lines += [f"{dtype}:", "", "```", text, "```", ""]
    lines += [
        "## A 20-update TokenPPO run of the default preset"
        if gpu
        else "## A TokenPPO run of the default preset (2 updates in the dry run)",
        "",
        f"`llm-gym compare --rewards abc --seeds 1` on {device}: {training}.",
        "",
        "## Commands run",
        "",
        "```",
        *log,
        "```",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
