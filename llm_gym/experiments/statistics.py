"""Aggregate statistics with bootstrap intervals, as the RL community reports them.

Agarwal, Schwarzer, Castro, Courville and Bellemare, "Deep Reinforcement Learning
at the Edge of the Statistical Precipice" (NeurIPS 2021; the ``rliable``
package): with few runs, report interval estimates of robust aggregates, not
point estimates. Here a *task* is a preset (a results folder) and a *run* is one
(method, seed):

- normalised score of a run: ``(x - s0) / (s_best - s0)``, x the run's mean score
  over its updates (or over its last 10), s0 the task's score at update 0 (every
  method starts from the same policy) and s_best the baseline's best seed-mean
  score (so 1.0 is the sparse method's best, held the whole run);
- IQM (the mean of the middle 50% of runs, pooled over tasks) and the mean (of
  the per-task means, as rliable's ``aggregate_mean``), with 95% percentile intervals from the *stratified* bootstrap (runs resampled with
  replacement within each task);
- the probability of improvement P(X > Y) over the baseline (the Mann-Whitney
  statistic per task, averaged over tasks), with a stratified bootstrap interval
  (the two methods' runs resampled independently, as rliable does);
- the updates-to-threshold ratio of the seed-mean curves (the summary's headline
  number), with an interval from resampling seeds jointly for the method and the
  baseline (runs of one seed are paired); a resampled curve that never reaches the
  threshold counts as the run length, and the share of such resamples is reported.

Everything is numpy (no dependency); ``tests/test_statistics.py`` checks the
numbers against a hand-worked example and against ``rliable``'s own functions.

Holds :func:`iqm`, :func:`percentile_interval`, :func:`stratified_bootstrap`,
:func:`probability_of_improvement`, :class:`Interval`, :class:`Task` and
:func:`load_task`, :func:`task_from_curves`, :func:`normalised_scores`,
:func:`threshold_ratio_interval`, :class:`MethodIntervals`, :func:`interval_estimates`, :func:`intervals_table`,
:func:`plot_intervals` and :func:`main` (``python -m llm_gym.experiments.statistics``:
the aggregate over several results folders).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm_gym.experiments.summary import Curves, load_curves, smooth, updates_to_threshold

__all__ = [
    "STATISTICS_NOTE",
    "Interval",
    "MethodIntervals",
    "Task",
    "interval_estimates",
    "intervals_table",
    "iqm",
    "load_task",
    "task_from_curves",
    "main",
    "normalised_scores",
    "percentile_interval",
    "plot_intervals",
    "probability_of_improvement",
    "stratified_bootstrap",
    "threshold_ratio_interval",
]


#: how the interval estimates are defined (the note above their tables)
STATISTICS_NOTE = (
    "Normalised score of a run: (x - s0) / (s_best - s0), x its mean score over the run (or "
    "over its last 10 updates: final), s0 the task's score at update 0, s_best sparse's best "
    "seed-mean score (moving average of 5), so 1.0 is sparse's best held for the whole run. "
    "IQM: the mean of the middle 50% of runs pooled over tasks; intervals: 95% percentile "
    "intervals of the stratified bootstrap ({reps} replicates; runs resampled within each task). "
    "P(improvement): the chance a run of the method beats a run of sparse on a random task "
    "(Mann-Whitney, ties half; runs of the two resampled independently). Ratios: updates to "
    "90% of sparse's best on the seed-mean curves, seeds resampled jointly for the method and "
    "sparse; a resample that never reaches the threshold counts as the run length (its share "
    "in brackets: there the ratio is a lower bound)."
)


def iqm(values: np.ndarray | Sequence[float]) -> float:
    """Interquartile mean: the mean after cutting ``int(n / 4)`` values from each end.

    As ``scipy.stats.trim_mean(values, 0.25)``, which rliable's IQM calls.

    Example:
        >>> iqm([1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 5.0, 6.0])  # drops -50, 1 and 6, 100
        3.5
    """
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if x.size == 0:
        raise ValueError("iqm of no values; expected at least one")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap ``samples``.

    Example:
        >>> [round(v, 6) for v in percentile_interval(np.arange(101.0), 0.9)]
        [5.0, 95.0]
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def stratified_bootstrap(
    tasks: Sequence[np.ndarray],
    statistic: Callable[[list[np.ndarray]], float],
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """``statistic`` of per-task run scores, with a stratified bootstrap percentile interval.

    Each replicate resamples every task's runs with replacement, the number of
    runs per task kept (rliable's ``StratifiedBootstrap``).

    Args:
        tasks: per task, the runs' scores (tasks may have different numbers of runs).
        statistic: ``list of per-task arrays -> float``, e.g. the IQM of their pool.
        reps: bootstrap replicates.
        seed: of the resampling generator (the interval is reproducible).
        confidence: the interval's coverage.

    Example:
        >>> pooled_mean = lambda t: float(np.concatenate(t).mean())
        >>> print(stratified_bootstrap([np.array([1.0, 1.0]), np.array([3.0, 3.0])], pooled_mean))
        2.000 [2.000, 2.000]
    """
    tasks = [np.asarray(t, dtype=np.float64).reshape(-1) for t in tasks]
    if not tasks or any(t.size == 0 for t in tasks):
        raise ValueError("every task needs at least one run")
    rng = np.random.default_rng(seed)
    samples = np.empty(reps)
    for r in range(reps):
        samples[r] = statistic([t[rng.integers(t.size, size=t.size)] for t in tasks])
    return Interval(statistic(tasks), *percentile_interval(samples, confidence))


def _mann_whitney(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 over all pairs of a run of x and a run of y."""
    diff = x[:, None] - y[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def probability_of_improvement(
    x_tasks: Sequence[np.ndarray],
    y_tasks: Sequence[np.ndarray],
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """P(X > Y): the chance a run of X beats a run of Y on a random task, with its interval.

    Per task the Mann-Whitney statistic (ties count half), averaged over tasks
    (rliable's ``probability_of_improvement``); the interval resamples the runs
    of X and of Y independently within each task.

    Example:
        >>> print(probability_of_improvement([np.array([2.0, 3.0])], [np.array([1.0, 2.0])]))
        0.875 [0.500, 1.000]
    """
    xs = [np.asarray(t, dtype=np.float64).reshape(-1) for t in x_tasks]
    ys = [np.asarray(t, dtype=np.float64).reshape(-1) for t in y_tasks]
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"got {len(xs)} tasks for X and {len(ys)} for Y; expected the same >= 1")

    def statistic(x: list[np.ndarray], y: list[np.ndarray]) -> float:
        return float(np.mean([_mann_whitney(a, b) for a, b in zip(x, y)]))

    rng = np.random.default_rng(seed)
    samples = np.empty(reps)
    for r in range(reps):
        samples[r] = statistic(
            [a[rng.integers(a.size, size=a.size)] for a in xs],
            [b[rng.integers(b.size, size=b.size)] for b in ys],
        )
    return Interval(statistic(xs, ys), *percentile_interval(samples, confidence))


@dataclass
class Task:
    """One results folder's curves: the scores, and where normalisation puts 0 and 1.

    Args:
        name: the task's label (a preset, e.g. ``"default"``).
        curves: ``values[method][seed]``, one score per update.
        start: s0, the mean score at update 0 over every run.
        best: the baseline's best seed-mean score (moving average of ``smoothing``).
        threshold: ``fraction * best``, the summary's threshold.
        smoothing: the moving-average window the threshold and updates use.
        from_start: the ratios' threshold is ``start + fraction * (baseline's best -
            start)`` instead of ``fraction * baseline's best`` (for scores that start
            below zero; the credit-benchmark suite's).
    """

    name: str
    curves: Curves
    start: float
    best: float
    threshold: float
    smoothing: int
    from_start: bool = False


def load_task(
    path: str | Path,
    name: str | None = None,
    baseline: str = "sparse",
    fraction: float = 0.9,
    smoothing: int = 5,
) -> Task:
    """A :class:`Task` from a ``curves.csv`` (the summary's threshold and smoothing)."""
    curves = load_curves(path)
    if baseline not in curves.values:
        raise ValueError(f"{path} has no {baseline!r} runs; found {curves.methods}")
    return task_from_curves(curves, name or Path(path).parent.name, baseline, fraction, smoothing)


def task_from_curves(
    curves: Curves,
    name: str,
    baseline: str = "sparse",
    fraction: float = 0.9,
    smoothing: int = 5,
) -> Task:
    """A :class:`Task` from curves in memory, as :func:`load_task` makes it from a file.

    Example:
        >>> curves = Curves({"sparse": {0: np.array([0.0, 1.0, 2.0])}})
        >>> task = task_from_curves(curves, "t", smoothing=1)
        >>> task.start, task.best, task.threshold
        (0.0, 2.0, 1.8)
    """
    best = curves.best(baseline, smoothing)
    return Task(name, curves, curves.start, best, fraction * best, smoothing)


def normalised_scores(task: Task, method: str, final: int | None = None) -> np.ndarray:
    """Per seed, ``(x - s0) / (s_best - s0)`` with x the mean score over the run (or the last ``final``).

    Example:
        >>> curves = Curves({"sparse": {0: np.array([0.0, 1.0, 2.0]), 1: np.array([0.0, 2.0, 2.0])}})
        >>> task = Task("t", curves, start=0.0, best=2.0, threshold=1.8, smoothing=1)
        >>> normalised_scores(task, "sparse").tolist(), normalised_scores(task, "sparse", final=1).tolist()
        ([0.5, 0.6666666666666666], [1.0, 1.0])
    """
    span = task.best - task.start
    if not span > 0:
        raise ValueError(
            f"task {task.name}: the baseline's best ({task.best:.4g}) is not above the start "
            f"({task.start:.4g}); expected a baseline that learns"
        )
    runs = task.curves.values[method]
    x = [runs[s][-final:].mean() if final else runs[s].mean() for s in sorted(runs)]
    return (np.asarray(x, dtype=np.float64) - task.start) / span


def _updates(curve: np.ndarray, threshold: float, smoothing: int) -> tuple[int, bool]:
    reached = updates_to_threshold(smooth(curve, smoothing), threshold)
    return (len(curve), False) if reached is None else (reached, True)


def _paired_runs(task: Task, method: str, baseline: str) -> tuple[np.ndarray, np.ndarray]:
    seeds = sorted(set(task.curves.values[method]) & set(task.curves.values[baseline]))
    if not seeds:
        raise ValueError(f"task {task.name}: {method} shares no seed with {baseline}")
    length = min(min(len(task.curves.values[m][s]) for s in seeds) for m in (method, baseline))
    stack = [
        np.array([task.curves.values[m][s][:length] for s in seeds]) for m in (method, baseline)
    ]
    return stack[0], stack[1]


def threshold_ratio_interval(
    task: Task,
    method: str,
    baseline: str = "sparse",
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    fraction: float = 0.9,
) -> tuple[Interval | None, float]:
    """Updates-to-threshold of ``method``'s seed-mean curve over the baseline's, with an interval.

    Each replicate draws seeds with replacement, the same draws for both methods
    (their runs of a seed are paired), and recomputes both seed-mean curves, the
    threshold (``fraction`` of the resampled baseline's best, or of its gain over the
    start when ``task.from_start``) and both updates;
    a curve that never reaches it counts as the run length. Returns the interval
    (``None`` when the full-sample curves do not both reach the threshold) and the
    share of replicates in which the method's curve never reached it (in those the
    ratio is a lower bound).
    """
    mine, base = _paired_runs(task, method, baseline)
    estimate, reached = _resampled_ratio(task, mine, base, np.arange(len(mine)), fraction)
    rng = np.random.default_rng(seed)
    samples, unreached = np.empty(reps), 0
    for r in range(reps):
        index = rng.integers(len(mine), size=len(mine))
        samples[r], hit = _resampled_ratio(task, mine, base, index, fraction)
        unreached += not hit
    if not reached:
        return None, unreached / reps
    return Interval(estimate, *percentile_interval(samples, confidence)), unreached / reps


@dataclass
class MethodIntervals:
    """One method's interval estimates over a set of tasks."""

    method: str
    runs: int
    iqm: Interval
    mean: Interval
    final_iqm: Interval
    improvement: Interval | None
    #: per task name: (ratio interval or None, share of resamples never reaching)
    ratios: dict[str, tuple[Interval | None, float]]
    #: geometric mean of the per-task ratios (tasks where both curves reach), or None
    ratio_geomean: Interval | None


def _resampled_ratio(
    task: Task, mine: np.ndarray, base: np.ndarray, index: np.ndarray, fraction: float = 0.9
) -> tuple[float, bool]:
    """The ratio of the seed-mean curves of the seeds ``index``, and whether ``mine`` reached."""
    base_curve = base[index].mean(0)
    base_best = float(smooth(base_curve, task.smoothing).max())
    if task.from_start:
        threshold = task.start + fraction * (base_best - task.start)
    else:
        threshold = fraction * base_best
    steps, reached = _updates(mine[index].mean(0), threshold, task.smoothing)
    base_steps, _ = _updates(base_curve, threshold, task.smoothing)
    return steps / max(base_steps, 1), reached


def _geomean_ratio(
    tasks: Sequence[Task], method: str, baseline: str, reps: int, seed: int, confidence: float
) -> Interval | None:
    """The geometric mean over tasks of the ratio, seeds resampled within each task."""
    pairs = [_paired_runs(t, method, baseline) for t in tasks]
    full = [
        _resampled_ratio(t, mine, base, np.arange(len(mine)))
        for t, (mine, base) in zip(tasks, pairs)
    ]
    if not all(reached for _, reached in full):
        return None
    rng = np.random.default_rng(seed)
    samples = np.empty(reps)
    for r in range(reps):
        ratios = [
            _resampled_ratio(t, mine, base, rng.integers(len(mine), size=len(mine)))[0]
            for t, (mine, base) in zip(tasks, pairs)
        ]
        samples[r] = np.exp(np.mean(np.log(ratios)))
    estimate = float(np.exp(np.mean(np.log([ratio for ratio, _ in full]))))
    return Interval(estimate, *percentile_interval(samples, confidence))


def interval_estimates(
    tasks: Sequence[Task],
    methods: Sequence[str] | None = None,
    baseline: str = "sparse",
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    final: int = 10,
) -> list[MethodIntervals]:
    """:class:`MethodIntervals` of each method run on every task (the baseline's included).

    The normalised score is the mean over the run (IQM and mean) and over the
    last ``final`` updates (IQM); a method missing from a task is left out.
    """
    if methods is None:
        methods = [m for m in tasks[0].curves.methods if all(m in t.curves.values for t in tasks)]
    out = []
    for method in methods:
        scores = [normalised_scores(t, method) for t in tasks]
        finals = [normalised_scores(t, method, final) for t in tasks]
        pooled_iqm = lambda ts: iqm(np.concatenate(ts))  # noqa: E731
        task_mean = lambda ts: float(np.mean([t.mean() for t in ts]))  # noqa: E731
        improvement = None
        if method != baseline:
            improvement = probability_of_improvement(
                scores, [normalised_scores(t, baseline) for t in tasks], reps, seed, confidence
            )
        ratios = {
            t.name: threshold_ratio_interval(t, method, baseline, reps, seed, confidence)
            for t in tasks
        }
        out.append(
            MethodIntervals(
                method=method,
                runs=sum(len(s) for s in scores),
                iqm=stratified_bootstrap(scores, pooled_iqm, reps, seed, confidence),
                mean=stratified_bootstrap(scores, task_mean, reps, seed, confidence),
                final_iqm=stratified_bootstrap(finals, pooled_iqm, reps, seed, confidence),
                improvement=improvement,
                ratios=ratios,
                ratio_geomean=(
                    _geomean_ratio(tasks, method, baseline, reps, seed, confidence)
                    if len(tasks) > 1
                    else None
                ),
            )
        )
    return out


def _ratio_cell(ratio: tuple[Interval | None, float]) -> str:
    interval, unreached = ratio
    if interval is None:
        return "- (not reached)"
    cell = f"{interval.estimate:.2f} [{interval.low:.2f}, {interval.high:.2f}]"
    if not unreached:
        return cell
    return cell + (" (<1% unreached)" if unreached < 0.005 else f" ({unreached:.0%} unreached)")


def intervals_table(estimates: Sequence[MethodIntervals], baseline: str = "sparse") -> str:
    """Markdown: per method, the interval estimates (one ratio column per task).

    Example:
        >>> curves = Curves({m: {s: np.linspace(0, 1 + s, 20) * k for s in range(3)}
        ...                  for m, k in (("sparse", 1.0), ("dense", 2.0))})
        >>> task = Task("t", curves, start=0.0, best=2.0, threshold=1.8, smoothing=1)
        >>> print(intervals_table(interval_estimates([task], reps=200)).splitlines()[-1])
        | dense | 3 | 1.000 [0.500, 1.500] | 1.000 [0.500, 1.500] | 1.526 [0.763, 2.289] | 0.833 [0.442, 1.000] | 0.50 [0.50, 0.50] |
    """
    tasks = list(estimates[0].ratios) if estimates else []
    aggregate = any(e.ratio_geomean is not None for e in estimates) or len(tasks) > 1
    header = [
        "method",
        "runs",
        "IQM, normalised mean score [95% CI]",
        "mean [95% CI]",
        "IQM, normalised final score [95% CI]",
        f"P(improvement over {baseline}) [95% CI]",
        *(f"updates-to-threshold ratio to {baseline}, {t} [95% CI]" for t in tasks),
    ]
    if aggregate:
        header.append("ratio, geometric mean over tasks [95% CI]")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in estimates:
        cells = [
            e.method,
            str(e.runs),
            str(e.iqm),
            str(e.mean),
            str(e.final_iqm),
            "-" if e.improvement is None else str(e.improvement),
            *(_ratio_cell(e.ratios[t]) for t in tasks),
        ]
        if aggregate:
            g = e.ratio_geomean
            cells.append("-" if g is None else f"{g.estimate:.2f} [{g.low:.2f}, {g.high:.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_intervals(
    estimates: Sequence[MethodIntervals], png_path: str | Path, title: str = ""
) -> None:
    """Interval estimates per method, one panel each: IQM, mean, final IQM, P(improvement), ratio.

    The ratio panel shows the task's updates-to-threshold ratio (the geometric mean
    over tasks when there are several); an unreached ratio is left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ratio(e: MethodIntervals) -> Interval | None:
        if e.ratio_geomean is not None or len(e.ratios) != 1:
            return e.ratio_geomean
        return next(iter(e.ratios.values()))[0]

    ratio_label = "updates-to-threshold ratio" + (
        " (geometric mean)" if estimates and len(estimates[0].ratios) > 1 else ""
    )
    panels: list[tuple[str, Callable[[MethodIntervals], Interval | None]]] = [
        ("IQM (normalised mean score)", lambda e: e.iqm),
        ("mean (normalised mean score)", lambda e: e.mean),
        ("IQM (normalised final score)", lambda e: e.final_iqm),
        ("P(improvement over sparse)", lambda e: e.improvement),
        (ratio_label, ratio),
    ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 0.45 * len(estimates) + 1.4)
    )
    y = np.arange(len(estimates))
    for ax, (label, get) in zip(axes, panels):
        for i, e in enumerate(estimates):
            interval = get(e)
            if interval is None:
                continue
            ax.plot([interval.low, interval.high], [i, i], lw=6, alpha=0.5, color=f"C{i}")
            ax.plot([interval.estimate], [i], "|", color="k", ms=12)
        ax.axvline(0.5 if "P(" in label else 1.0, color="grey", ls=":", lw=1)
        if label == ratio_label:
            ax.axvline(0.47, color="C3", ls="--", lw=1)  # the paper's ABC on IMDb
        ax.set_yticks(y, [e.method for e in estimates] if ax is axes[0] else [""] * len(y))
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        ax.invert_yaxis()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llm_gym.experiments.statistics NAME=CSV ... --out DIR``: the aggregate over tasks."""
    parser = argparse.ArgumentParser(
        prog="python -m llm_gym.experiments.statistics",
        description="Interval estimates aggregated over several results folders (tasks).",
    )
    parser.add_argument(
        "tasks", nargs="+", metavar="NAME=CSV", help="a task name and its curves.csv"
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, help="methods (default: those in every task)"
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    parser.add_argument("--smoothing", type=int, default=5)
    parser.add_argument("--out", required=True, help="folder for aggregate.md and intervals.png")
    args = parser.parse_args(argv)
    tasks: list[Task] = []
    for spec in args.tasks:
        name, sep, path = spec.partition("=")
        if not sep:
            parser.error(f"expected NAME=CSV, got {spec!r}")
        tasks.append(load_task(path, name, smoothing=args.smoothing))
    estimates = interval_estimates(tasks, args.methods, reps=args.reps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ", ".join(t.name for t in tasks)
    plot_intervals(
        estimates, out / "intervals.png", f"aggregate over {names}" if len(tasks) > 1 else names
    )
    text = "\n".join(
        [
            "# Interval estimates over tasks",
            "",
            "Tasks: "
            + ", ".join(
                f"{t.name} ({spec.partition('=')[2]})" for t, spec in zip(tasks, args.tasks)
            ),
            "",
            STATISTICS_NOTE.format(reps=args.reps),
            "",
            intervals_table(estimates),
            "",
            "![intervals](intervals.png)",
            "",
        ]
    )
    (out / "aggregate.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
