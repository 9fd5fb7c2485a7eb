"""Training the runs of ``llm-gym compare``: one (method, seed) at a time, or several at once.

Holds :func:`make_method_env` (LLMCompletion-v0 wrapped for a method),
:func:`make_agent` (the untrained TokenPPO of one run), :class:`CurveRecorder`
(one curve row per rollout, read from ``model.rollout_stats``), :func:`run_one`
(train one run), and :func:`run_compare`: train every missing run of a preset on
an execution backend (:mod:`llm_gym.experiments.backends`: this process, ``jobs``
worker processes, or Ray tasks), resuming a results folder that already holds
some of them, then write the report (:mod:`llm_gym.experiments.report`).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping
from contextlib import closing, nullcontext
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback

import llm_gym  # noqa: F401  (registers the environments)
from llm_gym.experiments.backends import (
    Backend,
    ProcessPoolBackend,
    RayBackend,
    RunResult,
    RunsFailed,
    SequentialBackend,
)
from llm_gym.experiments.methods import check_methods, registry
from llm_gym.experiments.presets import RUN_INDEPENDENT_FIELDS, ComparePreset, env_options
from llm_gym.experiments.report import write_report
from llm_gym.experiments.summary import write_long_csv

__all__ = [
    "CurveRecorder",
    "make_agent",
    "make_method_env",
    "make_method_vector_env",
    "run_compare",
    "run_one",
]


def make_method_env(method: str, preset: ComparePreset) -> gym.Env:
    """LLMCompletion-v0 with ``preset``'s options, wrapped for ``method``.

    Example:
        >>> env = make_method_env("abc@0", ComparePreset(max_new_tokens=3))
        >>> type(env).__name__, env.request.layers
        ('AttentionCredit', (0,))
    """
    spec = registry.lookup(method)
    check_methods([method], preset)  # what the method needs from the preset
    return spec.wrap(gym.make("LLMCompletion-v0", **env_options(preset)), preset)


def _task(env: gym.Env | gym.vector.VectorEnv) -> Any:
    """The :class:`~llm_gym.envs.CompletionTask` of an LLMCompletion-v0 env under its wrappers."""
    return cast(Any, env.unwrapped).task


def _check_copyable_reward_model(preset: ComparePreset, task: Any) -> None:
    """The reward-model critic reads the environment's token ids: its RM must read them too."""
    from llm_gym.rewards import HFRewardModel

    rm = task.reward_model
    if not isinstance(rm, HFRewardModel):
        return
    same_ids = rm.uses_env_ids(task.tokenizer)
    if rm.pooling != "last" or not same_ids:
        raise ValueError(
            f"critic 'reward-model' copies the reward model {preset.reward_model_name!r} and "
            "reads the environment's token ids with it; expected a decoder reward model "
            f"(last-token pooling) on the environment's tokenizer, got pooling {rm.pooling!r} "
            f"and {'the same' if same_ids else 'another'} tokenizer"
        )


def _policy_kwargs(preset: ComparePreset, task: Any) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {}
    if preset.critic != "detached":  # the policy's default, left unnamed as before
        kwargs["critic"] = preset.critic
    if preset.critic == "reward-model":  # a trainable copy of the runs' own reward model
        _check_copyable_reward_model(preset, task)
        kwargs["critic_model"] = _reward_model_path(preset)
    if preset.policy_path is not None:
        kwargs["model"] = preset.policy_path
        if task.vocab_size > len(task.tokenizer):  # padded output layer: never sample a non-token
            kwargs["n_tokens"] = len(task.tokenizer)
    return kwargs or None


def make_method_vector_env(method: str, preset: ComparePreset) -> gym.vector.VectorEnv:
    """The group agents' vector env: ``preset.n_envs`` sub-envs in groups, wrapped for ``method``.

    Example:
        >>> envs = make_method_vector_env("abc", ComparePreset(agent="rloo", max_new_tokens=3))
        >>> type(envs).__name__, envs.unwrapped.group_size
        ('AttentionCredit', 4)
    """
    spec = registry.lookup(method)
    check_methods([method], preset)
    envs = gym.make_vec(
        "LLMCompletion-v0",
        num_envs=preset.n_envs,
        group_size=preset.group_size,
        **env_options(preset),
    )
    return spec.wrap_vector(envs, preset)


def make_agent(method: str, seed: int, preset: ComparePreset, device: str = "cpu") -> Any:
    """The agent (TokenPPO, TokenRLOO or TokenGRPO) one (method, seed) run of ``preset`` trains.

    ``device`` is the policy's torch device (a Ray run with a GPU passes ``"cuda"``).
    """
    import torch

    from llm_gym.agents import TokenGRPO, TokenPPO, TokenRLOO

    torch.manual_seed(seed)
    # the KL controller's settings, which every agent takes
    kl_options: dict[str, Any] = {
        "kl_coef": preset.kl_coef,
        "kl_target": preset.kl_target,
        "kl_horizon": preset.kl_horizon,
        "kl_coef_max": preset.kl_coef_max,
        "kl_controller": preset.kl_controller,
        "kl_estimator": preset.kl_estimator,
        "kl_pid_gains": preset.kl_pid_gains,
    }
    if preset.agent != "ppo":
        envs = make_method_vector_env(method, preset)
        n_steps = preset.n_steps or int(_task(envs).new_tokens[1])
        agent = {"rloo": TokenRLOO, "grpo": TokenGRPO}[preset.agent]
        return agent(
            "CausalLMPolicy",
            envs,
            n_steps=n_steps,
            batch_size=min(preset.batch_size, n_steps * preset.n_envs),
            n_epochs=preset.n_epochs,
            learning_rate=preset.learning_rate,
            **kl_options,
            policy_kwargs=_policy_kwargs(preset, _task(envs)),
            seed=seed,
            device=device,
            **registry.lookup(method).agent_kwargs,
        )
    env = make_method_env(method, preset)
    n_steps = preset.n_steps or int(_task(env).new_tokens[1])
    return TokenPPO(
        "CausalLMPolicy",
        env,
        n_envs=preset.n_envs,
        n_steps=n_steps,
        batch_size=min(preset.batch_size, n_steps * preset.n_envs),
        n_epochs=preset.n_epochs,
        learning_rate=preset.learning_rate,
        gae_lambda=preset.gae_lambda_of(method),
        **kl_options,
        kl_step_fraction=preset.kl_step_fraction,
        policy_kwargs=_policy_kwargs(preset, _task(env)),
        seed=seed,
        device=device,
    )


class CurveRecorder(BaseCallback):
    """One row per rollout (score, KL per completion, completion length) from ``model.rollout_stats``.

    TokenPPO sets ``rollout_stats`` (what it logs under ``rollout/``) at the end of
    every rollout, before other callbacks' ``_on_rollout_end``. A value the rollout
    did not log (no KL without a reference model) is NaN. :attr:`seconds` holds the
    wall time of each update (its rollout and the training before the next one).
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []
        self.seconds: list[float] = []

    def _on_training_start(self) -> None:
        self._last = time.perf_counter()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.rows:  # the previous update's training is over
            self._add_training_time()

    def _on_training_end(self) -> None:
        if self.rows:
            self._add_training_time()

    def _add_training_time(self) -> None:
        now = time.perf_counter()
        self.seconds[-1] += now - self._last
        self._last = now

    def _on_rollout_end(self) -> None:
        stats = getattr(self.model, "rollout_stats", None)
        if stats is None:
            raise TypeError(
                f"CurveRecorder reads model.rollout_stats, which {type(self.model).__name__} "
                "does not set; use TokenPPO or TokenMaskablePPO"
            )
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now
        row = {
            "score": float(stats.get("score_mean", math.nan)),
            "kl": float(stats.get("kl_per_completion", math.nan)),
            "length": float(stats.get("completion_length", math.nan)),
        }
        if "kl_sampled_per_completion" in stats:  # kl is the exact KL: keep the sampled one
            row["kl_sampled"] = float(stats["kl_sampled_per_completion"])
        self.rows.append(row)


def run_one(
    method: str,
    seed: int,
    preset: ComparePreset,
    out_dir: Path,
    threads: int | None = None,
    *,
    device: str = "cpu",
    reward_model: Any = None,
) -> list[dict[str, Any]]:
    """Train one run; returns one row per update (method, seed, update, score, kl, length, seconds).

    Its TensorBoard logs go to ``out_dir/tb/<method>_seed<seed>``. ``reward_model``
    (a :class:`~llm_gym.rewards.RayRewardModel` shared by the runs) replaces the
    preset's reward model, which it serves.
    """
    import shutil

    import torch
    from stable_baselines3.common.logger import configure

    if threads:
        torch.set_num_threads(threads)
    if reward_model is not None:
        preset = replace(preset, env_kwargs={**preset.env_kwargs, "reward_model": reward_model})
    model = make_agent(method, seed, preset, device)
    run_dir = out_dir / "tb" / f"{method}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted attempt's logs
    model.set_logger(configure(str(run_dir), ["tensorboard"]))
    curves = CurveRecorder()
    model.learn(preset.updates * model.n_steps * preset.n_envs, callback=curves, log_interval=1)
    model.env.close()
    seconds = curves.seconds + [math.nan] * (len(curves.rows) - len(curves.seconds))
    return [
        {"method": method, "seed": seed, "update": update, **row, "seconds": s}
        for update, (row, s) in enumerate(zip(curves.rows, seconds))
    ]


def _default(field_: Any) -> Any:
    return field_.default_factory() if field_.default is MISSING else field_.default


def _json_values(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, default=str))  # tuples -> lists, as stored


def _run_config(preset: ComparePreset) -> dict[str, Any]:
    config = asdict(preset)
    for name in RUN_INDEPENDENT_FIELDS:
        config.pop(name)
    # stored resolved: the folders written before tasks had their own models read "default"
    config["reward_model"] = preset.reward_model_name
    return _json_values(config)


def _finished_runs(out: Path, preset: ComparePreset) -> list[dict[str, Any]]:
    """Rows of the runs an earlier call finished in ``out`` with the same run settings."""
    config_path, csv_path = out / "config.json", out / "curves.csv"
    config = _run_config(preset)
    if config_path.exists():
        # a setting added after the folder was written held its default value then
        defaults = {f.name: _default(f) for f in fields(ComparePreset) if f.name in config}
        stored = _json_values(defaults) | json.loads(config_path.read_text())
        changed = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
        if changed:
            details = ", ".join(
                f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items()
            )
            raise ValueError(
                f"{out} holds runs made with other settings ({details}); "
                "pass another --out, or the same settings to add methods or seeds"
            )
    elif csv_path.exists():
        raise ValueError(
            f"{csv_path} exists but {config_path} does not, so its runs' settings are unknown; "
            "pass another --out"
        )
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    return _read_rows(csv_path)


def _read_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The rows of a long-format CSV of the folder (none if it does not exist)."""
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["seed"], row["update"] = int(row["seed"]), int(row["update"])
    return rows


def _reward_model_path(preset: ComparePreset) -> str:
    """The folder of the preset's bundled reward model, or its hub id or folder as given."""
    from llm_gym import assets

    name = preset.reward_model_name
    return str(assets.reward_model_path(name)) if name in assets.REWARD_MODELS else name


def _ray_reward_model(preset: ComparePreset, options: Mapping[str, Any]) -> Any:
    """The preset's reward model served by Ray actors placed as ``options`` say."""
    from llm_gym.rewards import RayRewardModel

    path = _reward_model_path(preset)
    kwargs = dict(preset.env_kwargs.get("reward_model_kwargs") or {})
    kwargs.setdefault("trust_remote_code", preset.env_kwargs.get("trust_remote_code", False))
    # each call scored as sent: the runs stay bit-for-bit those of a local reward model
    return RayRewardModel(path, **{"merge_calls": False, **kwargs, **options})


def run_compare(
    preset: ComparePreset,
    out_dir: str | Path,
    progress: bool = True,
    smoothing: int = 5,
    fidelity: bool = True,
    first_seed: int = 0,
    jobs: int = 1,
    backend: Backend | None = None,
    reward_model_on_ray: bool | Mapping[str, Any] = False,
) -> str:
    """Train every (method, seed), write the outputs, and return the summary markdown.

    Runs already in ``out_dir`` from an earlier call with the same settings are kept,
    not retrained, so an interrupted comparison resumes and a finished one can gain
    methods or seeds, on any backend. ``jobs > 1`` trains that many runs at a time in
    worker processes with one torch thread each; ``backend`` chooses another way
    (:class:`~llm_gym.experiments.backends.RayBackend`: Ray tasks). Each run's rows
    are written as it finishes. ``reward_model_on_ray`` serves the preset's reward
    model from Ray actors shared by every run (a dict gives their placement, the
    :class:`~llm_gym.rewards.RayRewardModel` options ``num_gpus``, ``num_cpus``,
    ``num_actors``, ``resources``).

    Raises:
        RunsFailed: after the other runs finished, when runs failed on a backend
            that reports failures instead of stopping (Ray).
    """
    check_methods(preset.methods, preset)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if backend is None:
        backend = SequentialBackend() if jobs == 1 else ProcessPoolBackend(jobs)
    elif jobs != 1:
        raise ValueError(
            f"pass jobs={jobs} or backend={backend!r}, not both; a backend sets its own parallelism"
        )
    rm_options: dict[str, Any] | None = None
    if reward_model_on_ray:
        rm_options = {} if reward_model_on_ray is True else dict(reward_model_on_ray)
    if "sparse" not in preset.methods:
        preset = replace(preset, methods=("sparse", *preset.methods))  # the baseline
    # the task's tokenizer, reward model, prompts and lengths load (or fail) before
    # anything is written, so a bad setting leaves no folder behind to refuse the fix
    if rm_options is None:
        gym.make("LLMCompletion-v0", **env_options(preset)).close()
    if isinstance(backend, RayBackend):
        # a local cluster sized for the runs gets room for the reward model's actors too
        extra = 0.0
        if rm_options is not None:
            extra = rm_options.get("num_cpus", 1.0) * rm_options.get("num_actors", 1)
        session = backend.cluster(extra_cpus=extra)
    elif rm_options is not None:
        session = RayBackend().cluster()  # a local cluster for the reward model's actors
    else:
        session = nullcontext()
    with session:
        reward_model = None
        if rm_options is not None:
            reward_model = _ray_reward_model(preset, rm_options)
            options = {**env_options(preset), "reward_model": reward_model}
            try:
                gym.make("LLMCompletion-v0", **options).close()
            except BaseException:
                reward_model.close()
                raise
        try:
            return _train_missing(
                preset,
                Path(out_dir),
                backend,
                reward_model,
                progress,
                smoothing,
                fidelity,
                first_seed,
            )
        finally:
            if reward_model is not None:
                reward_model.close()


def _train_missing(
    preset: ComparePreset,
    out: Path,
    backend: Backend,
    reward_model: Any,
    progress: bool,
    smoothing: int,
    fidelity: bool,
    first_seed: int,
) -> str:
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    rows = _finished_runs(out, preset)
    timings = _read_rows(out / "timings.csv")
    done = {(row["method"], row["seed"]) for row in rows}
    started = time.perf_counter()
    seeds = range(first_seed, first_seed + preset.seeds)
    runs = [(m, s) for s in seeds for m in preset.methods if (m, s) not in done]
    order = {m: i for i, m in enumerate(preset.methods)}

    def record(new_rows: list[dict[str, Any]]) -> None:
        # wall times vary from run to run: they go to timings.csv, so curves.csv stays
        # identical whatever runs the sweep
        timings.extend(
            {
                "method": r["method"],
                "seed": r["seed"],
                "update": r["update"],
                "seconds": r.pop("seconds"),
            }
            for r in new_rows
            if "seconds" in r
        )
        rows.extend(new_rows)
        rows.sort(key=lambda r: (r["seed"], order.get(r["method"], len(order)), r["update"]))
        write_long_csv(out / "curves.csv", rows)
        if timings:
            write_long_csv(out / "timings.csv", timings)

    run_kwargs = {} if reward_model is None else {"reward_model": reward_model}
    failures: list[RunResult] = []
    bar = tqdm(total=len(runs), desc="compare", disable=not progress, unit="run")
    if progress and runs and isinstance(backend, RayBackend):
        bar.write(f"each run's output: {out / 'logs'}/<method>_seed<seed>.log")
    # run_one is looked up now, so that a replaced one (tests) is what the backend runs
    with closing(backend.results(run_one, runs, preset, out, run_kwargs)) as results:
        for result in results:
            if result.rows is not None:
                record(result.rows)
            else:
                failures.append(result)
                bar.write(f"{result.method} seed {result.seed} failed: {result.error}")
                bar.set_postfix(failed=len(failures))
            bar.update()
    bar.close()
    if failures:
        raise RunsFailed(failures, len(runs))
    minutes = (time.perf_counter() - started) / 60
    return write_report(out, preset, [out / "curves.csv"], smoothing, fidelity, minutes)
