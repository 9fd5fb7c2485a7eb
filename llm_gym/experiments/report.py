"""The outputs of ``llm-gym compare``, all computed from its curves CSV.

Holds :func:`write_report` (merge curve CSVs, write ``curves.csv``, the plots and
``summary.md``, with the KL control of :mod:`~llm_gym.experiments.kl_control` and the
interval estimates of :mod:`~llm_gym.experiments.statistics`), the plots
:func:`plot_curves` and :func:`plot_kl_frontier`, and the tables :func:`kl_table`
and :func:`credit_fidelity_table` (the fidelity of each credit map the methods use,
read from the method registry).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np

from llm_gym.experiments.kl_control import (
    coefficient_curves,
    kl_band_sides_table,
    kl_band_table,
    kl_noise_table,
    plot_kl_control,
)
from llm_gym.experiments.methods import registry, task_relevance
from llm_gym.experiments.presets import ComparePreset, env_options
from llm_gym.experiments.statistics import (
    STATISTICS_NOTE,
    interval_estimates,
    intervals_table,
    load_task,
    plot_intervals,
)
from llm_gym.experiments.summary import (
    Curves,
    kl_matched_table,
    load_curves,
    markdown_table,
    smooth,
    sparse_gain_share,
    summarise,
    write_long_csv,
)

__all__ = [
    "credit_fidelity_table",
    "kl_table",
    "plot_curves",
    "plot_kl_frontier",
    "timing_table",
    "write_report",
]


def credit_fidelity_table(
    preset: ComparePreset, methods: Sequence[str], n: int = 256, seed: int = 0
) -> str:
    """Fidelity of each credit map ``methods`` use, on ``n`` completions of the initial policy.

    Each method's map is its registry entry's ``credit_map``; methods that share a
    map (``abc`` and ``abc-centred``) share its row. The completions are
    :func:`~llm_gym.agents.sample_completions` of the starting LM on the preset's task.
    """
    if not preset.embedded_world:
        return (
            "(skipped: the per-token relevance that fidelity is measured against is known "
            "only for the embedded world's tokenizer)"
        )
    maps: dict[str, Any] = {}
    for name in methods:
        if name not in registry:  # a CSV being summarised may hold runs of other methods
            continue
        method = registry.lookup(name)
        if method.credit_map is not None:
            label, credit_map = method.credit_map(preset)
            maps.setdefault(label, credit_map)
    if not maps:
        return "(none of these methods spreads credit by a map)"

    import gymnasium as gym

    from llm_gym.agents import sample_completions
    from llm_gym.rewards import CompletionBatch, HFRewardModel
    from llm_gym.rewards.credit import credit_fidelity

    options = {"device": "cpu", **env_options(preset)}
    infos = sample_completions(preset.policy_path, n, seed, **options)
    prompts = [np.asarray(info["prompt_ids"], dtype=np.int64) for info in infos]
    completions = [np.asarray(info["completion_ids"], dtype=np.int64) for info in infos]
    env = gym.make("LLMCompletion-v0", **options)
    task = cast(Any, env.unwrapped).task  # LLMCompletionEnv's task
    batch = CompletionBatch(prompts, completions, task.tokenizer)
    rm = task.reward_model if isinstance(task.reward_model, HFRewardModel) else None
    truth = task_relevance(preset.task)
    relevance = [truth(p, c) for p, c in zip(prompts, completions)]
    reports = credit_fidelity(batch, relevance, reward_model=rm, credit_maps=maps)
    env.close()
    lines = [
        "| credit map | mass ratio | top-1 on relevant (chance) | Spearman | completions |",
        "|---|---|---|---|---|",
    ]
    for label, report in reports.items():
        lines.append(
            f"| {label} | {report.mass_ratio:.2f}x | {report.top_hit_rate:.2f} ({report.top_hit_chance:.2f}) "
            f"| {report.spearman:.2f} | {report.n_completions} |"
        )
    return "\n".join(lines)


def plot_curves(csv_path: Path, png_path: Path, smoothing: int = 5) -> None:
    """Seed-mean curve per method with a band of +-1 standard error over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def kl_table(rows: Sequence[dict[str, Any]], last: int = 10) -> str:
    """KL to the reference and completion length over each method's last ``last`` updates.

    Example:
        >>> rows = [{"method": "sparse", "update": u, "kl": u, "length": 8} for u in range(4)]
        >>> print(kl_table(rows, last=2))
        | method | KL per completion, last 2 updates (nats) | completion length |
        |---|---|---|
        | sparse | 2.50 | 8.0 |
    """
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


def timing_table(path: Path) -> str:
    """Median and interquartile range of the seconds per update of each method ('' without data)."""
    if not path.exists():
        return ""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_method: dict[str, list[float]] = {}
    for row in rows:
        if int(row["update"]) > 0:  # the first update also loads the models
            by_method.setdefault(row["method"], []).append(float(row["seconds"]))
    lines = [
        "| method | seconds per update, median (IQR) | updates timed |",
        "|---|---|---|",
    ]
    for method, seconds in by_method.items():
        q1, median, q3 = np.nanpercentile(seconds, [25, 50, 75])
        lines.append(f"| {method} | {median:.2f} ({q1:.2f}-{q3:.2f}) | {len(seconds)} |")
    return "\n".join(lines) if by_method else ""


def _flat_baseline_warning(curves: Curves, smoothing: int) -> list[str]:
    """Caveat lines: sparse's best at or below zero, or a quarter of the best method's gain."""
    lines = []
    best = curves.best("sparse", smoothing)
    if best <= 0:
        lines += [
            "",
            f"**Sparse's best ({best:.3f}) is not above zero**, so 90% of it is not below it "
            "and no curve reaches the threshold except by passing sparse's best; the suite "
            "(`--suite`) measures from the start instead.",
        ]
    share = sparse_gain_share(curves, smoothing)
    if share >= 0.25:
        return lines
    return lines + [
        "",
        f"**Sparse barely learned here**: its best gain over the start is {share:.0%} of the "
        "best method's, so the threshold sits near the starting score and the "
        "updates-to-threshold columns mostly measure noise; read the scores and paired "
        "differences instead.",
    ]


def write_report(
    out_dir: str | Path,
    preset: ComparePreset,
    csv_paths: Sequence[str | Path],
    smoothing: int = 5,
    fidelity: bool = True,
    minutes: float | None = None,
) -> str:
    """Merge ``csv_paths`` into ``out_dir``/curves.csv; write the plots and summary.md.

    Returns the summary's markdown.
    """
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
        f"Preset: `{json.dumps(asdict(preset) | {'reward_model': preset.reward_model_name}, default=str)}`",
    ]
    if preset.gae_lambda_by_method:
        own = ", ".join(f"{m} {v:g}" for m, v in preset.gae_lambda_by_method.items())
        parts.append(f"GAE lambda per method: {own}; every other method {preset.gae_lambda:g}.")
    if minutes is not None:
        parts.append(
            f"Wall time of the call that wrote this (resumed runs not counted): {minutes:.1f} min."
        )
    parts += [
        "",
        f"Threshold: 90% of the sparse method's best seed-mean score (moving average of {smoothing}) "
        f"= {threshold:.3f}. Per-seed columns read each seed's own curve (unreached seeds count as "
        "the run length); paired differences compare each seed's mean score over the run with "
        "sparse on the same seed (± standard error).",
        *_flat_baseline_warning(scores, smoothing),
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
    if has_kl and preset.kl_target is not None:
        kls = load_curves(merged, column="kl")
        coefs = coefficient_curves(kls, preset)
        plot_kl_control(merged, out / "kl_control.png", preset, smoothing)
        parts += [
            "",
            "## KL control",
            "",
            f"Controller: `{preset.kl_controller}`, target {preset.kl_target:g} nats per completion"
            + (
                ", reading the exact KL (each visited state's over the vocabulary; the sampled "
                "log-ratio is the `kl_sampled` column of curves.csv). "
                if preset.kl_estimator == "exact"
                else ". "
            )
            + f"Seed-mean KL (moving average of {smoothing}) against the band target ± 25%; the "
            "coefficients are replayed from each run's KL curve (a controller is a deterministic "
            "function of the KL it saw).",
            "",
            kl_band_table(kls, preset.kl_target, smoothing=smoothing, coefs=coefs),
            "",
            "Where the seed-mean KL left the band, and the share of runs whose coefficient "
            "was 0 there (a penalty can pull KL down, never push it up):",
            "",
            kl_band_sides_table(kls, coefs, preset.kl_target, smoothing=smoothing),
            "",
            "![KL control](kl_control.png)",
            "",
            "How much the KL the runs measured moves from update 30 on (a band is only as "
            "narrow as the measurement allows):",
            "",
            kl_noise_table(kls),
        ]
        sampled = None
        if preset.kl_estimator == "exact":
            try:  # an exact-read run keeps the sampled estimate beside it
                sampled = load_curves(merged, column="kl_sampled")
            except ValueError:  # curves.csv written by sampled-read runs
                pass
        if sampled is not None:
            parts += [
                "",
                "The same runs' sampled estimate (the log-ratio at the sampled tokens, which "
                "the controller did not read):",
                "",
                kl_band_table(sampled, preset.kl_target, smoothing=smoothing),
                "",
                kl_noise_table(sampled),
            ]
    parts += ["", "## Interval estimates", ""]
    try:
        estimates = interval_estimates([load_task(merged, preset.task, smoothing=smoothing)])
    except ValueError as err:  # no sparse runs, or a sparse baseline that never learned
        parts.append(f"(skipped: {err})")
    else:
        plot_intervals(estimates, out / "intervals.png", f"{preset.task} preset")
        parts += [
            STATISTICS_NOTE.format(reps=2000),
            "",
            intervals_table(estimates),
            "",
            "![interval estimates](intervals.png)",
        ]
    timing = timing_table(out / "timings.csv")
    if timing:
        parts += ["", "## Wall time per update", "", timing]
    if fidelity:
        methods = list(dict.fromkeys(row["method"] for row in rows))  # in the tables' order
        parts += [
            "",
            "## Credit fidelity of the credit maps used (initial policy's completions)",
            "",
            credit_fidelity_table(preset, methods, n=preset.fidelity_completions),
        ]
    summary = "\n".join(parts) + "\n"
    (out / "summary.md").write_text(summary)
    return summary
