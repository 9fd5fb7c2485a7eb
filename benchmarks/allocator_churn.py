"""Does allocation churn cost time? A short comparison run with glibc's malloc thresholds as they come, and raised.

    python3 benchmarks/allocator_churn.py [--updates 8] [--repeats 3] [--rewards abc] [--quick]

Each arm runs ``llm-gym compare --rewards REWARDS --seeds 1 --updates N --no-fidelity
--threads 1`` (with ``--quick``: ``llm-gym compare --quick``, the README's first
command, about 8 minutes an arm) in a child process, model loading included, and
reads that child's user time, system time, minor page faults and peak resident
memory (``wait4``). "glibc defaults" sets ``LLM_GYM_SYSTEM_MALLOC=1``; "retained" is
what the command line does by default
(:func:`llm_gym.experiments.allocator.retain_freed_memory`: freed blocks stay in
the heap instead of going back to the kernel and being faulted in again on the
next allocation), so what it saves in system time and faults is the cost of the
churn. The arms alternate, ``--repeats`` times each; figures are medians. CPU
times are the steadier figure on a shared machine. Both arms must write the same
curves (the allocator changes no result), which the script checks. Linux only.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm_gym.experiments.allocator import MALLOPT_SETTINGS


def run_arm(command: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``command`` to completion; its wall, user and system seconds, minor faults, peak RSS."""
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-4000:]}")
    return {
        "wall": time.perf_counter() - start,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "minflt": float(usage.ru_minflt),
        "maxrss": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rewards", nargs="+", default=["abc"])
    parser.add_argument("--quick", action="store_true", help="time `llm-gym compare --quick`")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("the MALLOC_* variables are glibc's: run this on Linux")

    variables = {name for _, _, name in MALLOPT_SETTINGS} | {"LLM_GYM_SYSTEM_MALLOC"}
    base = {k: v for k, v in os.environ.items() if k not in variables}
    base.setdefault("HF_HUB_OFFLINE", "1")
    arms = {"glibc defaults": base | {"LLM_GYM_SYSTEM_MALLOC": "1"}, "retained": base}
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, env) in enumerate(arms.items()):
                out = Path(tmp) / f"arm{i}_{repeat}"
                command = [sys.executable, "-m", "llm_gym.cli", "compare", "--out", str(out)]
                command += ["--quick"] if args.quick else [
                    "--rewards", *args.rewards, "--seeds", "1",
                    "--updates", str(args.updates), "--no-fidelity", "--threads", "1",
                ]  # fmt: skip
                figures[name].append(run_arm(command, env, out.with_suffix(".log")))
        curves = [Path(tmp) / f"arm{i}_0" / "curves.csv" for i in range(len(arms))]
        same = filecmp.cmp(*curves, shallow=False)

    what = (
        "--quick"
        if args.quick
        else f"--rewards {' '.join(args.rewards)} --seeds 1 --updates {args.updates} --threads 1"
    )
    print(f"llm-gym compare {what}, median of {args.repeats} interleaved repeats")
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in figures.items()
    }
    for name, m in medians.items():
        print(
            f"{name:18s} wall {m['wall']:7.1f} s  user {m['user']:7.1f} s  sys {m['sys']:6.1f} s"
            f"  minor faults {m['minflt'] / 1e6:6.2f} M  peak RSS {m['maxrss']:6.0f} MiB"
        )
    plain, tuned = medians["glibc defaults"], medians["retained"]
    cpu_plain, cpu_tuned = plain["user"] + plain["sys"], tuned["user"] + tuned["sys"]
    print(
        f"system time on the churn: {plain['sys'] - tuned['sys']:.1f} s of {cpu_plain:.1f} s CPU;"
        f" retained / defaults: CPU {cpu_tuned / cpu_plain:.3f}x, wall {tuned['wall'] / plain['wall']:.3f}x"
    )
    print(f"same curves in both arms: {same}")
    if not same:
        raise SystemExit("the allocator changed a result")


if __name__ == "__main__":
    main()
