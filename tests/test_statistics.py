"""Interval estimates: hand-worked examples, rliable's own functions on a fixed array, and the
report's tables computed from the CSV."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from llm_gym.experiments.presets import ComparePreset
from llm_gym.experiments.report import write_report
from llm_gym.experiments.statistics import (
    Task,
    interval_estimates,
    intervals_table,
    iqm,
    load_task,
    main,
    normalised_scores,
    percentile_interval,
    probability_of_improvement,
    stratified_bootstrap,
    threshold_ratio_interval,
)
from llm_gym.experiments.summary import Curves


def test_hand_worked_iqm_probability_and_bootstrap():
    # 8 values: int(8 / 4) = 2 cut from each end -> mean of 2, 3, 4, 5
    assert iqm([9.0, 1.0, 5.0, 3.0, -7.0, 4.0, 2.0, 100.0]) == 3.5
    # 5 values: int(1.25) = 1 cut from each end -> mean of 2, 3, 4
    assert iqm([1.0, 2.0, 3.0, 4.0, 50.0]) == 3.0
    # pairs (x, y): (2, 1) win, (2, 2) tie, (3, 1) win, (3, 2) win -> 3.5 / 4
    assert (
        probability_of_improvement([np.array([2.0, 3.0])], [np.array([1.0, 2.0])]).estimate == 0.875
    )
    # two tasks: 1.0 on the first (x always above), 0.0 on the second (always below) -> 0.5
    assert (
        probability_of_improvement(
            [np.array([5.0, 6.0]), np.array([0.0, 0.0])],
            [np.array([1.0, 2.0]), np.array([1.0, 1.0])],
        ).estimate
        == 0.5
    )
    # one task, runs {0, 1}: a resample's mean is 0 (p 1/4), 0.5 (1/2) or 1 (1/4), so the
    # central 95% interval runs from 0 to 1; the point estimate is the sample's, 0.5
    interval = stratified_bootstrap([np.array([0.0, 1.0])], lambda t: float(t[0].mean()), reps=4000)
    assert (interval.estimate, interval.low, interval.high) == (0.5, 0.0, 1.0)
    # stratified: a task's runs never mix with another's, so constant tasks give no spread
    interval = stratified_bootstrap(
        [np.array([1.0, 1.0, 1.0]), np.array([3.0, 3.0])], lambda t: iqm(np.concatenate(t))
    )
    assert (interval.low, interval.high) == (1.0, 3.0) or interval.low == interval.high
    samples = np.arange(1, 41, dtype=float)  # 40 values: the 2.5th/97.5th percentiles by hand
    low, high = percentile_interval(samples)
    assert low == pytest.approx(1 + 0.025 * 39) and high == pytest.approx(1 + 0.975 * 39)


def test_stratified_resamples_keep_each_tasks_run_count():
    seen = []
    stratified_bootstrap(
        [np.array([0.0, 0.0, 0.0]), np.array([1.0])], lambda t: seen.append(t) or 0.0, reps=20
    )
    assert all(len(t[0]) == 3 and t[1].tolist() == [1.0] for t in seen)


def test_agrees_with_rliables_own_functions_on_a_fixed_array():
    rliable = pytest.importorskip("rliable.library")
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, size=(10, 3))  # runs x tasks, as rliable lays them out
    y = rng.normal(0.8, 0.5, size=(10, 3))
    tasks_x, tasks_y = list(x.T), list(y.T)
    assert iqm(x.ravel()) == pytest.approx(metrics.aggregate_iqm(x), abs=1e-12)
    mean_of_means = lambda ts: float(np.mean([t.mean() for t in ts]))  # noqa: E731
    assert mean_of_means(tasks_x) == pytest.approx(metrics.aggregate_mean(x), abs=1e-12)
    ours_poi = probability_of_improvement(tasks_x, tasks_y, reps=2000)
    assert ours_poi.estimate == pytest.approx(metrics.probability_of_improvement(x, y), abs=1e-12)
    # intervals: the same estimator, different random draws: agree to Monte Carlo error
    state = np.random.RandomState(0)
    _, theirs = rliable.get_interval_estimates(
        {"x": x}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=4000, random_state=state
    )
    ours = stratified_bootstrap(tasks_x, lambda ts: iqm(np.concatenate(ts)), reps=4000)
    assert ours.low == pytest.approx(theirs["x"][0][0], abs=0.03)
    assert ours.high == pytest.approx(theirs["x"][1][0], abs=0.03)
    _, theirs = rliable.get_interval_estimates(
        {"xy": [x, y]},
        lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
        reps=500,
        random_state=state,
    )
    assert ours_poi.low == pytest.approx(theirs["xy"][0][0], abs=0.04)
    assert ours_poi.high == pytest.approx(theirs["xy"][1][0], abs=0.04)


def ramp_curves(rates: dict[str, float], seeds: int = 4, updates: int = 100) -> Curves:
    """Each method's score rises linearly at its rate to 1.0 and stays there (seeds jitter)."""
    values = {}
    for method, rate in rates.items():
        values[method] = {
            s: np.minimum(1.0, rate * (1 + 0.02 * s) * np.arange(updates)) for s in range(seeds)
        }
    return Curves(values)


def test_threshold_ratio_interval_on_curves_with_a_known_ratio():
    curves = ramp_curves({"sparse": 0.01, "fast": 0.02, "never": 0.001})
    task = load_task_from(curves)
    interval, unreached = threshold_ratio_interval(task, "fast", reps=300)
    # 90% of sparse's best is reached at half the updates: ratio 0.5, in every resample
    assert interval.estimate == pytest.approx(0.5, abs=0.02)
    assert interval.low <= 0.5 + 0.02 and interval.high >= 0.5 - 0.02 and unreached == 0
    interval, unreached = threshold_ratio_interval(task, "never", reps=50)
    assert interval is None and unreached == 1.0
    same, _ = threshold_ratio_interval(task, "sparse", reps=50)
    assert (same.estimate, same.low, same.high) == (1.0, 1.0, 1.0)


def load_task_from(curves: Curves, smoothing: int = 1) -> Task:
    best = max(curves.seed_mean("sparse"))
    start = float(np.mean([r[0] for runs in curves.values.values() for r in runs.values()]))
    return Task("t", curves, start, best, 0.9 * best, smoothing)


def test_normalised_scores_put_zero_at_the_start_and_one_at_sparses_best():
    curves = Curves({"sparse": {0: np.array([0.5, 1.5, 2.5]), 1: np.array([0.5, 2.5, 2.5])}})
    task = Task("t", curves, start=0.5, best=2.5, threshold=2.25, smoothing=1)
    np.testing.assert_allclose(normalised_scores(task, "sparse"), [0.5, 2 / 3])
    np.testing.assert_allclose(normalised_scores(task, "sparse", final=1), [1.0, 1.0])
    flat = Task("t", curves, start=2.5, best=2.5, threshold=2.25, smoothing=1)
    with pytest.raises(ValueError, match="is not above the start"):
        normalised_scores(flat, "sparse")


def write_csv(path, curves: Curves, kl: float = 6.0) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed", "update", "score", "kl", "length"])
        for method, runs in curves.values.items():
            for seed, run in runs.items():
                for update, score in enumerate(run):
                    writer.writerow([method, seed, update, score, kl + 0.01 * update, 8])


def test_the_reports_tables_are_computed_from_the_csv(tmp_path):
    curves = ramp_curves({"sparse": 0.01, "abc": 0.02}, updates=60)
    write_csv(tmp_path / "in.csv", curves)
    out = tmp_path / "report"
    preset = ComparePreset(methods=("sparse", "abc"), kl_controller="pid")
    summary = write_report(out, preset, [tmp_path / "in.csv"], smoothing=5, fidelity=False)
    estimates = interval_estimates([load_task(out / "curves.csv", "default", smoothing=5)])
    assert intervals_table(estimates) in summary
    for name in ("intervals.png", "kl_control.png"):
        assert (out / name).stat().st_size > 0
    # the KL-control table: the seed-mean KL 6.0 + 0.01 * update stays inside 4.5-7.5
    row = re.search(r"\| abc \| 4 \| (\d+)% \| (\w+) \|", summary.split("## KL control")[1])
    assert row.groups() == ("100", "yes")
    assert "Controller: `pid`" in summary


def test_aggregate_over_tasks_from_the_command_line(tmp_path):
    for name, rate in (("a", 0.02), ("b", 0.03)):
        write_csv(tmp_path / f"{name}.csv", ramp_curves({"sparse": 0.01, "abc": rate}, updates=100))
    tasks = [f"{name}={tmp_path / name}.csv" for name in ("a", "b")]
    main([*tasks, "--reps", "200", "--smoothing", "1", "--out", str(tmp_path / "agg")])
    text = (tmp_path / "agg" / "aggregate.md").read_text()
    assert (
        "ratio, geometric mean over tasks" in text and (tmp_path / "agg" / "intervals.png").exists()
    )
    # seed-mean rates x 1.03: sparse reaches 0.9 at update 88, abc at 44 (a) and 30 (b)
    row = next(line for line in text.splitlines() if line.startswith("| abc |"))
    assert "| 0.50 [" in row and "| 0.34 [" in row
    assert f"| {np.sqrt(44 / 88 * 30 / 88):.2f} [" in row
