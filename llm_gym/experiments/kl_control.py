"""How well a comparison's KL controller held its target: a table and a plot from curves.csv.

A KL controller is a deterministic function of the KL per completion it saw, so
the coefficient every run charged is replayed exactly from the ``kl`` column of
``curves.csv`` (:func:`~llm_gym.agents.kl.coefficient_trace`) with the preset's
controller settings; nothing else needs to be logged.

Holds :func:`rollout_steps` (transitions per rollout of a preset's runs),
:func:`coefficient_curves`, :func:`kl_band_table` (per method, how much of the run
the seed-mean KL stayed within a band around the target), :func:`kl_band_sides_table`
(on which side it left the band, and whether the penalty was on), :func:`kl_noise_table`
(how much the KL each run measured moves from update to update, with
:func:`detrended_autocorrelation`), :func:`plot_kl_control`
and :func:`main` (``python -m llm_gym.experiments.kl_control CSV --out DIR``: the
table and plot for a results folder written before they were part of the report).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from llm_gym.agents.kl import coefficient_trace, make_kl_controller
from llm_gym.envs.task import TASK_PRESETS
from llm_gym.experiments.presets import PRESETS, ComparePreset
from llm_gym.experiments.summary import Curves, load_curves, smooth

__all__ = [
    "coefficient_curves",
    "detrended_autocorrelation",
    "kl_band_sides_table",
    "kl_band_table",
    "kl_noise_table",
    "main",
    "plot_kl_control",
    "rollout_steps",
]


def rollout_steps(preset: ComparePreset) -> int:
    """Transitions per rollout of the preset's runs: ``n_steps * n_envs`` (as ``make_agent``).

    Example:
        >>> rollout_steps(ComparePreset()), rollout_steps(ComparePreset(task="paper"))
        (1024, 256)
    """
    if preset.n_steps is not None:
        return preset.n_steps * preset.n_envs
    tokens = preset.env_kwargs.get("max_new_tokens", preset.max_new_tokens)
    if tokens is None:
        tokens = TASK_PRESETS[preset.task]["max_new_tokens"]
    longest = tokens if isinstance(tokens, int) else tokens[1]
    return int(longest) * preset.n_envs


def coefficient_curves(kls: Curves, preset: ComparePreset) -> Curves:
    """The KL coefficient each run charged in each update, replayed from its KL curve."""
    controller = make_kl_controller(
        preset.kl_controller,
        preset.kl_coef,
        preset.kl_target,
        preset.kl_horizon,
        preset.kl_coef_max,
        preset.kl_pid_gains,
    )
    steps = rollout_steps(preset)
    return Curves(
        {
            method: {seed: coefficient_trace(controller, kl, steps) for seed, kl in runs.items()}
            for method, runs in kls.values.items()
        }
    )


def _markdown_table(header: Sequence[str], rows: Sequence[str]) -> str:
    """A markdown table from its header cells and its already formatted rows."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows])


def kl_band_table(
    kls: Curves,
    target: float,
    band: float = 0.25,
    start: int = 30,
    smoothing: int = 5,
    coefs: Curves | None = None,
) -> str:
    """Markdown: per method, how the seed-mean KL (moving average of ``smoothing``) kept to the target.

    Columns: the share of updates from ``start`` on within ``target * (1 +- band)``,
    whether all of them were, the lowest and highest value from ``start`` on, the
    first update the curve reached ``(1 - band) * target`` (a coefficient cannot
    push KL up, so before that the band's lower side is the learner's, not the
    controller's), the share within the band from then on, and the seed-mean
    coefficient over the last 10 updates when ``coefs`` are given.

    Example:
        >>> kls = Curves({"sparse": {0: np.r_[np.linspace(0, 6, 10), np.full(30, 6.5)]}})
        >>> print(kl_band_table(kls, 6.0, start=20, smoothing=1))
        | method | seeds | within ±25% of 6 nats, updates 20-39 | all within | lowest, highest from 20 | first update >= 4.5 | within from then |
        |---|---|---|---|---|---|---|
        | sparse | 1 | 100% | yes | 6.50, 6.50 | 7 | 100% |
    """
    low, high = (1 - band) * target, (1 + band) * target
    header = [
        "method",
        "seeds",
        f"within ±{band:.0%} of {target:g} nats, updates {start}-{{end}}",
        "all within",
        f"lowest, highest from {start}",
        f"first update >= {low:g}",
        "within from then",
    ]
    if coefs is not None:
        header.append("coefficient, last 10 updates")
    rows = []
    end = 0
    for method in kls.methods:
        curve = smooth(kls.seed_mean(method), smoothing)
        end = max(end, len(curve) - 1)
        tail = curve[start:]
        inside = (tail >= low) & (tail <= high)
        reached = np.flatnonzero(curve >= low)
        first = int(reached[0]) if reached.size else None
        after = curve[max(first, start) :] if first is not None else np.zeros(0)
        after_inside = ((after >= low) & (after <= high)).mean() if after.size else float("nan")
        cells = [
            method,
            str(len(kls.seeds(method))),
            f"{inside.mean():.0%}" if tail.size else "-",
            "yes" if tail.size and inside.all() else "no",
            f"{tail.min():.2f}, {tail.max():.2f}" if tail.size else "-",
            "-" if first is None else str(first),
            "-" if not after.size else f"{after_inside:.0%}",
        ]
        if coefs is not None:
            cells.append(f"{coefs.seed_mean(method)[-10:].mean():.3f}")
        rows.append("| " + " | ".join(cells) + " |")
    header[2] = header[2].format(end=end)
    return _markdown_table(header, rows)


def kl_band_sides_table(
    kls: Curves,
    coefs: Curves,
    target: float,
    band: float = 0.25,
    start: int = 30,
    smoothing: int = 5,
) -> str:
    """Markdown: per method, on which side the seed-mean KL left the band, and whether the penalty was on.

    A penalty coefficient is at least 0, so it can pull KL down but never push it
    up: below the band a controller has done all it can once the coefficient is 0.
    Columns: the share of updates from ``start`` on whose seed-mean KL (moving
    average of ``smoothing``, as :func:`kl_band_table`) is below ``target * (1 -
    band)`` and above ``target * (1 + band)``; then, over the updates below, in the
    band and above, the share of runs whose coefficient in that rollout was 0 (the
    penalty off; ``coefs`` as :func:`coefficient_curves` replays them).

    Example:
        >>> kls = Curves({"sparse": {0: np.r_[np.full(10, 3.0), np.full(10, 6.0)]}})
        >>> coefs = Curves({"sparse": {0: np.r_[np.zeros(10), np.full(10, 0.1)]}})
        >>> print(kl_band_sides_table(kls, coefs, 6.0, start=0, smoothing=1))
        | method | seeds | below the band, updates 0-19 | above the band | runs with the penalty off: when below | in the band | when above |
        |---|---|---|---|---|---|---|
        | sparse | 1 | 50% | 0% | 100% | 0% | - |
    """
    low, high = (1 - band) * target, (1 + band) * target
    header = [
        "method",
        "seeds",
        f"below the band, updates {start}-{{end}}",
        "above the band",
        "runs with the penalty off: when below",
        "in the band",
        "when above",
    ]
    rows, end = [], 0
    for method in kls.methods:
        seeds = kls.seeds(method)
        curve = smooth(kls.seed_mean(method), smoothing)
        end = max(end, len(curve) - 1)
        tail = curve[start:]
        n = tail.size
        off = np.full((len(seeds), n), np.nan)
        for row, seed in enumerate(seeds):
            run = np.asarray(coefs.values[method][seed][start : start + n], dtype=np.float64)
            off[row, : run.size] = run == 0
        off_share = np.nanmean(off, axis=0) if n else np.zeros(0)
        sides = {
            "below": tail < low,
            "inside": (tail >= low) & (tail <= high),
            "above": tail > high,
        }
        off_cells = [
            f"{off_share[where].mean():.0%}" if where.any() else "-" for where in sides.values()
        ]
        cells = [
            method,
            str(len(seeds)),
            f"{sides['below'].mean():.0%}" if n else "-",
            f"{sides['above'].mean():.0%}" if n else "-",
            *off_cells,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    header[2] = header[2].format(end=end)
    return _markdown_table(header, rows)


def detrended_autocorrelation(curve: np.ndarray, window: int = 15) -> float:
    """Lag-1 autocorrelation of ``curve`` less its centred moving average of ``window``.

    Removing the slow drift leaves the update-to-update movement: near 0 when it is
    new noise every update (an estimate's sampling noise; slightly below 0, as
    removing the average correlates neighbours negatively), near 1 when what moved
    stays moved for several updates. NaN when fewer than three points remain.

    Example:
        >>> round(detrended_autocorrelation(np.tile([1.0, -1.0], 40)), 2)
        -1.0
    """
    curve = np.asarray(curve, dtype=np.float64)
    half = window // 2
    if curve.size - 2 * half < 3:
        return float("nan")
    trend = np.convolve(curve, np.ones(window) / window, mode="valid")
    residual = curve[half : half + trend.size] - trend
    return float(np.corrcoef(residual[:-1], residual[1:])[0, 1])


def kl_noise_table(kls: Curves, start: int = 30, window: int = 15) -> str:
    """Markdown: per method, how much the measured KL per completion moves from ``start`` on.

    Columns: the mean KL, the standard deviation of one run's KL over the updates
    (mean over seeds), that of the seed-mean curve, and the lag-1 autocorrelation of
    each run's KL once its slow drift (centred moving average of ``window`` updates)
    is removed (:func:`detrended_autocorrelation`, mean over seeds).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> kls = Curves({"sparse": {s: 6 + rng.normal(0, 1, 150) for s in range(4)}})
        >>> print(kl_noise_table(kls))
        | method | seeds | mean KL, updates 30-149 | sd of one run's KL | sd of the seed-mean KL | lag-1 autocorrelation, detrended |
        |---|---|---|---|---|---|
        | sparse | 4 | 6.01 | 1.00 | 0.50 | -0.14 |
    """
    header = [
        "method",
        "seeds",
        f"mean KL, updates {start}-{{end}}",
        "sd of one run's KL",
        "sd of the seed-mean KL",
        "lag-1 autocorrelation, detrended",
    ]
    rows, end = [], 0
    for method in kls.methods:
        runs = [kls.values[method][seed] for seed in kls.seeds(method)]
        end = max(end, max(len(run) for run in runs) - 1)
        tails = [np.asarray(run[start:], dtype=np.float64) for run in runs]
        tails = [tail[np.isfinite(tail)] for tail in tails]
        if not all(tail.size > 1 for tail in tails):
            rows.append(f"| {method} | {len(runs)} | - | - | - | - |")
            continue
        mean_tail = kls.seed_mean(method)[start:]
        autocorrelations = np.array([detrended_autocorrelation(t, window) for t in tails])
        autocorrelations = autocorrelations[np.isfinite(autocorrelations)]
        cells = [
            method,
            str(len(runs)),
            f"{np.mean(np.concatenate(tails)):.2f}",
            f"{np.mean([tail.std(ddof=1) for tail in tails]):.2f}",
            f"{np.std(mean_tail[np.isfinite(mean_tail)], ddof=1):.2f}",
            f"{autocorrelations.mean():.2f}" if autocorrelations.size else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    header[2] = header[2].format(end=end)
    return _markdown_table(header, rows)


def plot_kl_control(
    csv_path: str | Path,
    png_path: str | Path,
    preset: ComparePreset,
    smoothing: int = 5,
    methods: Sequence[str] | None = None,
) -> None:
    """Seed-mean KL per completion (with the target's ±25% band) and the replayed coefficient."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kls = load_curves(csv_path, column="kl")
    coefs = coefficient_curves(kls, preset)
    target = preset.kl_target
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for method in methods or kls.methods:
        label = f"{method} ({len(kls.seeds(method))} seeds)"
        top.plot(smooth(kls.seed_mean(method), smoothing), label=label)
        bottom.plot(coefs.seed_mean(method), label=label)
    if target is not None:
        top.axhspan(0.75 * target, 1.25 * target, color="grey", alpha=0.15, label="target ±25%")
        top.axhline(target, color="grey", lw=1)
    top.set_ylabel(f"KL per completion, nats\n(seed mean, moving average of {smoothing})")
    bottom.set_ylabel("KL coefficient (seed mean)")
    bottom.set_xlabel("PPO update")
    top.set_title(f"KL controller: {preset.kl_controller}")
    top.legend(fontsize=7)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """Write ``kl_control.md`` and ``kl_control.png`` for a ``curves.csv`` and its settings."""
    parser = argparse.ArgumentParser(
        prog="python -m llm_gym.experiments.kl_control",
        description="How a comparison's KL controller held its target, from its curves.csv.",
    )
    parser.add_argument("csv", help="a results folder's curves.csv")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--kl-controller", default="adaptive", choices=["adaptive", "pid"])
    parser.add_argument("--kl-target", type=float, default=None)
    parser.add_argument("--kl-coef-max", type=float, default=None)
    parser.add_argument("--kl-pid-gains", type=float, nargs=3, default=None, metavar="G")
    parser.add_argument("--new-tokens", type=int, default=None, help="the longest completion")
    parser.add_argument("--smoothing", type=int, default=5)
    parser.add_argument("--out", required=True, help="folder for kl_control.md and .png")
    args = parser.parse_args(argv)
    preset = replace(PRESETS[args.preset], kl_controller=args.kl_controller)
    if args.kl_target is not None:
        preset = replace(preset, kl_target=args.kl_target)
    if args.kl_coef_max is not None:
        preset = replace(preset, kl_coef_max=args.kl_coef_max)
    if args.kl_pid_gains is not None:
        preset = replace(preset, kl_pid_gains=tuple(args.kl_pid_gains))
    if args.new_tokens is not None:
        preset = replace(preset, max_new_tokens=args.new_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kls = load_curves(args.csv, column="kl")
    plot_kl_control(args.csv, out / "kl_control.png", preset, args.smoothing)
    target = preset.kl_target or 6.0
    coefs = coefficient_curves(kls, preset)
    table = kl_band_table(kls, target, smoothing=args.smoothing, coefs=coefs)
    sides = kl_band_sides_table(kls, coefs, target, smoothing=args.smoothing)
    text = (
        f"# KL control of {args.csv}\n\nController: `{preset.kl_controller}`, target "
        f"{preset.kl_target:g} nats; coefficients replayed from the KL curves.\n\n{table}\n\n"
        f"{sides}\n\n{kl_noise_table(kls)}\n\n![KL control](kl_control.png)\n"
    )
    (out / "kl_control.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
