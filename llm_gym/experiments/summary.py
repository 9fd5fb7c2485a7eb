"""Learning-curve statistics for comparing reward schemes: the tables of ``llm-gym compare``.

Input is the long-format CSV that ``compare`` writes (one row per method, seed and
update). Every number in the summary is computed here from that CSV, so a
results file can be re-summarised without re-training.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Curves",
    "MethodSummary",
    "best_within_kl",
    "kl_matched_table",
    "load_curves",
    "markdown_table",
    "sparse_gain_share",
    "summarise",
    "updates_to_threshold",
]


@dataclass
class Curves:
    """Per-update values, ``values[method][seed]`` an array over updates."""

    values: dict[str, dict[int, np.ndarray]]

    @property
    def methods(self) -> list[str]:
        return list(self.values)

    def seeds(self, method: str) -> list[int]:
        return sorted(self.values[method])

    def seed_mean(self, method: str) -> np.ndarray:
        runs = [self.values[method][s] for s in self.seeds(method)]
        length = min(len(r) for r in runs)
        return np.mean([r[:length] for r in runs], axis=0)

    @property
    def start(self) -> float:
        """The mean value at update 0 over every run (every method starts from one policy)."""
        return float(np.mean([runs[s][0] for runs in self.values.values() for s in runs]))

    def best(self, method: str, smoothing: int) -> float:
        """The best value of ``method``'s seed-mean curve (moving average of ``smoothing``)."""
        return float(smooth(self.seed_mean(method), smoothing).max())


def load_curves(path: str | Path, column: str = "score") -> Curves:
    """Read ``method, seed, update, <column>`` rows; updates must be 0, 1, 2, ... per run."""
    runs: dict[str, dict[int, dict[int, float]]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"method", "seed", "update", column} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path} lacks the columns {sorted(missing)}; found {reader.fieldnames}"
            )
        for row in reader:
            run = runs.setdefault(row["method"], {}).setdefault(int(row["seed"]), {})
            run[int(row["update"])] = float(row[column])
    values: dict[str, dict[int, np.ndarray]] = {}
    for method, seeds in runs.items():
        values[method] = {}
        for seed, by_update in seeds.items():
            updates = sorted(by_update)
            if updates != list(range(len(updates))):
                raise ValueError(f"{method} seed {seed}: updates are not 0..{len(updates) - 1}")
            values[method][seed] = np.array([by_update[u] for u in updates])
    return Curves(values)


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    if window <= 1:
        return np.asarray(curve, dtype=np.float64)
    cumulative = np.cumsum(np.insert(np.asarray(curve, dtype=np.float64), 0, 0.0))
    ends = np.arange(1, len(curve) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def sparse_gain_share(
    curves: Curves, smoothing: int = 5, methods: Sequence[str] | None = None
) -> float:
    """Sparse's best gain over the start as a share of the best method's (1.0: sparse is best).

    Gains are of the seed-mean curves (moving average of ``smoothing``) over
    :attr:`Curves.start`, the best method among ``methods`` (default: all).

    Example:
        >>> flat, rising = np.array([0.0, 0.1, 0.0, 0.1]), np.array([0.0, 1.0, 2.0, 2.0])
        >>> round(sparse_gain_share(Curves({"sparse": {0: flat}, "oracle": {0: rising}}), 1), 3)
        0.05
    """
    top = max(curves.best(m, smoothing) for m in methods or curves.methods) - curves.start
    return (curves.best("sparse", smoothing) - curves.start) / top if top > 0 else 1.0


def updates_to_threshold(curve: np.ndarray, threshold: float) -> int | None:
    """First update whose value reaches ``threshold``, or None if it never does."""
    hits = np.flatnonzero(np.asarray(curve) >= threshold)
    return int(hits[0]) if hits.size else None


@dataclass
class MethodSummary:
    method: str
    seeds: int
    final: float
    best: float
    mean: float
    updates_to_threshold: int | None
    ratio_to_baseline: float | None
    median_updates_per_seed: float | None
    median_ratio_per_seed: float | None
    seeds_reaching: int
    paired_mean_diff: float | None
    paired_mean_diff_se: float | None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def summarise(
    curves: Curves,
    baseline: str = "sparse",
    fraction: float = 0.9,
    smoothing: int = 1,
    final_window: int = 10,
) -> tuple[float, list[MethodSummary]]:
    """Per-method statistics against ``baseline``.

    The threshold is ``fraction`` of the baseline's best seed-mean (smoothed)
    score. Updates-to-threshold is read off the seed-mean curve and, per seed,
    off each seed's own curve; a seed that never reaches it counts as the run
    length, in the per-seed updates and in its ratio to the baseline's seed. Paired differences compare each method's mean score over the run
    with the baseline's on the same seed (seeds share prompts).
    Returns ``(threshold, summaries)``.
    """
    if baseline not in curves.values:
        raise ValueError(f"baseline {baseline!r} is not among the methods {curves.methods}")
    base_curve = smooth(curves.seed_mean(baseline), smoothing)
    threshold = fraction * float(base_curve.max())
    base_steps = updates_to_threshold(base_curve, threshold)
    base_seed_means = {s: float(curves.values[baseline][s].mean()) for s in curves.seeds(baseline)}
    # unreached seeds count as their run length, here and below, so that a method whose
    # seeds mostly never reach the threshold cannot get a small median from the few that do
    base_seed_steps = {}
    for s in curves.seeds(baseline):
        run = curves.values[baseline][s]
        reached = updates_to_threshold(smooth(run, smoothing), threshold)
        base_seed_steps[s] = len(run) if reached is None else reached
    summaries = []
    for method in curves.methods:
        mean_curve = curves.seed_mean(method)
        smoothed = smooth(mean_curve, smoothing)
        steps = updates_to_threshold(smoothed, threshold)
        per_seed, ratios = [], []
        for seed in curves.seeds(method):
            run = curves.values[method][seed]
            reached = updates_to_threshold(smooth(run, smoothing), threshold)
            per_seed.append(len(run) if reached is None else reached)
            if base_seed_steps.get(seed):
                ratios.append(per_seed[-1] / base_seed_steps[seed])
        diffs = [
            float(curves.values[method][s].mean()) - base_seed_means[s]
            for s in curves.seeds(method)
            if s in base_seed_means
        ]
        paired = method != baseline and len(diffs) > 0
        summaries.append(
            MethodSummary(
                method=method,
                seeds=len(curves.seeds(method)),
                final=float(mean_curve[-final_window:].mean()),
                best=float(smoothed.max()),
                mean=float(mean_curve.mean()),
                updates_to_threshold=steps,
                ratio_to_baseline=_ratio(steps, base_steps),
                median_updates_per_seed=float(np.median(per_seed)) if per_seed else None,
                median_ratio_per_seed=float(np.median(ratios)) if ratios else None,
                seeds_reaching=sum(
                    updates_to_threshold(smooth(curves.values[method][s], smoothing), threshold)
                    is not None
                    for s in curves.seeds(method)
                ),
                paired_mean_diff=float(np.mean(diffs)) if paired else None,
                paired_mean_diff_se=(
                    float(np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
                    if paired and len(diffs) > 1
                    else None
                ),
            )
        )
    return threshold, summaries


def _fmt(value: float | int | None, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def markdown_table(summaries: Iterable[MethodSummary], baseline: str = "sparse") -> str:
    """The summary table as markdown: per method its seeds, final, best and mean score, updates
    to the threshold (seed-mean curve and per-seed median), seeds reaching it, and the paired
    difference in mean score against ``baseline``."""
    rows = [
        f"| method | seeds | final | best | mean over run | updates to threshold (ratio to {baseline}) "
        f"| per-seed median updates (median ratio) | seeds reaching | paired mean diff vs {baseline} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        paired = (
            "-"
            if s.paired_mean_diff is None
            else f"{s.paired_mean_diff:+.3f}"
            + (f" ± {s.paired_mean_diff_se:.3f}" if s.paired_mean_diff_se else "")
        )
        rows.append(
            f"| {s.method} | {s.seeds} | {s.final:.3f} | {s.best:.3f} | {s.mean:.3f} "
            f"| {_fmt(s.updates_to_threshold)} ({_fmt(s.ratio_to_baseline)}) "
            f"| {_fmt(s.median_updates_per_seed, '.1f')} ({_fmt(s.median_ratio_per_seed)}) "
            f"| {s.seeds_reaching}/{s.seeds} | {paired} |"
        )
    return "\n".join(rows)


def best_within_kl(
    scores: Curves, kls: Curves, budget: float, smoothing: int = 1
) -> dict[str, dict[int, float]]:
    """Per method and seed, the best (smoothed) score over updates whose (smoothed) KL is <= ``budget``.

    A KL-matched view of a comparison: a method that scores more only by moving
    further from the reference model gains nothing here. Seeds with no update
    within the budget are left out.
    """
    best: dict[str, dict[int, float]] = {}
    for method in scores.methods:
        best[method] = {}
        for seed in scores.seeds(method):
            score = smooth(scores.values[method][seed], smoothing)
            kl = smooth(kls.values[method][seed], smoothing)
            within = kl[: len(score)] <= budget
            if within.any():
                best[method][seed] = float(score[: len(kl)][within].max())
    return best


def kl_matched_table(
    scores: Curves,
    kls: Curves,
    budgets: Sequence[float],
    baseline: str = "sparse",
    smoothing: int = 1,
) -> str:
    """Markdown: per method and KL budget, the seed-mean of :func:`best_within_kl` and its
    paired difference against ``baseline`` on the same seeds (± standard error)."""
    by_budget = [best_within_kl(scores, kls, b, smoothing) for b in budgets]
    rows = [
        "| method | " + " | ".join(f"best score at KL <= {b:g} nats" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for method in scores.methods:
        cells = []
        for best in by_budget:
            mine, base = best[method], best.get(baseline, {})
            if not mine:
                cells.append("-")
                continue
            cell = f"{np.mean(list(mine.values())):.3f}"
            diffs = [mine[s] - base[s] for s in mine if s in base]
            if method != baseline and diffs:
                cell += f" ({np.mean(diffs):+.3f}"
                cell += (
                    f" ± {np.std(diffs, ddof=1) / np.sqrt(len(diffs)):.3f})"
                    if len(diffs) > 1
                    else ")"
                )
            if len(mine) < len(scores.seeds(method)):
                cell += f" [{len(mine)}/{len(scores.seeds(method))} seeds]"
            cells.append(cell)
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_long_csv(path: str | Path, rows: Sequence[dict[str, float | int | str]]) -> None:
    """Write rows (dicts with the same keys) as a CSV."""
    if not rows:
        raise ValueError("no rows to write")
    path = Path(path)
    partial = path.with_name(path.name + ".partial")  # an interrupted write leaves path intact
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)
