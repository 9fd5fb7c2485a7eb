"""``llm-gym compare``: train TokenPPO with several reward schemes side by side.

Each (method, seed) run trains one :class:`~llm_gym.agents.TokenPPO` on
LLMCompletion-v0 wrapped by that method's reward wrapper. Runs of the same seed
share the prompts drawn and the policy's initial weights, so differences between
methods are paired. Outputs, in the output folder:

- ``curves.csv``: per-update mean score, KL, completion length per method and seed;
- ``curves.png``: mean and spread over seeds per method;
- ``kl_frontier.png``: seed-mean score against seed-mean KL to the reference per method;
- ``summary.md``: the comparison table (:mod:`llm_gym.experiments.summary`) and
  the credit fidelity of each credit map used;
- ``tb/``: TensorBoard logs per run.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import llm_gym  # noqa: F401  (registers the environments)
from llm_gym import assets
from llm_gym.experiments.summary import (
    kl_matched_table,
    load_curves,
    markdown_table,
    summarise,
    write_long_csv,
)

__all__ = ["METHODS", "PRESETS", "ComparePreset", "make_method_env", "run_compare"]

#: reward schemes: oracle = credit in proportion to the world's known per-token relevance;
#: ``abc-centred`` = ABC spreading only the score's deviation from its running mean
#: (:class:`~llm_gym.wrappers.ScoreBaseline`); ``abc@L`` (e.g. ``abc@0``, ``abc@0,1``) is
#: ABC reading the RM's layer(s) L instead of the preset's ``abc_layers``, so several
#: credit maps of one RM compare in one run
METHODS = ("oracle", "sparse", "abc", "uniform", "abcd", "pbrs", "abc-centred")


def abc_layers_of(method: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """The layers an ``abc`` / ``abc@L`` method reads."""
    _, _, layers = method.partition("@")
    if not layers:
        return default
    try:
        return tuple(int(v) for v in layers.split(","))
    except ValueError as err:
        raise ValueError(
            f"method {method!r}: expected abc@<layer>[,<layer>...], e.g. abc@0"
        ) from err


def check_methods(methods: Sequence[str], preset: ComparePreset | None = None) -> None:
    """Raise a ValueError naming any method that is unknown or that ``preset`` cannot run."""
    unknown = [
        m
        for m in methods
        if m.partition("@")[0] not in METHODS or (m.partition("@")[2] and not m.startswith("abc@"))
    ]
    if unknown:
        raise ValueError(
            f"unknown methods {unknown}; expected names from {list(METHODS)} or abc@<layers>"
        )
    for method in methods:
        if method.startswith("abc@"):
            abc_layers_of(method, ())
    if preset is not None and "oracle" in methods and not preset.embedded_world:
        raise ValueError(
            f"method 'oracle' needs the embedded tokenizer (its credit is the known lexicon "
            f"valence of each embedded token), but the tokenizer is {preset.tokenizer!r}; "
            "drop 'oracle' from the methods"
        )


@dataclass(frozen=True)
class ComparePreset:
    """A comparison's task and PPO settings (override any field from the command line)."""

    task: str = "default"
    methods: tuple[str, ...] = METHODS
    seeds: int = 8
    updates: int = 150
    n_envs: int = 16  # episodes per update: the paper's batch of 16
    n_steps: int | None = None  # steps per env per update; None: the longest completion
    batch_size: int = 128
    n_epochs: int = 4
    learning_rate: float = 3e-5
    gae_lambda: float = 0.95
    beta: float = 0.8
    abc_layers: tuple[int, ...] = (-1,)
    kl_coef: float = 0.05
    kl_target: float | None = 6.0
    kl_horizon: int = 10_000  # timesteps over which the KL coefficient moves by its clipped error
    reward_model: str = "default"
    max_new_tokens: int | tuple[int, int] | None = None
    policy: str | None = None  # hub id or folder of a causal LM; None: the embedded LM
    tokenizer: str | None = None  # hub id or folder; None: the embedded tokenizer
    prompts: str | None = None  # bundled prompt set or file; None: the task's
    fidelity_completions: int = 256
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def embedded_world(self) -> bool:
        """Whether completions are in the embedded tokenizer, whose per-token relevance is known."""
        return self.tokenizer is None


PRESETS: dict[str, ComparePreset] = {
    # the embedded world's credit-limited task: 64-token completions, rare decisive words
    "default": ComparePreset(),
    # the ABC paper's IMDb setting: 2-8-token prompts, 8-16 new tokens, batch 16, beta 0.8
    "paper": ComparePreset(task="paper"),
    # at most ~10 minutes on 2 CPU cores (two runs at a time), still showing the comparison
    "quick": ComparePreset(methods=("oracle", "sparse", "abc", "abc-centred"), seeds=3, updates=30),
}

#: preset fields that do not change what one (method, seed) run computes
_RUN_INDEPENDENT_FIELDS = ("methods", "seeds", "fidelity_completions")


def relevance_of(prompt_ids: np.ndarray, completion_ids: np.ndarray) -> np.ndarray:
    """The embedded world's oracle: each completion token's |lexicon valence|."""
    return assets.token_relevance(completion_ids)


def env_options(preset: ComparePreset) -> dict[str, Any]:
    """The LLMCompletion-v0 options a preset asks for."""
    options: dict[str, Any] = {"task": preset.task, "reward_model": preset.reward_model}
    if preset.max_new_tokens is not None:
        # completions run their full sampled length, as in the presets
        options["max_new_tokens"] = preset.max_new_tokens
        low = (
            preset.max_new_tokens
            if isinstance(preset.max_new_tokens, int)
            else preset.max_new_tokens[0]
        )
        options["min_new_tokens"] = low
    if preset.tokenizer is not None:
        options["tokenizer"] = preset.tokenizer
    if preset.prompts is not None:
        options["prompts"] = preset.prompts
    if preset.policy is not None:
        from transformers import AutoConfig

        # policies whose output layer is padded past the tokenizer (Qwen, Llama-style)
        config = AutoConfig.from_pretrained(preset.policy)
        vocab = getattr(config, "vocab_size", None)
        if vocab is not None:
            options["vocab_size"] = vocab
    options.update(preset.env_kwargs)
    return options


def make_method_env(method: str, preset: ComparePreset) -> gym.Env:
    """LLMCompletion-v0 wrapped for ``method``."""
    from llm_gym.wrappers import (
        AttentionCredit,
        GeneratorAttentionCredit,
        PotentialShaping,
        RelevanceCredit,
        SparseReward,
        UniformCredit,
    )

    if method == "oracle":
        check_methods([method], preset)
    env = gym.make("LLMCompletion-v0", **env_options(preset))
    generator = preset.policy or str(assets.LM_DIR)
    wrappers: dict[str, Callable[[gym.Env], gym.Env]] = {
        "sparse": SparseReward,
        "oracle": lambda e: RelevanceCredit(e, relevance_of, beta=preset.beta),
        "abc": lambda e: AttentionCredit(e, beta=preset.beta, layers=preset.abc_layers),
        "uniform": UniformCredit,
        "abcd": lambda e: GeneratorAttentionCredit(e, generator, beta=preset.beta),
        "pbrs": lambda e: PotentialShaping(e, "reward_model"),
        "abc-centred": lambda e: AttentionCredit(
            e, beta=preset.beta, layers=preset.abc_layers, baseline="running_mean"
        ),
    }
    if method.startswith("abc@"):
        return AttentionCredit(
            env, beta=preset.beta, layers=abc_layers_of(method, preset.abc_layers)
        )
    if method not in wrappers:
        raise ValueError(
            f"unknown method {method!r}; expected one of {list(wrappers)} or abc@<layers>"
        )
    return wrappers[method](env)


def _policy_kwargs(preset: ComparePreset, env: gym.Env) -> dict[str, Any] | None:
    if preset.policy is None:
        return None
    task = env.unwrapped.task
    kwargs: dict[str, Any] = {"model": preset.policy}
    if task.vocab_size > len(task.tokenizer):  # padded output layer: never sample a non-token
        kwargs["n_tokens"] = len(task.tokenizer)
    return kwargs


def _horizon(env: gym.Env) -> int:
    return int(env.unwrapped.task.new_tokens[1])


def make_agent(method: str, seed: int, preset: ComparePreset) -> Any:
    """The TokenPPO that one (method, seed) run of ``preset`` trains, untrained."""
    import torch

    from llm_gym.agents import TokenPPO

    torch.manual_seed(seed)
    env = make_method_env(method, preset)
    n_steps = preset.n_steps or _horizon(env)
    return TokenPPO(
        "CausalLMPolicy",
        env,
        n_envs=preset.n_envs,
        n_steps=n_steps,
        batch_size=min(preset.batch_size, n_steps * preset.n_envs),
        n_epochs=preset.n_epochs,
        learning_rate=preset.learning_rate,
        gae_lambda=preset.gae_lambda,
        kl_coef=preset.kl_coef,
        kl_target=preset.kl_target,
        kl_horizon=preset.kl_horizon,
        policy_kwargs=_policy_kwargs(preset, env),
        seed=seed,
        device="cpu",
    )


def run_one(
    method: str, seed: int, preset: ComparePreset, out_dir: Path, threads: int | None = None
) -> list[dict[str, Any]]:
    """Train one run; returns one row per update (method, seed, update, score, kl, length)."""
    import shutil

    import torch
    from stable_baselines3.common.logger import configure

    if threads:
        torch.set_num_threads(threads)
    model = make_agent(method, seed, preset)
    env, n_steps = model.env, model.n_steps
    run_dir = out_dir / "tb" / f"{method}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted attempt's logs
    model.set_logger(configure(str(run_dir), ["csv", "tensorboard"]))
    model.learn(preset.updates * n_steps * preset.n_envs, log_interval=1)
    rows = []
    with open(run_dir / "progress.csv", newline="") as handle:
        for update, row in enumerate(csv.DictReader(handle)):
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "update": update,
                    "score": float(row["rollout/score_mean"]),
                    "kl": float(row.get("rollout/kl_per_completion") or "nan"),
                    "length": float(row.get("rollout/completion_length") or "nan"),
                }
            )
    env.close()
    return rows


def credit_fidelity_table(
    preset: ComparePreset, methods: Sequence[str], n: int = 256, seed: int = 0
) -> str:
    """Fidelity of each credit map the run uses, on ``n`` completions of the initial policy."""
    import torch
    from transformers import AutoModelForCausalLM

    from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel
    from llm_gym.rewards.credit import credit_fidelity
    from llm_gym.rewards.generator import GeneratorAttention
    from llm_gym.rewards.loading import load_pretrained

    if not preset.embedded_world:
        return (
            "(skipped: the per-token relevance that fidelity is measured against is known "
            "only for the embedded world's tokenizer)"
        )
    env = gym.make("LLMCompletion-v0", device="cpu", **env_options(preset))
    task = env.unwrapped.task
    generator = preset.policy or str(assets.LM_DIR)
    lm = load_pretrained(AutoModelForCausalLM, generator).eval()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    prompts = [task.prompts[i] for i in rng.integers(len(task.prompts), size=n)]
    completions = []
    with torch.no_grad():
        for prompt in prompts:
            out = lm.generate(
                torch.from_numpy(prompt)[None],
                do_sample=True,
                top_k=0,
                max_new_tokens=task.new_tokens[1],
                pad_token_id=task.pad_token_id,
                eos_token_id=task.eos_token_id,
            )
            completions.append(out[0, len(prompt) :].numpy())
    batch = CompletionBatch(prompts, completions, task.tokenizer)
    maps: dict[str, Any] = {}
    if "uniform" in methods:
        maps["uniform"] = "uniform"
    for method in methods:
        if method == "abc" or method.startswith("abc@"):
            layers = abc_layers_of(method, preset.abc_layers)
            maps[f"{method} (layers {layers})"] = AttentionRequest(layers)
    if "abcd" in methods:
        maps["abcd (generator attention)"] = GeneratorAttention(generator, device="cpu")
    if "oracle" in methods:
        maps["oracle"] = lambda b: [
            relevance_of(p, c) / max(relevance_of(p, c).sum(), 1e-12)
            for p, c in zip(b.prompt_ids, b.completion_ids)
        ]
    rm = task.reward_model if isinstance(task.reward_model, HFRewardModel) else None
    relevance = [assets.token_relevance(c) for c in completions]
    reports = credit_fidelity(batch, relevance, reward_model=rm, credit_maps=maps)
    lines = [
        "| credit map | mass ratio | top-1 on relevant (chance) | Spearman | completions |",
        "|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        lines.append(
            f"| {name} | {report.mass_ratio:.2f}x | {report.top_hit_rate:.2f} ({report.top_hit_chance:.2f}) "
            f"| {report.spearman:.2f} | {report.n_completions} |"
        )
    return "\n".join(lines)


def plot_curves(csv_path: Path, png_path: Path, smoothing: int = 5) -> None:
    """Seed-mean curve per method with a band of +-1 standard error over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llm_gym.experiments.summary import smooth

    curves = load_curves(csv_path)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method in curves.methods:
        runs = [curves.values[method][s] for s in curves.seeds(method)]
        length = min(len(r) for r in runs)
        stacked = np.array([smooth(r[:length], smoothing) for r in runs])
        mean = stacked.mean(0)
        se = stacked.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(mean)
        x = np.arange(length)
        ax.plot(x, mean, label=f"{method} ({len(runs)} seeds)")
        ax.fill_between(x, mean - se, mean + se, alpha=0.2)
    ax.set_xlabel("PPO update")
    ax.set_ylabel(f"mean score per batch (moving average of {smoothing})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def plot_kl_frontier(csv_path: Path, png_path: Path, smoothing: int = 5) -> None:
    """Seed-mean score against seed-mean KL per completion, one line per method over updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llm_gym.experiments.summary import smooth

    scores, kls = load_curves(csv_path), load_curves(csv_path, column="kl")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in scores.methods:
        ax.plot(
            smooth(kls.seed_mean(method), smoothing),
            smooth(scores.seed_mean(method), smoothing),
            label=f"{method} ({len(scores.seeds(method))} seeds)",
        )
    ax.set_xlabel(f"KL per completion to the reference, nats (moving average of {smoothing})")
    ax.set_ylabel("mean score per batch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def _default(field_: Any) -> Any:
    return field_.default_factory() if field_.default is MISSING else field_.default


def _json_values(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, default=str))  # tuples -> lists, as stored


def _run_config(preset: ComparePreset) -> dict[str, Any]:
    config = asdict(preset)
    for name in _RUN_INDEPENDENT_FIELDS:
        config.pop(name)
    return _json_values(config)


def _finished_runs(out: Path, preset: ComparePreset) -> list[dict[str, Any]]:
    """Rows of the runs an earlier call finished in ``out`` with the same run settings."""
    config_path, csv_path = out / "config.json", out / "curves.csv"
    config = _run_config(preset)
    if config_path.exists():
        # a setting added after the folder was written held its default value then
        defaults = {f.name: _default(f) for f in fields(ComparePreset) if f.name in config}
        stored = _json_values(defaults) | json.loads(config_path.read_text())
        changed = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
        if changed:
            details = ", ".join(
                f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items()
            )
            raise ValueError(
                f"{out} holds runs made with other settings ({details}); "
                "pass another --out, or the same settings to add methods or seeds"
            )
    elif csv_path.exists():
        raise ValueError(
            f"{csv_path} exists but {config_path} does not, so its runs' settings are unknown; "
            "pass another --out"
        )
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["seed"], row["update"] = int(row["seed"]), int(row["update"])
    return rows


def run_compare(
    preset: ComparePreset,
    out_dir: str | Path,
    progress: bool = True,
    smoothing: int = 5,
    fidelity: bool = True,
    first_seed: int = 0,
    jobs: int = 1,
) -> str:
    """Train every (method, seed), write the outputs, and return the summary markdown.

    Runs already in ``out_dir`` from an earlier call with the same settings are kept,
    not retrained, so an interrupted comparison resumes and a finished one can gain
    methods or seeds. ``jobs > 1`` trains that many runs at a time in worker
    processes with one torch thread each.
    """
    from tqdm.auto import tqdm

    check_methods(preset.methods, preset)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if "sparse" not in preset.methods:
        preset = replace(preset, methods=("sparse", *preset.methods))  # the baseline
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _finished_runs(out, preset)
    done = {(row["method"], row["seed"]) for row in rows}
    started = time.perf_counter()
    seeds = range(first_seed, first_seed + preset.seeds)
    runs = [(m, s) for s in seeds for m in preset.methods if (m, s) not in done]
    order = {m: i for i, m in enumerate(preset.methods)}

    def record(new_rows: list[dict[str, Any]]) -> None:
        rows.extend(new_rows)
        rows.sort(key=lambda r: (r["seed"], order.get(r["method"], len(order)), r["update"]))
        write_long_csv(out / "curves.csv", rows)

    bar = tqdm(total=len(runs), desc="compare", disable=not progress, unit="run")
    if jobs == 1:
        for method, seed in runs:
            record(run_one(method, seed, preset, out))
            bar.update()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # torch is not fork-safe
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(run_one, m, s, preset, out, 1) for m, s in runs]
            for future in as_completed(futures):
                record(future.result())
                bar.update()
    bar.close()
    minutes = (time.perf_counter() - started) / 60
    return write_report(out, preset, [out / "curves.csv"], smoothing, fidelity, minutes)


def kl_table(rows: Sequence[dict[str, Any]], last: int = 10) -> str:
    """KL to the reference and completion length over each method's last ``last`` updates."""
    by_method: dict[str, list[tuple[int, float, float]]] = {}
    for row in rows:
        kl, length = float(row.get("kl") or "nan"), float(row.get("length") or "nan")
        by_method.setdefault(row["method"], []).append((int(row["update"]), kl, length))
    lines = [
        f"| method | KL per completion, last {last} updates (nats) | completion length |",
        "|---|---|---|",
    ]
    for method, values in by_method.items():
        final = max(u for u, _, _ in values) - last
        tail = [(kl, length) for u, kl, length in values if u > final]
        lines.append(
            f"| {method} | {np.nanmean([k for k, _ in tail]):.2f} | {np.nanmean([n for _, n in tail]):.1f} |"
        )
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    preset: ComparePreset,
    csv_paths: Sequence[str | Path],
    smoothing: int = 5,
    fidelity: bool = True,
    minutes: float | None = None,
) -> str:
    """Merge ``csv_paths`` into ``out_dir``/curves.csv; write curves.png and summary.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for path in csv_paths:
        with open(path, newline="") as handle:
            rows += list(csv.DictReader(handle))
    # tables and plot list methods as the preset does, then any others as they appear
    rank = {m: i for i, m in enumerate(preset.methods)}
    for row in rows:
        rank.setdefault(row["method"], len(rank))
    rows.sort(key=lambda r: (int(r["seed"]), rank[r["method"]], int(r["update"])))
    merged = out / "curves.csv"
    write_long_csv(merged, rows)
    plot_curves(merged, out / "curves.png", smoothing)
    scores = load_curves(merged)
    threshold, summaries = summarise(scores, smoothing=smoothing)
    has_kl = any(np.isfinite(float(row.get("kl") or "nan")) for row in rows)
    parts = [
        "# llm-gym compare",
        "",
        f"Preset: `{json.dumps(asdict(preset), default=str)}`",
    ]
    if minutes is not None:
        parts.append(f"Wall time: {minutes:.1f} min.")
    parts += [
        "",
        f"Threshold: 90% of the sparse method's best seed-mean score (moving average of {smoothing}) "
        f"= {threshold:.3f}. Per-seed columns read each seed's own curve (unreached seeds count as "
        "the run length); paired differences compare each seed's mean score over the run with "
        "sparse on the same seed (± standard error).",
        "",
        markdown_table(summaries),
        "",
        kl_table(rows),
    ]
    if has_kl:
        plot_kl_frontier(merged, out / "kl_frontier.png", smoothing)
        target = preset.kl_target or 6.0
        parts += [
            "",
            "## KL-matched scores",
            "",
            f"Per seed, the best score (moving average of {smoothing}) among updates whose KL to "
            "the reference (same moving average) stayed within the budget; in brackets the paired "
            "difference against sparse on the same seeds (± standard error). A method that scores "
            "more only by drifting further from the reference gains nothing here. A method whose "
            "KL rises slowly spends more updates inside a budget, which the table also rewards: "
            "read it with `kl_frontier.png`, score against KL.",
            "",
            kl_matched_table(
                scores,
                load_curves(merged, column="kl"),
                budgets=(target / 3, 2 * target / 3, target),
                smoothing=smoothing,
            ),
        ]
    if fidelity:
        methods = sorted({row["method"] for row in rows})
        parts += [
            "",
            "## Credit fidelity of the credit maps used (initial policy's completions)",
            "",
            credit_fidelity_table(preset, methods, n=preset.fidelity_completions),
        ]
    summary = "\n".join(parts) + "\n"
    (out / "summary.md").write_text(summary)
    return summary
