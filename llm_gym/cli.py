"""The ``llm-gym`` command: ``compare``, ``demo``, ``build-assets``."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from llm_gym.assets.build.config import BUILDABLE_TASKS
from llm_gym.envs.task import TASK_PRESETS, task_policy_path
from llm_gym.experiments.methods import SUITE_METHODS, SUITE_TASKS, registry

if TYPE_CHECKING:
    from llm_gym.experiments.backends import Backend

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> None:
    """Sample completions of the task's embedded LM on LLMCompletion-v0 and print their scores."""
    import numpy as np

    from llm_gym import assets
    from llm_gym.agents import sample_completions
    from llm_gym.rewards.loading import load_tokenizer

    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    infos: list[dict[str, Any]] = []
    started = time.perf_counter()
    for first in range(0, args.episodes, args.envs):
        n = min(args.envs, args.episodes - first)
        infos += sample_completions(
            task_policy_path(args.task), n, seed=args.seed + first, task=args.task
        )
    elapsed = time.perf_counter() - started
    for info in infos[: args.show]:
        print(f"{info['score']:+6.2f}  {tokenizer.decode(info['prompt_ids'])} | {info['text']}")
    scores = [info["score"] for info in infos]
    tokens = sum(len(info["completion_ids"]) for info in infos)
    print(
        f"\n{len(scores)} episodes: mean score {np.mean(scores):+.3f} (std {np.std(scores):.3f}, "
        f"min {np.min(scores):+.2f}, max {np.max(scores):+.2f}); {tokens / elapsed:.0f} tokens/s"
    )


def _parse_range(text: str) -> int | tuple[int, int]:
    """``"32"`` -> 32, ``"40-60"`` -> (40, 60)."""
    low, _, high = text.partition("-")
    try:
        return (int(low), int(high)) if high else int(low)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected a token count such as 32 or a range such as 40-60, got {text!r}"
        ) from err


def _positive_int(text: str) -> int:
    """An int >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def _method_lambda(text: str) -> tuple[str, float]:
    """A ``METHOD=LAMBDA`` pair such as ``sparse=1.0`` (argparse type)."""
    method, sep, value = text.partition("=")
    try:
        if not sep or not method:
            raise ValueError
        return method, float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected METHOD=LAMBDA such as sparse=1.0, got {text!r}"
        ) from err


def _non_negative_int(text: str) -> int:
    """An int >= 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    """A number >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _ray_options(args: argparse.Namespace) -> tuple[Backend | None, dict[str, Any] | bool]:
    """The Ray backend (or None) and the reward-model placement that ``--ray*`` ask for."""
    ray_flags = [
        flag
        for flag, value in (
            ("--ray-cpus-per-run", args.ray_cpus_per_run),
            ("--ray-gpus-per-run", args.ray_gpus_per_run),
            ("--ray-retries", args.ray_retries),
        )
        if value is not None
    ]
    rm_flags = [
        flag
        for flag, value in (
            ("--ray-rm-gpus", args.ray_rm_gpus),
            ("--ray-rm-cpus", args.ray_rm_cpus),
            ("--ray-rm-actors", args.ray_rm_actors),
        )
        if value is not None
    ]
    if ray_flags and args.ray is None:
        raise ValueError(f"{ray_flags[0]} needs --ray (the runs as Ray tasks)")
    if rm_flags and not args.reward_model_on_ray:
        raise ValueError(f"{rm_flags[0]} needs --reward-model-on-ray")
    if args.ray is None and not args.reward_model_on_ray:
        return None, False
    from llm_gym.rewards.ray import require_ray

    try:
        require_ray()
    except ImportError as err:
        raise ValueError(f"--ray and --reward-model-on-ray need Ray: {err}") from err
    backend: Backend | None = None
    if args.ray is not None:
        from llm_gym.experiments.backends import RayBackend

        if args.ray_cpus_per_run is not None and args.ray_cpus_per_run <= 0:
            raise ValueError(f"--ray-cpus-per-run must be > 0, got {args.ray_cpus_per_run}")
        jobs = args.jobs
        if jobs is None and args.quick:
            jobs = min(2, os.cpu_count() or 1)
        backend = RayBackend(
            address=None if args.ray == "local" else args.ray,
            jobs=jobs,
            cpus_per_run=1.0 if args.ray_cpus_per_run is None else args.ray_cpus_per_run,
            gpus_per_run=args.ray_gpus_per_run or 0.0,
            retries=2 if args.ray_retries is None else args.ray_retries,
            threads=args.threads,
        )
    placement: dict[str, Any] | bool = False
    if args.reward_model_on_ray:
        placement = {
            key: value
            for key, value in (
                ("num_gpus", args.ray_rm_gpus),
                ("num_cpus", args.ray_rm_cpus),
                ("num_actors", args.ray_rm_actors),
            )
            if value is not None
        }
    return backend, placement


def _compare(args: argparse.Namespace) -> None:
    """Train TokenPPO per reward scheme and seed; write curves, plot and summary."""
    from dataclasses import replace

    from llm_gym.experiments.allocator import retain_freed_memory
    from llm_gym.experiments.compare import PRESETS, run_compare, write_report

    retain_freed_memory()  # this process is ours: keep freed blocks (no result changes)
    preset = PRESETS["quick" if args.quick else args.preset]
    if args.quick and args.preset != "default":
        preset = replace(preset, task=PRESETS[args.preset].task)
    overrides = {
        "methods": tuple(args.rewards) if args.rewards else None,
        "seeds": args.seeds,
        "updates": args.updates,
        "beta": args.beta,
        "learning_rate": args.lr,
        "gae_lambda": args.gae_lambda,
        "gae_lambda_by_method": _by_method(args.gae_lambda_by_method),
        "kl_target": args.kl_target,
        "kl_horizon": args.kl_horizon,
        "kl_coef_max": args.kl_coef_max,
        "kl_step_fraction": args.kl_step_fraction,
        "reward_model": args.reward_model,
        "abc_layers": tuple(args.abc_layers) if args.abc_layers else None,
        "max_new_tokens": args.new_tokens,
        "n_envs": args.batch,
        "policy": args.policy,
        "tokenizer": args.tokenizer,
        "prompts": args.prompts,
        "agent": args.agent,
        "group_size": args.group_size,
        "kl_controller": args.kl_controller,
        "kl_estimator": args.kl_estimator,
        "kl_pid_gains": tuple(args.kl_pid_gains) if args.kl_pid_gains else None,
        "critic": args.critic,
        "task": args.task,
    }
    if args.tasks and not args.suite:
        raise ValueError("--tasks needs --suite (one task: --task)")
    if args.suite_report and not args.suite:
        raise ValueError("--suite-report needs --suite")
    if args.suite and args.task:
        raise ValueError("--suite runs the tasks of --tasks; drop --task")
    if args.suite and args.rewards is None:
        overrides["methods"] = SUITE_METHODS
    if args.rewards is None and args.agent not in (None, "ppo"):
        # the preset's methods that the group agent can train with
        overrides["methods"] = tuple(
            m
            for m in overrides["methods"] or preset.methods
            if registry.lookup(m).runs_with(args.agent)
        )
    preset = replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.suite:
        _suite(args, preset)
        return
    if args.summarise:
        print(
            write_report(
                args.out, preset, args.summarise, args.smoothing, fidelity=not args.no_fidelity
            )
        )
        print(f"wrote {args.out}/curves.csv, curves.png and summary.md")
        return
    from llm_gym.experiments.backends import RunsFailed

    try:
        summary = run_compare(preset, args.out, **_run_options(args))
    except RunsFailed as err:  # a run's failure, not a bad setting: one line, exit status 1
        raise SystemExit(f"llm-gym compare: error: {err}") from err
    print(summary)
    print(f"wrote {args.out}/curves.csv, curves.png, summary.md and tb/")


def _by_method(pairs: list[tuple[str, float]] | None) -> dict[str, float] | None:
    """``--gae-lambda-by-method``'s pairs as a dict; a method named twice is refused."""
    if pairs is None:
        return None
    names = [method for method, _ in pairs]
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise ValueError(f"--gae-lambda-by-method names {twice} more than once; give one each")
    return dict(pairs)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of run_compare (and of each task of run_suite) the command line sets."""
    backend, rm_on_ray = _ray_options(args)
    jobs = args.jobs
    if jobs is None or backend is not None:  # on Ray, --jobs is the backend's
        jobs = min(2, os.cpu_count() or 1) if args.quick and backend is None else 1
    return {
        "smoothing": args.smoothing,
        "fidelity": not args.no_fidelity,
        "first_seed": args.first_seed,
        "jobs": jobs,
        "backend": backend,
        "reward_model_on_ray": rm_on_ray,
    }


def _suite(args: argparse.Namespace, preset: Any) -> None:
    from llm_gym.experiments.backends import RunsFailed
    from llm_gym.experiments.suite import run_suite, write_suite_report

    tasks = tuple(args.tasks or SUITE_TASKS)
    if args.summarise:
        raise ValueError("--summarise reads CSV files; with --suite, pass --suite-report")
    if args.suite_report:
        print(write_suite_report(args.out, tasks, preset.methods, smoothing=args.smoothing))
        return
    try:
        text = run_suite(preset, args.out, tasks, **_run_options(args))
    except RunsFailed as err:
        raise SystemExit(f"llm-gym compare: error: {err}") from err
    print(text)
    print(f"wrote {args.out}/<task>/ for {', '.join(tasks)}, and {args.out}/summary.md, ratios.png")


def _build_assets(args: argparse.Namespace) -> None:
    from llm_gym.assets.build import main as build_main

    build_main(
        (["--quick"] if args.quick else [])
        + ["--seed", str(args.seed)]
        + (["--out", args.out] if args.out else [])
        + [arg for task in args.task or () for arg in ("--task", task)]
    )


def _method_name(name: str) -> str:
    """``--rewards`` values: names the method registry knows."""
    try:
        registry.lookup(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return name


def _methods_epilog() -> str:
    """One line per registered method (and family) with its help."""
    import textwrap

    lines = registry.help_lines()
    width = max(len(name) for name, _ in lines)
    indent = " " * (width + 4)
    return "methods:\n" + "\n".join(
        textwrap.fill(f"  {name:<{width}}  {text}", 88, subsequent_indent=indent)
        for name, text in lines
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``llm-gym`` with ``argv`` (default: the command line)."""
    parser = argparse.ArgumentParser(
        prog="llm-gym", description="RL on language models as a Gymnasium problem."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare",
        help="train sparse, ABC, uniform, ... side by side and compare",
        epilog=_methods_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument(
        "--rewards",
        nargs="+",
        type=_method_name,
        default=None,
        metavar="METHOD",
        help=f"methods to train (default: the preset's; sparse always runs): "
        f"{', '.join(registry.names())}; see 'methods' below",
    )
    compare.add_argument(
        "--preset",
        default="default",
        choices=["default", "paper"],
        help="settings preset (its task, unless --task names another)",
    )
    compare.add_argument(
        "--task",
        default=None,
        choices=sorted(TASK_PRESETS),
        help="the task to train on, with its own reward model (default: the preset's); "
        "decisive, diffuse and interaction are the credit benchmark's other structures",
    )
    compare.add_argument(
        "--suite",
        action="store_true",
        help="the credit benchmark: every task of --tasks x method, each task in OUT/<task>/, "
        "then OUT/summary.md with the aggregate over tasks and OUT/ratios.png",
    )
    compare.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        choices=sorted(TASK_PRESETS),
        metavar="TASK",
        help=f"the tasks of --suite (default: {' '.join(SUITE_TASKS)})",
    )
    compare.add_argument(
        "--quick", action="store_true", help="a run that takes at most ~10 minutes on 2 cores"
    )
    compare.add_argument(
        "--agent",
        default=None,
        choices=["ppo", "rloo", "grpo"],
        help="TokenPPO (default), or the critic-free group agents TokenRLOO / TokenGRPO",
    )
    compare.add_argument(
        "--group-size",
        type=_positive_int,
        default=None,
        help="completions per prompt for --agent rloo|grpo (default 4; --batch must be a multiple)",
    )
    compare.add_argument("--seeds", type=_positive_int, default=None)
    compare.add_argument("--updates", type=_positive_int, default=None)
    compare.add_argument(
        "--batch", type=_positive_int, default=None, help="episodes per update (parallel envs)"
    )
    compare.add_argument(
        "--beta", type=float, default=None, help="dense share of the credit (paper: 0.8)"
    )
    compare.add_argument(
        "--abc-layers", type=int, nargs="+", default=None, help="RM layers ABC reads (-1: last)"
    )
    compare.add_argument(
        "--new-tokens",
        type=_parse_range,
        default=None,
        help="completion length, e.g. 32 or 40-60",
    )
    compare.add_argument("--lr", type=float, default=None)
    compare.add_argument("--gae-lambda", type=float, default=None)
    compare.add_argument(
        "--gae-lambda-by-method",
        type=_method_lambda,
        nargs="+",
        default=None,
        metavar="METHOD=LAMBDA",
        help="a method's own GAE lambda in place of --gae-lambda, e.g. sparse=1.0 (TokenPPO)",
    )
    compare.add_argument(
        "--critic",
        default=None,
        choices=["detached", "shared", "reward-model"],
        help="TokenPPO's value function: detached (default; an MLP on the LM's stop-gradient "
        "hidden state), shared (a linear head whose value loss also trains the LM) or "
        "reward-model (a trainable copy of the runs' reward model: values start as its "
        "prefix scores, as TRL's critic does)",
    )
    compare.add_argument("--kl-target", type=float, default=None)
    compare.add_argument(
        "--kl-horizon",
        type=_positive_int,
        default=None,
        help="timesteps over which the KL coefficient moves by its clipped error (default 10000; "
        "smaller adapts faster)",
    )
    compare.add_argument(
        "--kl-coef-max",
        type=float,
        default=None,
        help="cap on the controlled KL coefficient (default 1.0; a long completion may need "
        "more to hold a per-completion target)",
    )
    compare.add_argument(
        "--kl-step-fraction",
        type=float,
        default=None,
        help="PPO: a constrained update, stopping each update's epochs once it spends this "
        "fraction of the per-token KL budget left to --kl-target (default: off)",
    )
    compare.add_argument(
        "--kl-controller",
        default=None,
        choices=["adaptive", "pid"],
        help="how the KL coefficient follows --kl-target: adaptive (default; about 2%% per "
        "update, as the results folders before pid) or pid (holds the target)",
    )
    compare.add_argument(
        "--kl-pid-gains",
        type=float,
        nargs=3,
        default=None,
        metavar=("KP", "KI", "KD"),
        help="gains of --kl-controller pid, in coefficient units per update (default 0.15 "
        "0.08 0; a target that needs a coefficient of several units needs larger ones)",
    )
    compare.add_argument(
        "--kl-estimator",
        default=None,
        choices=["sampled", "exact"],
        help="the KL per completion the controller reads: sampled (default; the log-ratio at "
        "the sampled tokens, as the results folders before it) or exact (each state's KL over "
        "the vocabulary: no token-sampling noise)",
    )
    compare.add_argument("--reward-model", default=None, help="bundled RM name, hub id or folder")
    compare.add_argument(
        "--policy", default=None, help="causal LM to train: hub id or folder (default: embedded)"
    )
    compare.add_argument(
        "--tokenizer", default=None, help="hub id or folder (default: the embedded tokenizer)"
    )
    compare.add_argument(
        "--prompts",
        default=None,
        help="bundled prompt set, a .json list of strings, or a text file of one prompt per line",
    )
    compare.add_argument(
        "--smoothing", type=_positive_int, default=5, help="moving-average window for the table"
    )
    compare.add_argument(
        "--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ..."
    )
    compare.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads (1 lets two runs share 2 cores)",
    )
    compare.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="runs trained at a time, one torch thread each (default: 1; --quick: 2)",
    )
    ray = compare.add_argument_group(
        "Ray", 'runs as Ray tasks, the reward model as Ray actors (pip install "llm-gym[ray]")'
    )
    ray.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="train every run as a Ray task; no ADDRESS: on a local cluster (--jobs runs at a "
        "time; default: all cores), 'auto': on the cluster started here with `ray start`, "
        "host:port or ray://host:10001: on a remote one. Each run's output: OUT/logs/",
    )
    ray.add_argument(
        "--ray-cpus-per-run",
        metavar="CPUS",
        type=_non_negative_float,
        default=None,
        help="CPUs each run's task asks for, and its torch threads (default 1)",
    )
    ray.add_argument(
        "--ray-gpus-per-run",
        metavar="GPUS",
        type=_non_negative_float,
        default=None,
        help="GPUs each run's task asks for; the policy and reward model then use it (default 0)",
    )
    ray.add_argument(
        "--ray-retries",
        type=_non_negative_int,
        metavar="N",
        default=None,
        help="restarts of a run whose worker dies (default 2); a run that raises is reported, "
        "not retried",
    )
    ray.add_argument(
        "--reward-model-on-ray",
        action="store_true",
        help="serve the reward model from a Ray actor that every run shares (on a GPU when "
        "the cluster has one); scores are those of a local reward model",
    )
    ray.add_argument(
        "--ray-rm-gpus",
        metavar="GPUS",
        type=_non_negative_float,
        default=None,
        help="GPUs per reward-model actor (default: 1 if the cluster has a GPU, else 0)",
    )
    ray.add_argument(
        "--ray-rm-cpus",
        metavar="CPUS",
        type=_non_negative_float,
        default=None,
        help="CPUs per reward-model actor, and its torch threads (default 1)",
    )
    ray.add_argument(
        "--ray-rm-actors",
        metavar="N",
        type=_positive_int,
        default=None,
        help="reward-model actors; each run's calls go to them in turn (default 1)",
    )
    compare.add_argument(
        "--no-fidelity", action="store_true", help="skip the credit-fidelity table"
    )
    compare.add_argument(
        "--summarise",
        nargs="+",
        default=None,
        metavar="CSV",
        help="train nothing: merge these curves.csv files (e.g. from runs split over seeds) and report",
    )
    compare.add_argument(
        "--suite-report",
        action="store_true",
        help="with --suite: train nothing, write OUT/summary.md and ratios.png from the tasks' folders",
    )
    compare.add_argument(
        "--out",
        default="compare_out",
        help="output folder; runs already there with the same settings are kept, not retrained",
    )
    compare.set_defaults(run=_compare)

    demo = commands.add_parser(
        "demo", help="roll out episodes with the embedded LM and print their scores"
    )
    demo.add_argument("--episodes", type=_positive_int, default=64)
    demo.add_argument(
        "--envs",
        type=_positive_int,
        default=16,
        help="parallel environments (one batched RM forward)",
    )
    demo.add_argument("--task", default="default", choices=sorted(TASK_PRESETS), help="task preset")
    demo.add_argument("--show", type=int, default=8, help="completions to print")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    build = commands.add_parser("build-assets", help="rebuild the embedded default world")
    build.add_argument("--out", default=None, help="output folder (default: the package's assets)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--quick", action="store_true", help="tiny budget, for testing the build")
    build.add_argument(
        "--task",
        action="append",
        choices=BUILDABLE_TASKS,
        help="build only this credit-benchmark task's models (repeatable; a rule task's RM, or "
        "the long task's LM and RM), reading the world already in --out",
    )
    build.set_defaults(run=_build_assets)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, gym.error.Error) as err:
        # a bad setting: one line naming it, no traceback
        parser.exit(2, f"llm-gym {args.command}: error: {err}\n")


if __name__ == "__main__":
    main()
