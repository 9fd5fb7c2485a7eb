"""Wall time of one small ``llm-gym compare`` sweep: sequential, ``--jobs 2`` and ``--ray`` (2 CPUs).

The sweep is 4 short runs (sparse and ABC, 2 seeds, default world). Each backend
runs it as a user would, every run on one torch thread (``--threads 1``, what
``--jobs`` and ``--ray`` give each run; more threads only oversubscribe a shared
2-core machine), a fresh ``llm-gym compare`` command into an empty folder,
so its wall time includes starting Python, worker processes or the local Ray
cluster, and writing the report. The backends take turns, ``--repeats`` times;
the figures are medians. Besides the wall time it prints the training time (the
sum of the runs' per-update seconds from ``timings.csv``, which a parallel backend
overlaps) and checks that every backend wrote the same ``curves.csv``.

    python benchmarks/ray_sweep.py [--repeats 3] [--updates 8] [--batch 8] [--new-tokens 16]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

BACKENDS = {
    "sequential": ["--jobs", "1", "--threads", "1"],
    "--jobs 2": ["--jobs", "2"],
    "--ray (2 CPUs)": ["--ray", "--jobs", "2"],
}


def sweep(flags: list[str], out: Path, args: argparse.Namespace) -> tuple[float, float, str]:
    """(wall seconds, summed per-update seconds, curves.csv text) of one fresh sweep."""
    command = [
        "llm-gym",
        "compare",
        "--rewards",
        "sparse",
        "abc",
        "--seeds",
        "2",
        "--updates",
        str(args.updates),
        "--batch",
        str(args.batch),
        "--new-tokens",
        str(args.new_tokens),
        "--no-fidelity",
        "--out",
        str(out),
        *flags,
    ]
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    wall = time.perf_counter() - start
    # every run is in once curves.csv has all rows (a report that refuses short curves
    # fails after that, the same way on every backend)
    curves = (out / "curves.csv").read_text() if (out / "curves.csv").exists() else ""
    if len(curves.splitlines()) != 1 + 4 * args.updates or "Traceback" in done.stderr:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(out / "timings.csv", newline="") as handle:
        training = sum(float(r["seconds"]) for r in csv.DictReader(handle) if r["seconds"] != "nan")
    shutil.rmtree(out)
    return wall, training, curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ray-sweep-bench-"))
    walls: dict[str, list[float]] = {name: [] for name in BACKENDS}
    training: dict[str, list[float]] = {name: [] for name in BACKENDS}
    curves: dict[str, set[str]] = {name: set() for name in BACKENDS}
    for repeat in range(args.repeats):
        for name, flags in BACKENDS.items():
            wall, train, text = sweep(flags, folder / f"{repeat}-{len(walls[name])}", args)
            walls[name].append(wall)
            training[name].append(train)
            curves[name].add(text)
            print(f"repeat {repeat + 1}: {name:<14} {wall:6.1f} s", flush=True)
    print(
        f"\n4 runs (sparse, abc x 2 seeds; {args.updates} updates of {args.batch} episodes of "
        f"{args.new_tokens} tokens), {os.cpu_count()} CPU cores; medians of {args.repeats}"
    )
    print(f"{'backend':<15}{'wall s':>8}{'training s':>12}{'wall / sequential':>19}")
    base = statistics.median(walls["sequential"])
    for name in BACKENDS:
        wall = statistics.median(walls[name])
        print(
            f"{name:<15}{wall:>8.1f}{statistics.median(training[name]):>12.1f}{wall / base:>19.2f}"
        )
    print(f"\nevery sweep wrote the same curves.csv: {len(set().union(*curves.values())) == 1}")


if __name__ == "__main__":
    main()
