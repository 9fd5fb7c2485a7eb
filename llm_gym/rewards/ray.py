"""A reward model served by Ray actors, shared by many environments, processes and machines.

Holds :class:`RayRewardModel` (the :class:`~llm_gym.rewards.RewardModel` interface,
answered by one actor or a small pool of them), :func:`require_ray` (Ray, or an
ImportError that says how to install it), :func:`connect` (join or start a
cluster) and :func:`offered` (whether a machine of the cluster can take a request).

Ray is optional: nothing here imports it before a RayRewardModel is made, so
``import llm_gym.rewards`` works without it (``pip install "llm-gym[ray]"``).

Each actor builds an :class:`~llm_gym.rewards.HFRewardModel` from a name or
folder (a live model is never shipped) and answers ``score`` calls: the scores
and, on request, the attention rows ABC reads, from one forward. The actor is
asynchronous: calls that arrive while a forward runs wait, and are then scored
together in the next forward (those with the same environment tokenizer and
attention request), so many callers share each forward without waiting for a
timer. A merged forward computes exactly what a local HFRewardModel computes on
the merged batch; a pair's score can then differ from scoring its caller's
batch alone in the last float bits (padding changes the kernels' summation
order), so ``merge_calls=False`` scores each call as sent, bit for bit what a
local HFRewardModel gives that caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import pickle
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardModel, RewardOutput

__all__ = ["RayRewardModel", "connect", "offered", "require_ray"]

INSTALL_HINT = 'pip install "llm-gym[ray]" (or pip install "ray>=2.9")'


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"this needs Ray, which is not installed; {INSTALL_HINT}") from err
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect this process to a Ray cluster, unless it already is; True if this call did.

    Args:
        address: ``None`` starts a local cluster (``num_cpus`` CPUs, default all
            cores); ``"auto"`` joins the cluster started on this machine with
            ``ray start``; ``"host:6379"`` or ``"ray://host:10001"`` join a remote one.
        num_cpus: the local cluster's CPUs (only with ``address=None``).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        options["num_cpus"] = num_cpus
    else:
        options["address"] = address
    ray.init(**options)
    return True


def offered(request: Mapping[str, float]) -> bool:
    """Whether some live machine of the cluster has the resources of ``request`` at all.

    ``request`` maps Ray resource names to amounts (``{"CPU": 1, "GPU": 0.5}``).
    A request no machine has waits until one joins (an autoscaling cluster adds it).
    """
    ray = require_ray()
    wanted = {name: amount for name, amount in request.items() if amount}
    return any(
        all(node["Resources"].get(name, 0) >= amount for name, amount in wanted.items())
        for node in ray.nodes()
        if node.get("Alive")
    )


@dataclass
class _Call:
    """One caller's batch, waiting in the actor for a forward."""

    group: tuple[str, AttentionRequest | None]
    tokenizer: Any
    prompt_ids: list[np.ndarray]
    completion_ids: list[np.ndarray]
    future: asyncio.Future[Any]


class RewardModelServer:
    """The actor behind :class:`RayRewardModel` (made remote with ``ray.remote``)."""

    def __init__(
        self, model: str, options: dict[str, Any], threads: int, merge_calls: bool, max_batch: int
    ) -> None:
        import torch

        from llm_gym.rewards.hf import HFRewardModel

        torch.set_num_threads(threads)
        self.rm = HFRewardModel(model, **options)
        self.merge_calls, self.max_batch = merge_calls, max_batch
        self._tokenizers: OrderedDict[str, Any] = OrderedDict()  # env tokenizers, newest last
        self._waiting: list[_Call] = []
        self._drainer: asyncio.Task[None] | None = None
        self._executor: Any = None
        self.forwards = 0

    def describe(self) -> dict[str, Any]:
        """What the client shows: the model's name, pooling and device, and this process."""
        return {
            "name": self.rm.name,
            "pooling": self.rm.pooling,
            "device": str(self.rm.device),
            "pid": os.getpid(),
        }

    def stats(self) -> dict[str, int]:
        """How many forwards this actor ran (fewer than calls when calls were merged)."""
        return {"forwards": self.forwards}

    async def score(
        self,
        key: str,
        tokenizer: Any,
        prompt_ids: list[np.ndarray],
        completion_ids: list[np.ndarray],
        request: AttentionRequest | None,
    ) -> tuple[np.ndarray, list[np.ndarray] | None] | None:
        """Scores and attention rows of one batch; None when the tokenizer ``key`` is unknown."""
        if tokenizer is not None:
            self._tokenizers[key] = tokenizer
        if key not in self._tokenizers:
            return None  # a restarted actor: the caller sends its tokenizer again
        self._tokenizers.move_to_end(key)
        while len(self._tokenizers) > 16:
            self._tokenizers.popitem(last=False)
        future = asyncio.get_running_loop().create_future()
        call = _Call((key, request), self._tokenizers[key], prompt_ids, completion_ids, future)
        self._waiting.append(call)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if self._executor is None:  # one thread: forwards run one at a time, off the event loop
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="reward-model")
        loop = asyncio.get_running_loop()
        while self._waiting:
            calls, self._waiting = self._waiting, []
            for group in self._groups(calls):
                results: list[Any]  # per call, its scores and rows or the exception raised
                try:
                    results = await loop.run_in_executor(self._executor, self._forward, group)
                except Exception as err:
                    if len(group) == 1:
                        results = [err]
                    else:  # one caller's bad batch must not fail the others merged with it
                        results = [
                            await loop.run_in_executor(self._executor, self._forward_alone, call)
                            for call in group
                        ]
                for call, result in zip(group, results):
                    if call.future.done():  # its caller was cancelled
                        continue
                    if isinstance(result, Exception):
                        call.future.set_exception(result)
                    else:
                        call.future.set_result(result)

    def _groups(self, calls: list[_Call]) -> list[list[_Call]]:
        if not self.merge_calls:
            return [[call] for call in calls]
        groups: list[list[_Call]] = []
        by_kind: dict[tuple[Any, ...], list[list[_Call]]] = {}
        for call in calls:
            open_groups = by_kind.setdefault(call.group, [])
            size = len(call.prompt_ids)
            if open_groups and sum(len(c.prompt_ids) for c in open_groups[-1]) + size <= (
                self.max_batch
            ):
                open_groups[-1].append(call)
            else:
                open_groups.append([call])
                groups.append(open_groups[-1])
        return groups

    def _forward_alone(self, call: _Call) -> Any:
        """The result of scoring ``call`` alone, or the exception it raises."""
        try:
            return self._forward([call])[0]
        except Exception as err:
            return err

    def _forward(self, group: list[_Call]) -> list[tuple[np.ndarray, list[np.ndarray] | None]]:
        batch = CompletionBatch(
            [p for call in group for p in call.prompt_ids],
            [c for call in group for c in call.completion_ids],
            group[0].tokenizer,
        )
        output = self.rm(batch, group[0].group[1])
        self.forwards += 1
        results, start = [], 0
        for call in group:
            stop = start + len(call.prompt_ids)
            attention = None if output.attention is None else output.attention[start:stop]
            results.append((output.scores[start:stop], attention))
            start = stop
        return results


def _tokenizer_key(tokenizer: Any) -> str:
    """A content fingerprint of an environment tokenizer, the same in every process."""
    return hashlib.sha256(pickle.dumps(tokenizer)).hexdigest()[:16]


class RayRewardModel(RewardModel):
    """A Hugging Face reward model served by Ray actors: one copy for many environments.

    Use it wherever a reward model goes (``gym.make("LLMCompletion-v0",
    reward_model=...)``, the vector environment, the credit wrappers, ``llm-gym
    compare --reward-model-on-ray``). Scores and attention rows are the ones an
    :class:`~llm_gym.rewards.HFRewardModel` with the same arguments computes on
    the same batch. It pickles as the actors' names and the cluster's address, so
    it travels into worker processes, Ray tasks and stable-baselines3 saves; a copy
    in a process that is not connected to Ray connects to that address on its
    first call. The actors live as long as the process that made them (or until
    :meth:`close`).

    Args:
        model: hub id or folder of an ``AutoModelForSequenceClassification``, as the
            actors' machines see it (never a live model).
        tokenizer: the RM's own tokenizer (hub id or folder); ``None`` as in
            :class:`~llm_gym.rewards.HFRewardModel`.
        score: the score definition, as in :class:`~llm_gym.rewards.HFRewardModel`.
        pooling: ``"auto"``, ``"last"`` or ``"first"``, as there.
        device: the actors' torch device; ``"auto"``: the GPU Ray gives them, else the CPU.
        trust_remote_code: passed to ``from_pretrained``; off by default.
        num_actors: actors in the pool; each caller sends its calls to them in turn.
        num_gpus: GPUs per actor; ``None``: 1 if the cluster has a GPU, else 0.
        num_cpus: CPUs per actor (its torch threads too, at least 1).
        resources: custom Ray resources per actor (e.g. ``{"rm_node": 1}``), to
            pin the actors to machines that advertise them.
        merge_calls: score calls that arrive while a forward runs in one forward
            (default); ``False`` scores each call as sent (see the module notes).
        max_batch: the most pairs one merged forward takes (a larger single call
            is still scored whole).
        name: the actors' name prefix (default: a fresh one); actors are named
            ``<name>-0``, ``<name>-1``, ...
        address: the cluster to join if this process is not connected yet (see
            :func:`connect`; default: start a local one).
        start_timeout: seconds to wait for the actors to be placed and to load
            the model before giving up with a TimeoutError.
        **hf_options: further :class:`~llm_gym.rewards.HFRewardModel` arguments
            (such as ``dtype``), sent to the actors as they are.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> rm = RayRewardModel(llm_gym.assets.reward_model_path("default"))  # doctest: +SKIP
        >>> env = gym.make("LLMCompletion-v0", reward_model=rm)  # doctest: +SKIP
    """

    supports_attention = True

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        score: str | int | tuple[str | int, str | int] = "auto",
        pooling: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = False,
        *,
        num_actors: int = 1,
        num_gpus: float | None = None,
        num_cpus: float = 1.0,
        resources: Mapping[str, float] | None = None,
        merge_calls: bool = True,
        max_batch: int = 256,
        name: str | None = None,
        address: str | None = None,
        start_timeout: float = 600.0,
        **hf_options: Any,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(
                f"model must be a hub id or folder (the actors load it), got a "
                f"{type(model).__name__}; a live model is never shipped to an actor"
            )
        if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
            raise TypeError(
                f"tokenizer must be None or a hub id or folder, got a {type(tokenizer).__name__}"
            )
        for label, value, low in (("num_actors", num_actors, 1), ("max_batch", max_batch, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
        for label, amount in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if amount is not None and (not isinstance(amount, (int, float)) or amount < 0):
                raise ValueError(f"{label} must be a number >= 0, got {amount!r}")
        ray = require_ray()
        connect(address)
        if num_gpus is None:
            num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self.name = str(model)
        self.placement = {"num_cpus": num_cpus, "num_gpus": num_gpus, **(resources or {})}
        self.merge_calls = bool(merge_calls)
        context = ray.get_runtime_context()
        self._address, self._namespace = context.gcs_address, context.namespace
        prefix = name or f"llm-gym-rm-{uuid.uuid4().hex[:8]}"
        self._names = [f"{prefix}-{i}" for i in range(num_actors)]
        if device == "auto" and not num_gpus:
            device = "cpu"  # Ray leaves every GPU visible to an actor that reserved none
        options = {
            "tokenizer": None if tokenizer is None else str(tokenizer),
            "score": score,
            "pooling": pooling,
            "device": device,
            "trust_remote_code": trust_remote_code,
            **hf_options,
        }
        wanted = {"CPU": num_cpus, "GPU": num_gpus, **(resources or {})}
        if not offered(wanted):
            warnings.warn(
                f"no machine of the Ray cluster offers {wanted} for a reward-model actor; it "
                f"waits until one joins (start_timeout={start_timeout:g} s)",
                stacklevel=2,
            )
        server = ray.remote(RewardModelServer)
        placement = {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "resources": dict(resources or {}) or None,
            "max_restarts": 2,
            "max_task_retries": 2,  # scoring is a pure function of its inputs
            "max_concurrency": 1000,
        }
        threads = max(1, int(num_cpus))
        self._actors: list[Any] | None = [
            server.options(name=n, **placement).remote(
                self.name, options, threads, self.merge_calls, max_batch
            )
            for n in self._names
        ]
        self.owns_actors = True
        try:
            described = ray.get(
                [actor.describe.remote() for actor in self._actors], timeout=start_timeout
            )
        except ray.exceptions.RayActorError as err:
            self.close()
            raise OSError(
                f"the reward-model actor could not load {self.name!r}: {_last_line(err)}"
            ) from err
        except ray.exceptions.GetTimeoutError as err:
            self.close()
            raise TimeoutError(
                f"the reward-model actors for {self.name!r} did not start within "
                f"{start_timeout:g} s; does a machine of the cluster offer {wanted}? "
                "(`ray status` lists pending demands)"
            ) from err
        self.pooling: str = described[0]["pooling"]
        self.device: str = described[0]["device"]
        self._init_client()

    def _init_client(self) -> None:
        self._turn = itertools.count(os.getpid())  # callers in different processes start apart
        self._keys: dict[int, tuple[Any, str]] = {}  # id(tokenizer) -> (tokenizer, key)
        self._sent: set[tuple[int, str]] = set()  # (actor index, key) holding that tokenizer

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_actors", "_turn", "_keys", "_sent"):
            state.pop(name, None)
        state["owns_actors"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._actors = None
        self._init_client()

    def _handles(self) -> list[Any]:
        if self._actors is None:
            ray = require_ray()
            connect(self._address)
            try:
                self._actors = [ray.get_actor(n, namespace=self._namespace) for n in self._names]
            except ValueError as err:
                raise RuntimeError(
                    f"the reward-model actors {self._names} are gone (they end with the process "
                    f"that made the RayRewardModel, or its close()): {err}"
                ) from err
        return self._actors

    # -------------------------------------------------------------- scoring
    def _key(self, tokenizer: Any) -> str:
        known = self._keys.get(id(tokenizer))
        if known is None or known[0] is not tokenizer:
            known = (tokenizer, _tokenizer_key(tokenizer))
            self._keys[id(tokenizer)] = known
        return known[1]

    def score(
        self, batch: CompletionBatch, attention: AttentionRequest | None = None
    ) -> RewardOutput:
        ray = require_ray()
        actors = self._handles()
        index = next(self._turn) % len(actors)
        key = self._key(batch.tokenizer)
        prompts = [np.asarray(p, dtype=np.int64) for p in batch.prompt_ids]
        completions = [np.asarray(c, dtype=np.int64) for c in batch.completion_ids]
        known = (index, key) in self._sent
        tokenizer = None if known else batch.tokenizer
        result = ray.get(
            actors[index].score.remote(key, tokenizer, prompts, completions, attention)
        )
        if result is None:  # the actor restarted since it last saw this tokenizer
            result = ray.get(
                actors[index].score.remote(key, batch.tokenizer, prompts, completions, attention)
            )
        self._sent.add((index, key))
        scores, rows = result
        return RewardOutput(scores=np.asarray(scores, dtype=np.float64), attention=rows)

    def forwards(self) -> int:
        """The forwards the actors ran so far (fewer than calls when calls were merged)."""
        ray = require_ray()
        return sum(s["forwards"] for s in ray.get([a.stats.remote() for a in self._handles()]))

    def close(self) -> None:
        """End the actors (if this object made them; copies only let go of them)."""
        if getattr(self, "owns_actors", False) and self._actors:
            ray = require_ray()
            for actor in self._actors:
                ray.kill(actor)
            self.owns_actors = False
        self._actors = None

    def __repr__(self) -> str:
        return (
            f"RayRewardModel({self.name!r}, actors={len(self._names)}, "
            f"num_gpus={self.placement['num_gpus']}, pooling={self.pooling!r})"
        )


def _last_line(err: BaseException) -> str:
    """The last line of a Ray error's text: the remote exception's type and message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
