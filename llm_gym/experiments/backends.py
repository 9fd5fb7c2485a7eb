"""Where the runs of ``llm-gym compare`` train: in this process, in worker processes, or on Ray.

Holds :class:`Backend` (what :func:`~llm_gym.experiments.runs.run_compare` drives:
it hands over the missing (method, seed) runs and records each :class:`RunResult`
as the backend yields it), its three implementations :class:`SequentialBackend`,
:class:`ProcessPoolBackend` (``--jobs``) and :class:`RayBackend` (``--ray``), and
:class:`RunsFailed` (the runs a backend could not finish).

Every backend calls the same run function with the same settings, and the caller
writes each run's rows as it finishes, so a results folder does not know which
backend filled it: a sweep resumes on any of them.
"""

from __future__ import annotations

import math
import os
import traceback
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_gym.experiments.allocator import retain_freed_memory

__all__ = [
    "Backend",
    "ProcessPoolBackend",
    "RayBackend",
    "RunResult",
    "RunsFailed",
    "SequentialBackend",
    "log_path",
]

#: ``run(method, seed, preset, out_dir, threads, **run_kwargs) -> rows``: run_one's signature
RunFunction = Callable[..., list[dict[str, Any]]]


def log_path(out: Path, method: str, seed: int) -> Path:
    """Where a Ray run's output goes: ``out/logs/<method>_seed<seed>.log``."""
    return Path(out) / "logs" / f"{method}_seed{seed}.log"


@dataclass
class RunResult:
    """One run a backend finished (``rows``) or gave up on (``error``)."""

    method: str
    seed: int
    rows: list[dict[str, Any]] | None = None
    error: str | None = None
    log: Path | None = None


class RunsFailed(RuntimeError):
    """Some runs failed; the others are recorded, and running the same command retries these."""

    def __init__(self, failures: Sequence[RunResult], total: int) -> None:
        self.failures = list(failures)
        details = "; ".join(
            f"{r.method} seed {r.seed}: {r.error}" + (f" (log: {r.log})" if r.log else "")
            for r in self.failures
        )
        super().__init__(
            f"{len(self.failures)} of {total} runs failed, the others are recorded; run the same "
            f"command again to retry the failed ones: {details}"
        )


class Backend(ABC):
    """Trains runs and yields each one's :class:`RunResult` as it finishes."""

    def cluster(self, extra_cpus: float = 0.0) -> AbstractContextManager[Any]:
        """A context in which the backend's resources exist (a Ray connection for Ray)."""
        return nullcontext()

    @abstractmethod
    def results(
        self,
        run: RunFunction,
        runs: Sequence[tuple[str, int]],
        preset: Any,
        out: Path,
        run_kwargs: dict[str, Any],
    ) -> Generator[RunResult, None, None]:
        """Train ``runs`` with ``run``; yield their results in the order they finish.

        Closing the iterator early (an interrupt) stops the runs still training.
        """


@dataclass
class SequentialBackend(Backend):
    """One run after another in this process, with this process's torch threads.

    An exception in a run stops the sweep (the runs before it are recorded).

    Example:
        >>> run = lambda method, seed, preset, out: [{"method": method, "seed": seed}]
        >>> [r.rows for r in SequentialBackend().results(run, [("abc", 0)], None, Path("."), {})]
        [[{'method': 'abc', 'seed': 0}]]
    """

    def results(
        self,
        run: RunFunction,
        runs: Sequence[tuple[str, int]],
        preset: Any,
        out: Path,
        run_kwargs: dict[str, Any],
    ) -> Generator[RunResult, None, None]:
        for method, seed in runs:
            yield RunResult(method, seed, run(method, seed, preset, out, **run_kwargs))


@dataclass
class ProcessPoolBackend(Backend):
    """``jobs`` runs at a time in spawned worker processes, one torch thread each.

    The workers keep freed memory (:func:`~llm_gym.experiments.allocator.retain_freed_memory`).

    An exception in a run stops the sweep, as in this process.
    """

    jobs: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")

    def results(
        self,
        run: RunFunction,
        runs: Sequence[tuple[str, int]],
        preset: Any,
        out: Path,
        run_kwargs: dict[str, Any],
    ) -> Generator[RunResult, None, None]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # torch is not fork-safe
        pool = ProcessPoolExecutor(
            max_workers=self.jobs, mp_context=context, initializer=retain_freed_memory
        )
        try:
            futures = {
                pool.submit(run, m, s, preset, out, 1, **run_kwargs): (m, s) for m, s in runs
            }
            for future in as_completed(futures):
                yield RunResult(*futures[future], future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RayBackend(Backend):
    """Every run a Ray task with its resource request, on a local or an existing cluster.

    Args:
        address: ``None`` starts a local cluster for the sweep (``ray.init``);
            ``"auto"`` joins the one started on this machine with ``ray start``;
            ``"host:6379"`` or ``"ray://host:10001"`` join a remote one.
        jobs: runs in flight at a time; ``None``: as many as the cluster fits. A
            local cluster gets ``jobs * cpus_per_run`` CPUs (default: all cores).
        cpus_per_run: each task's ``num_cpus``; its torch threads too (at least 1).
        gpus_per_run: each task's ``num_gpus`` (fractions share a GPU); the run's
            policy and reward model then use the GPU.
        retries: how often a run whose worker dies (killed, out of memory, its
            node lost) is started again: Ray's ``max_retries``. An exception in a
            run is not retried: it fails the same way every time.
        threads: torch threads per run (default: from ``cpus_per_run``).

    A run that still fails is reported with its error while the others finish
    (:class:`RunsFailed` at the end). Each run's output (warnings, tracebacks)
    goes to ``out/logs/<method>_seed<seed>.log``; a run on another machine
    writes its TensorBoard logs and log there and sends them back with its rows,
    so the cluster needs no shared filesystem. Ray's own logs of the workers are
    in ``/tmp/ray/session_latest/logs/`` on each machine.

    Example:
        >>> backend = RayBackend("auto", cpus_per_run=2, gpus_per_run=0.5)
        >>> backend.run_threads, backend.retries
        (2, 2)
    """

    address: str | None = None
    jobs: int | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    retries: int = 2
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.jobs is not None and (not isinstance(self.jobs, int) or self.jobs < 1):
            raise ValueError(f"jobs must be None or an int >= 1, got {self.jobs!r}")
        if not isinstance(self.cpus_per_run, (int, float)) or self.cpus_per_run <= 0:
            raise ValueError(f"cpus_per_run must be a number > 0, got {self.cpus_per_run!r}")
        if not isinstance(self.gpus_per_run, (int, float)) or self.gpus_per_run < 0:
            raise ValueError(f"gpus_per_run must be a number >= 0, got {self.gpus_per_run!r}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be None or an int >= 1, got {self.threads!r}")

    @property
    def run_threads(self) -> int:
        """The torch threads of each run."""
        return self.threads or max(1, int(self.cpus_per_run))

    def cluster(self, extra_cpus: float = 0.0) -> AbstractContextManager[Any]:
        """Connected to the cluster (a local one is started, and ended on exit)."""
        from contextlib import contextmanager

        from llm_gym.rewards.ray import connect, require_ray

        @contextmanager
        def connected() -> Iterator[Any]:
            ray = require_ray()
            num_cpus = None
            if self.jobs is not None:
                num_cpus = math.ceil(self.jobs * self.cpus_per_run + extra_cpus)
            started = connect(self.address, num_cpus)
            try:
                yield ray
            finally:
                if started:
                    ray.shutdown()

        return connected()

    def results(
        self,
        run: RunFunction,
        runs: Sequence[tuple[str, int]],
        preset: Any,
        out: Path,
        run_kwargs: dict[str, Any],
    ) -> Generator[RunResult, None, None]:
        from llm_gym.rewards.ray import offered, require_ray

        ray = require_ray()
        wanted = {"CPU": self.cpus_per_run, "GPU": self.gpus_per_run}
        if runs and not offered(wanted):
            warnings.warn(
                f"no machine of the Ray cluster offers {wanted} for one run; the runs wait "
                "until one joins (lower --ray-cpus-per-run / --ray-gpus-per-run?)",
                stacklevel=2,
            )
        kwargs = dict(run_kwargs)
        if self.gpus_per_run > 0:
            kwargs["device"] = "cuda"
        task = ray.remote(_train).options(
            num_cpus=self.cpus_per_run,
            num_gpus=self.gpus_per_run,
            max_retries=self.retries,
            retry_exceptions=False,
        )
        driver_node = ray.get_runtime_context().get_node_id()
        queue = list(runs)
        running: dict[Any, tuple[str, int]] = {}
        limit = self.jobs or len(queue)
        try:
            while queue or running:
                while queue and len(running) < limit:
                    method, seed = queue.pop(0)
                    ref = task.remote(
                        run, method, seed, preset, str(out), driver_node, self.run_threads, kwargs
                    )
                    running[ref] = (method, seed)
                # a timeout, so that an interrupt is seen within a second
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    yield self._collect(ray, ref, *running.pop(ref), Path(out))
        finally:
            for ref in running:  # an interrupt: stop what is still training
                ray.cancel(ref, force=True)

    def _collect(self, ray: Any, ref: Any, method: str, seed: int, out: Path) -> RunResult:
        log = log_path(out, method, seed)
        try:
            outcome: _Outcome = ray.get(ref)
        except ray.exceptions.RayError as err:  # the worker died on every attempt
            first = next((line for line in str(err).splitlines() if line.strip()), "")
            error = f"{type(err).__name__} after {self.retries + 1} attempts: {first.strip()}"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as handle:
                handle.write(
                    f"{error}\nRay's logs of the workers: /tmp/ray/session_latest/logs/ on the "
                    "machine that ran it (worker-*.out, worker-*.err, python-core-worker-*.log)\n"
                )
            return RunResult(method, seed, error=error, log=log)
        for name, data in outcome.files.items():  # from a machine without this folder
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if outcome.error is not None:
            return RunResult(method, seed, error=outcome.error, log=log)
        return RunResult(method, seed, outcome.rows, log=log)


@dataclass
class _Outcome:
    """What a Ray task sends back: the rows or the error, and files for the results folder."""

    rows: list[dict[str, Any]] | None
    error: str | None
    files: dict[str, bytes]


def _train(
    run: RunFunction,
    method: str,
    seed: int,
    preset: Any,
    out_dir: str,
    driver_node: str,
    threads: int,
    run_kwargs: dict[str, Any],
) -> _Outcome:
    """The Ray task: one run, its output to its log; files shipped back if run elsewhere."""
    import tempfile
    from contextlib import redirect_stderr, redirect_stdout

    import ray

    node = ray.get_runtime_context().get_node_id()
    here = node == driver_node  # else the results folder is not on this machine
    work = Path(out_dir) if here else Path(tempfile.mkdtemp(prefix="llm-gym-run-"))
    log = log_path(work, method, seed)
    log.parent.mkdir(parents=True, exist_ok=True)
    rows, error = None, None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not ray.get_gpu_ids():
        # Ray leaves every GPU visible to a task that reserved none: keep this run off them
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    with open(log, "a", buffering=1) as handle, redirect_stdout(handle), redirect_stderr(handle):
        print(f"== {method} seed {seed}: node {node[:12]}, pid {os.getpid()}", flush=True)
        try:
            rows = run(method, seed, preset, work, threads, **run_kwargs)
        except Exception as err:
            traceback.print_exc()
            error = f"{type(err).__name__}: {err}"
        print(f"== {method} seed {seed}: {'failed' if error else 'done'}", flush=True)
    if visible is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    files: dict[str, bytes] = {}
    if not here:
        import shutil

        for path in [log, *(work / "tb" / f"{method}_seed{seed}").rglob("*")]:
            if path.is_file():
                files[path.relative_to(work).as_posix()] = path.read_bytes()
        shutil.rmtree(work, ignore_errors=True)
    return _Outcome(rows, error, files)
