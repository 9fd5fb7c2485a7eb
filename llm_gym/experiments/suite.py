"""``llm-gym compare --suite``: every credit-benchmark task x method, and the aggregate over tasks.

Each task is one comparison in its own subfolder (``OUT/<task>/``, resumable as
any ``llm-gym compare`` folder, on any backend); the suite's ``summary.md``
gathers, per task, its rule and its updates-to-threshold table, then the
aggregate over tasks and seeds (IQM and mean of the normalised score with
stratified-bootstrap intervals, the probability of improvement over sparse, the
geometric mean of the ratios; :mod:`llm_gym.experiments.statistics`), and
``ratios.png`` shows each task's ratio per method with its interval.

Holds :data:`SUITE_TASKS`, :data:`SUITE_METHODS`, :func:`suite_preset`,
:func:`run_suite`, :func:`write_suite_report` and :func:`plot_suite_ratios`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.experiments.methods import SUITE_METHODS, SUITE_TASKS, check_methods
from llm_gym.experiments.presets import ComparePreset, env_options
from llm_gym.experiments.runs import run_compare
from llm_gym.experiments.statistics import (
    STATISTICS_NOTE,
    MethodIntervals,
    Task,
    interval_estimates,
    intervals_table,
    load_task,
    task_from_curves,
)
from llm_gym.experiments.summary import Curves, sparse_gain_share

__all__ = [
    "SUITE_METHODS",
    "SUITE_TASKS",
    "plot_suite_ratios",
    "run_suite",
    "suite_preset",
    "write_suite_report",
]


#: what each task's credit structure is, for the report
STRUCTURES = {
    "default": "sentiment: one or two rare words decide (VADER after negation, intensifiers, 'but')",
    "paper": "sentiment at the paper's 8-16 tokens",
    "decisive": "one decisive word near the start (the first character named), the rest neutral",
    "diffuse": "every word an equal small share (short words against long ones)",
    "interaction": "pairs decide (a character and the place it is in), no word alone",
    "long": "sentiment at 140-160 tokens (the paper's longest): the rare words further apart",
}


#: how the suite's normalisation differs from a single comparison's
SUITE_NOTE = (
    "In the suite, however, s_best is the best seed-mean score (moving average) of any method on the "
    "task, not sparse's, so that 1.0 means the same on every task; and the ratios' threshold "
    "is the start plus 90% of sparse's gain over it (s0 + 0.9 (sparse's best - s0)), which a "
    "task whose scores start below zero needs: there 90% of sparse's best would lie above it."
)


def _share(task: Task, smoothing: int, methods: Sequence[str]) -> str:
    return f"{sparse_gain_share(task.curves, smoothing, methods):.0%}"


def _seed_list(seeds: Sequence[int]) -> str:
    """``0-3, 5`` for ``[0, 1, 2, 3, 5]``."""
    spans: list[list[int]] = []
    for seed in sorted(seeds):
        if spans and seed == spans[-1][1] + 1:
            spans[-1][1] = seed
        else:
            spans.append([seed, seed])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def suite_preset(preset: ComparePreset, task: str) -> ComparePreset:
    """``preset`` on ``task``, reading that task's own reward model unless one is named.

    Example:
        >>> suite_preset(ComparePreset(), "diffuse").reward_model_name
        'diffuse'
    """
    return replace(preset, task=task)


def run_suite(
    preset: ComparePreset,
    out_dir: str | Path,
    tasks: Sequence[str] = SUITE_TASKS,
    reps: int = 2000,
    smoothing: int = 5,
    **run_kwargs: Any,
) -> str:
    """Run ``preset`` on every task into ``out_dir/<task>`` and write the suite's report.

    ``run_kwargs`` go to :func:`~llm_gym.experiments.runs.run_compare` (``jobs``,
    ``backend``, ``fidelity``, ...). Every task's settings are checked before any
    run starts, so a bad one fails before anything is trained.
    """
    if not tasks:
        raise ValueError("tasks is empty; expected at least one task name")
    presets = [suite_preset(preset, task) for task in dict.fromkeys(tasks)]
    for task_preset in presets:
        check_methods(task_preset.methods, task_preset)
        gym.make("LLMCompletion-v0", **env_options(task_preset)).close()
    out = Path(out_dir)
    for task_preset in presets:
        run_compare(task_preset, out / task_preset.task, smoothing=smoothing, **run_kwargs)
    return write_suite_report(out, [p.task for p in presets], preset.methods, reps, smoothing)


def write_suite_report(
    out_dir: str | Path,
    tasks: Sequence[str],
    methods: Sequence[str] | None = None,
    reps: int = 2000,
    smoothing: int = 5,
) -> str:
    """``summary.md`` and ``ratios.png`` of the suite in ``out_dir``, from each task's curves.csv.

    Methods missing from a task are left out of the aggregate (it covers the
    methods every task ran), and so are seeds some task has not run for all of them
    (pooled runs would otherwise weigh a task by its seeds) and tasks not run yet
    (the report names the seeds and tasks it leaves out).
    """
    out = Path(out_dir)
    not_run = [task for task in tasks if not (out / task / "curves.csv").exists()]
    if len(not_run) == len(tasks):
        raise ValueError(
            f"none of the tasks {list(tasks)} has a curves.csv under {out}; run the suite first"
        )
    tasks = [task for task in tasks if task not in not_run]
    by_sparse = [load_task(out / task / "curves.csv", task, smoothing=smoothing) for task in tasks]
    common = [
        m for m in by_sparse[0].curves.methods if all(m in t.curves.values for t in by_sparse)
    ]
    if methods is not None:
        wanted = ["sparse", *(m for m in methods if m != "sparse")]
        common = [m for m in wanted if m in common]
    # the aggregate pools runs over tasks: a task with more seeds would weigh more, so it
    # covers the seeds that every task ran for every method it covers
    ran = {t.name: {s for m in common for s in t.curves.seeds(m)} for t in by_sparse}
    complete = [
        {s for s in ran[t.name] if all(s in t.curves.values[m] for m in common)} for t in by_sparse
    ]
    seeds = sorted(set.intersection(*complete))
    if not seeds:
        found = "; ".join(f"{name}: {sorted(r)}" for name, r in ran.items())
        raise ValueError(
            f"no seed was run by every method {common} on every task ({found}); "
            "expected at least one seed in common"
        )
    left_seeds = {name: sorted(r - set(seeds)) for name, r in ran.items() if r - set(seeds)}
    by_sparse = [
        task_from_curves(
            Curves({m: {s: t.curves.values[m][s] for s in seeds} for m in common}),
            t.name,
            smoothing=smoothing,
        )
        for t in by_sparse
    ]
    # scores normalised by the best method's best: a task on which sparse barely learns
    # would otherwise put 1.0 at noise and outweigh the others; thresholds stay sparse's,
    # measured from the start (scores that start below zero have no "90% of the best")
    loaded = [
        replace(
            t,
            best=max(t.curves.best(m, smoothing) for m in common),
            threshold=t.start + 0.9 * (t.best - t.start),
            from_start=True,
        )
        for t in by_sparse
    ]
    # a task on which no method rose above the start cannot be normalised
    learned = [t for t in loaded if t.best > t.start]
    estimates = interval_estimates(learned, common, reps=reps) if learned else []
    if estimates:
        plot_suite_ratios(estimates, out / "ratios.png")
    lines = [
        "# Credit-benchmark suite",
        "",
        f"Tasks: {', '.join(tasks)}; methods: {', '.join(common)}; seeds {_seed_list(seeds)} "
        f"(runs per method and task in the table). Each task's own folder holds its curves, "
        "summary and fidelity table.",
        "",
        *(
            [
                "Left out here, so that every task weighs the same (its own summary has them): "
                + "; ".join(f"{name} seeds {_seed_list(r)}" for name, r in left_seeds.items())
                + ".",
                "",
            ]
            if left_seeds
            else []
        ),
        "| task | credit structure | score at update 0 | sparse's best (seed mean) | best "
        "method's best | sparse's share of the best gain | threshold (start + 90% of sparse's "
        "gain) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| [{t.name}]({t.name}/summary.md) | {STRUCTURES.get(t.name, '')} | {t.start:.3f} | "
            f"{s.best:.3f} | {t.best:.3f} | {_share(t, smoothing, common)} | {t.threshold:.3f} |"
            for s, t in zip(by_sparse, loaded)
        ),
        "",
        "A share under 25% means sparse barely learned that task in the budget: its "
        "threshold is then near the starting score, and the ratios to sparse on it measure "
        "noise (the task's own summary says so); the normalised scores below still compare "
        "the methods there.",
        "",
        "## Aggregate over tasks and seeds",
        "",
    ]
    if not_run:
        lines += [f"Not run yet (no curves.csv): {', '.join(not_run)}.", ""]
    left_out = [t.name for t in loaded if t not in learned]
    if left_out:
        lines += [
            f"Left out: {', '.join(left_out)} (no method's best rose above the start, so its "
            "scores cannot be normalised).",
            "",
        ]
    if estimates:
        lines += [
            STATISTICS_NOTE.format(reps=reps) + " " + SUITE_NOTE,
            "",
            intervals_table(estimates),
            "",
            "![updates-to-threshold ratio per task](ratios.png)",
            "",
        ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    return text


def plot_suite_ratios(estimates: Sequence[MethodIntervals], png_path: str | Path) -> None:
    """One panel per task: each method's updates-to-threshold ratio to sparse, with its interval.

    A ratio never reached is drawn as an open marker at the right edge; the dotted
    line is parity with sparse, the dashed one the 0.5x of a credit-limited task.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [e for e in estimates if e.method != "sparse"]
    tasks = list(estimates[0].ratios) if estimates else []
    fig, axes = plt.subplots(
        1,
        max(1, len(tasks)),
        figsize=(3.0 * max(1, len(tasks)), 0.42 * len(methods) + 1.5),
        squeeze=False,
    )
    y = np.arange(len(methods))
    for ax, task in zip(axes[0], tasks):
        for i, e in enumerate(methods):
            interval, _ = e.ratios[task]
            if interval is None:
                ax.plot([2.0], [i], "o", mfc="none", color=f"C{i}")
                continue
            low, high = max(interval.low, 1e-3), max(interval.high, 1e-3)
            ax.plot([low, high], [i, i], lw=6, alpha=0.5, color=f"C{i}")
            ax.plot([max(interval.estimate, 1e-3)], [i], "|", color="k", ms=12)
        ax.set_xscale("log")
        ax.set_xlim(0.1, 2.2)
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.axvline(0.5, color="C3", ls="--", lw=1)
        ax.set_yticks(y, [e.method for e in methods] if ax is axes[0][0] else [""] * len(y))
        ax.set_title(task)
        ax.set_xlabel("updates to 90% of sparse's best / sparse's")
        ax.grid(axis="x", alpha=0.3)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
