"""Runs of one task under different settings, read from several results folders.

A results folder holds runs of one setting (a GAE lambda, a critic, ...), so a
comparison across settings reads several folders. Each ``LABEL=CSV:METHOD``
names a variant: the method's runs in that ``curves.csv``. On the seeds given,
the report prints per variant the mean score over the run and over its last 30
updates, the best of the seed-mean curve (moving average of 5, as the compare
summaries) and the updates its seed-mean curve (and each seed's curve) takes to
reach a threshold: the start plus 90% of the gain of the best baseline variant
(``--baselines``, by default those whose label starts with "sparse"), the
suite's threshold, which also holds for tasks whose scores start below zero.

    python examples/settings_report.py \\
        "sparse, lambda 0.95=results/suite/decisive/curves.csv:sparse" \\
        "sparse, reward-model critic=results/suite_rm_critic/decisive/curves.csv:sparse" \\
        --seeds 0 1
"""

from __future__ import annotations

import argparse

import numpy as np

from llm_gym.experiments.summary import load_curves, smooth, updates_to_threshold


def variant_runs(spec: str, seeds: list[int]) -> tuple[str, np.ndarray]:
    """``LABEL=CSV:METHOD`` -> the label and the (seeds, updates) scores of those runs."""
    label, _, source = spec.partition("=")
    path, _, method = source.rpartition(":")
    if not label or not path or not method:
        raise SystemExit(f"expected LABEL=CSV:METHOD, got {spec!r}")
    runs = load_curves(path).values.get(method, {})
    missing = [s for s in seeds if s not in runs]
    if missing:
        raise SystemExit(f"{path} holds no {method!r} runs of seeds {missing}")
    length = min(len(runs[s]) for s in seeds)
    return label, np.array([runs[s][:length] for s in seeds])


def report(variants: list[tuple[str, np.ndarray]], baselines: list[str], smoothing: int = 5) -> str:
    """The markdown table (see the module's docstring)."""
    start = float(np.mean([runs[:, 0].mean() for _, runs in variants]))
    best = max(
        smooth(runs.mean(0), smoothing).max() for label, runs in variants if label in baselines
    )
    threshold = start + 0.9 * (best - start)

    def reached(curve: np.ndarray) -> str:
        hit = updates_to_threshold(smooth(curve, smoothing), threshold)
        return "never" if hit is None else str(hit)

    lines = [
        f"start {start:+.3f}; threshold {threshold:+.3f} (start + 90% of the gain to the best "
        f"baseline's best seed-mean score, {best:+.3f}; moving average of {smoothing})",
        "",
        "| variant | mean over run | last 30 | best | updates to threshold | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for label, runs in variants:
        curve = runs.mean(0)
        lines.append(
            f"| {label} | {runs.mean():+.3f} | {runs[:, -30:].mean():+.3f} | "
            f"{smooth(curve, smoothing).max():+.3f} | {reached(curve)} | "
            f"{' '.join(reached(r) for r in runs)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", metavar="LABEL=CSV:METHOD")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--baselines", nargs="+", default=None, help="labels setting the threshold")
    parser.add_argument("--smoothing", type=int, default=5)
    args = parser.parse_args()
    variants = [variant_runs(spec, args.seeds) for spec in args.variants]
    baselines = args.baselines or [label for label, _ in variants if label.startswith("sparse")]
    unknown = sorted(set(baselines) - {label for label, _ in variants})
    if unknown or not baselines:
        raise SystemExit(f"--baselines must name variants; got {baselines}")
    print(f"seeds {' '.join(map(str, args.seeds))}\n")
    print(report(variants, baselines, args.smoothing))


if __name__ == "__main__":
    main()
