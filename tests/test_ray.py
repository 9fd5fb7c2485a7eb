"""llm-gym on Ray, on one local cluster for the module: the reward model as an actor, sweeps as tasks.

Skipped only where Ray is not installed and LLM_GYM_REQUIRE_RAY is unset; CI sets it,
so there a missing Ray fails these tests instead of skipping them.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import pickle
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROMPTS, bert_tokenizer, build_reward_model, random_batch, word_tokenizer

import llm_gym.experiments.runs as runs
from llm_gym.cli import main as cli_main
from llm_gym.experiments.backends import RayBackend, RunsFailed, SequentialBackend
from llm_gym.experiments.compare import ComparePreset, run_compare
from llm_gym.rewards import AttentionRequest, CompletionBatch

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY and not os.environ.get("LLM_GYM_REQUIRE_RAY"),
    reason='Ray is not installed (pip install "llm-gym[ray]"); CI sets LLM_GYM_REQUIRE_RAY',
)

TINY = ComparePreset(
    methods=("sparse", "abc"), seeds=1, updates=2, max_new_tokens=4, n_envs=4, batch_size=16
)


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (starting one takes several seconds)."""
    import ray

    # the fault-injecting run functions below are defined here, in a module Ray's
    # workers cannot import: ship them by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@contextmanager
def one_thread():
    """Local scoring with the actors' thread count, so the float arithmetic is the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def assert_same_output(local, remote):
    assert np.array_equal(local.scores, remote.scores)
    if local.attention is None:
        assert remote.attention is None
    else:
        assert len(local.attention) == len(remote.attention)
        for a, b in zip(local.attention, remote.attention, strict=True):
            assert np.array_equal(a, b)


# ------------------------------------------------------------------ reward model


@pytest.fixture(scope="module")
def gpt2_actor(cluster, tmp_path_factory):
    """The tiny GPT-2 RM (word tokenizer) locally and as a RayRewardModel."""
    from llm_gym.rewards import RayRewardModel

    path = tmp_path_factory.mktemp("ray_gpt2_rm")
    local = build_reward_model("gpt2", path, word_tokenizer())
    remote = RayRewardModel(str(path), device="cpu", num_cpus=0)
    yield local, remote
    remote.close()


def assert_actor_equals_local(local, remote):
    assert remote.supports_attention and remote.pooling == local.pooling
    # the env speaks the RM's own tokenizer (ids read as they are), or another one
    # (texts re-tokenised, attention mapped back by character offsets)
    tokenizers = (word_tokenizer(), bert_tokenizer())
    assert sorted(local.uses_env_ids(t) for t in tokenizers) == [False, True]
    for env_tokenizer in tokenizers:
        batch = random_batch(env_tokenizer, 6, seed=2)
        for request in (None, AttentionRequest(), AttentionRequest((0, 1), "max")):
            with one_thread():
                expected = local(batch, request)
            assert_same_output(expected, remote(batch, request))


@needs_ray
def test_a_decoder_ray_reward_model_scores_and_reads_attention_as_a_local_one(gpt2_actor):
    assert_actor_equals_local(*gpt2_actor)


@needs_ray
def test_an_encoder_ray_reward_model_scores_and_reads_attention_as_a_local_one(cluster, tmp_path):
    from llm_gym.rewards import RayRewardModel

    local = build_reward_model("bert", tmp_path, bert_tokenizer())
    remote = RayRewardModel(str(tmp_path), pooling="first", device="cpu", num_cpus=0)
    try:
        assert_actor_equals_local(local, remote)
    finally:
        remote.close()


@needs_ray
def test_concurrent_callers_get_their_own_results_and_a_bad_batch_fails_alone(gpt2_actor):
    from concurrent.futures import ThreadPoolExecutor

    local, remote = gpt2_actor
    tokenizer = word_tokenizer()
    batches = [random_batch(tokenizer, 32, seed=s) for s in range(12)]
    too_long = CompletionBatch([np.array([5, 6])], [np.full(70, 7)], tokenizer)  # 64 positions
    with ThreadPoolExecutor(len(batches) + 1) as pool:
        futures = [pool.submit(remote, b, AttentionRequest()) for b in batches]
        bad = pool.submit(remote, too_long, AttentionRequest())
        outputs = [f.result() for f in futures]
        with pytest.raises(ValueError, match="exceeds the reward model's 64 positions"):
            bad.result()
    with one_thread():
        for batch, output in zip(batches, outputs, strict=True):
            expected = local(batch, AttentionRequest())
            # a merged forward pads differently: equal up to float rounding
            np.testing.assert_allclose(output.scores, expected.scores, atol=1e-5)
            for a, b in zip(output.attention, expected.attention, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-6)


@needs_ray
def test_ray_reward_model_in_envs_wrappers_and_other_processes(gpt2_actor, word_tok_dir):
    import gymnasium as gym

    import llm_gym  # noqa: F401
    from llm_gym.wrappers import AttentionCredit

    local, remote = gpt2_actor
    options = {"tokenizer": word_tok_dir, "prompts": PROMPTS, "max_new_tokens": 4}

    def episode(reward_model):
        env = AttentionCredit(gym.make("LLMCompletion-v0", reward_model=reward_model, **options))
        env.reset(seed=3)
        done, actions = False, iter([7, 8, 9, 10])
        while not done:
            _, _, done, _, info = env.step(next(actions))
        return info["score"], info["token_rewards"]

    with one_thread():
        assert episode(local) == episode(remote)

    def vector_rewards(reward_model):
        envs = gym.make_vec("LLMCompletion-v0", num_envs=4, reward_model=reward_model, **options)
        envs.reset(seed=0)
        rewards = [envs.step(np.array([7, 8, 9, 10]))[1] for _ in range(5)]
        return np.stack(rewards)

    with one_thread():
        expected = vector_rewards(local)
    assert np.count_nonzero(expected) == 4  # the four episodes ended and were scored together
    assert np.array_equal(vector_rewards(remote), expected)

    # it pickles as the actors' names: a copy in this process, or in one that is not
    # connected to Ray yet (a spawned worker), reaches the same actors
    copy = pickle.loads(pickle.dumps(remote))
    batch = random_batch(word_tokenizer(), 3, seed=5)
    with one_thread():
        expected = local(batch).scores
    assert np.array_equal(copy(batch).scores, expected)
    script = (
        "import pickle, sys, numpy as np\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from conftest import random_batch, word_tokenizer\n"
        "rm = pickle.loads(sys.stdin.buffer.read())\n"
        "print(repr(rm(random_batch(word_tokenizer(), 3, seed=5)).scores.tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent)],
        input=pickle.dumps(remote),
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert eval(done.stdout.decode().strip().splitlines()[-1]) == expected.tolist()


@needs_ray
def test_ray_reward_model_refuses_live_models_and_reports_load_errors(cluster, tmp_path):
    from llm_gym.rewards import RayRewardModel

    with pytest.raises(TypeError, match="a live model is never shipped"):
        RayRewardModel(object())
    with pytest.raises(ValueError, match="num_actors must be an int >= 1, got 0"):
        RayRewardModel(str(tmp_path), num_actors=0)
    with pytest.raises(OSError, match="could not load .*no config.json"):
        RayRewardModel(str(tmp_path), num_cpus=0)
    # a placement no machine offers: said at once, and no endless wait
    from llm_gym.rewards.ray import offered

    assert offered({"CPU": 2}) and not offered({"CPU": 1, "GPU": 1})
    with pytest.warns(UserWarning, match="no machine of the Ray cluster offers"):
        with pytest.raises(TimeoutError, match="did not start within 1 s"):
            RayRewardModel(str(tmp_path), num_cpus=0, num_gpus=1, start_timeout=1)


# ----------------------------------------------------------------------- sweeps


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "curves.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@needs_ray
@pytest.mark.slow
def test_a_sweep_on_ray_with_jobs_and_sequentially_writes_identical_curves(cluster, tmp_path):
    options = {"progress": False, "smoothing": 1, "fidelity": False}
    with one_thread():  # the workers' setting
        run_compare(TINY, tmp_path / "serial", **options)
    run_compare(TINY, tmp_path / "jobs", jobs=2, **options)
    run_compare(TINY, tmp_path / "ray", backend=RayBackend(), **options)
    serial = _rows(tmp_path / "serial")
    assert [r["method"] for r in serial] == ["sparse", "sparse", "abc", "abc"]
    assert _rows(tmp_path / "jobs") == serial
    assert _rows(tmp_path / "ray") == serial
    assert (tmp_path / "ray" / "logs" / "abc_seed0.log").read_text().startswith("== abc seed 0")
    assert (tmp_path / "ray" / "tb" / "abc_seed0").is_dir()
    # the reward model on a shared actor (each call scored as sent) changes nothing
    run_compare(
        TINY,
        tmp_path / "ray_rm",
        backend=RayBackend(),
        reward_model_on_ray={"num_cpus": 0},
        **options,
    )
    assert _rows(tmp_path / "ray_rm") == serial


def _fake_rows(method, seed, preset):
    return [
        {"method": method, "seed": seed, "update": u, "score": float(u), "kl": 0.0, "seconds": 0.1}
        for u in range(preset.updates)
    ]


def _faulty_run(method, seed, preset, out_dir, threads=None, **kwargs):
    """sparse: its worker dies on the first attempt; abc raises; uniform's worker always dies."""
    attempts = Path(out_dir) / f"attempts_{method}"
    with open(attempts, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    if method == "abc":
        raise ValueError("abc is broken")
    if method == "uniform" or len(attempts.read_text().split()) == 1:
        os._exit(1)
    return _fake_rows(method, seed, preset)


def _good_run(method, seed, preset, out_dir, threads=None, **kwargs):
    return _fake_rows(method, seed, preset)


@needs_ray
def test_ray_retries_dead_workers_and_reports_runs_that_keep_failing(
    cluster, tmp_path, monkeypatch
):
    preset = ComparePreset(methods=("sparse", "abc", "uniform"), seeds=1, updates=2)
    monkeypatch.setattr(runs, "run_one", _faulty_run)
    with pytest.raises(RunsFailed) as failed:
        run_compare(preset, tmp_path, progress=False, fidelity=False, backend=RayBackend(retries=1))
    message = str(failed.value)
    assert message.startswith("2 of 3 runs failed, the others are recorded")
    assert "abc seed 0: ValueError: abc is broken" in message
    assert "uniform seed 0: WorkerCrashedError after 2 attempts" in message
    assert len((tmp_path / "attempts_sparse").read_text().split()) == 2  # died, retried
    assert len((tmp_path / "attempts_uniform").read_text().split()) == 2  # retries=1
    assert len((tmp_path / "attempts_abc").read_text().split()) == 1  # an exception: no retry
    assert {r["method"] for r in _rows(tmp_path)} == {"sparse"}
    assert "ValueError: abc is broken" in (tmp_path / "logs" / "abc_seed0.log").read_text()
    # the folder resumes on another backend: only the failed runs train
    trained = []

    def good(method, seed, preset, out_dir, threads=None, **kwargs):
        trained.append(method)
        return _fake_rows(method, seed, preset)

    monkeypatch.setattr(runs, "run_one", good)
    run_compare(preset, tmp_path, progress=False, fidelity=False, backend=SequentialBackend())
    assert sorted(trained) == ["abc", "uniform"]
    assert [r["method"] for r in _rows(tmp_path)] == ["sparse"] * 2 + ["abc"] * 2 + ["uniform"] * 2


def _slow_run(method, seed, preset, out_dir, threads=None, **kwargs):
    if method == "abc":
        (Path(out_dir) / "abc_pid").write_text(str(os.getpid()))
        time.sleep(300)
    return _fake_rows(method, seed, preset)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_ray
def test_an_interrupt_cancels_the_running_tasks_and_leaves_the_folder_resumable(
    cluster, tmp_path, monkeypatch
):
    monkeypatch.setattr(runs, "run_one", _slow_run)
    wait = cluster.wait

    def wait_interrupted_once_abc_runs_and_sparse_is_recorded(*args, **kwargs):
        # Ctrl-C arrives while the driver waits on its runs (where it spends its time);
        # raised here, not by a signal from a thread, so that where it lands is certain
        if (tmp_path / "abc_pid").exists() and (tmp_path / "curves.csv").exists():
            raise KeyboardInterrupt
        return wait(*args, **kwargs)

    monkeypatch.setattr(cluster, "wait", wait_interrupted_once_abc_runs_and_sparse_is_recorded)
    with pytest.raises(KeyboardInterrupt):
        run_compare(TINY, tmp_path, progress=False, fidelity=False, backend=RayBackend())
    monkeypatch.setattr(cluster, "wait", wait)
    pid = int((tmp_path / "abc_pid").read_text())
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the interrupted run's worker was not stopped"
    assert [r["method"] for r in _rows(tmp_path)] == ["sparse", "sparse"]
    monkeypatch.setattr(runs, "run_one", _good_run)
    run_compare(TINY, tmp_path, progress=False, fidelity=False, backend=RayBackend())
    assert [r["method"] for r in _rows(tmp_path)] == ["sparse"] * 2 + ["abc"] * 2


def _run_writing_logs(method, seed, preset, out_dir, threads=None, **kwargs):
    print("a warning from the run")
    events = Path(out_dir) / "tb" / f"{method}_seed{seed}" / "events.out"
    events.parent.mkdir(parents=True)
    events.write_bytes(b"tensorboard")
    return _fake_rows(method, seed, preset)


@needs_ray
def test_a_run_on_another_machine_sends_its_logs_back_with_its_rows(cluster, tmp_path):
    from llm_gym.experiments.backends import _train

    # as on a machine without the results folder: the run works in a temporary one
    outcome = _train(_run_writing_logs, "abc", 0, TINY, str(tmp_path), "another node", 1, {})
    assert list(tmp_path.iterdir()) == []
    assert outcome.error is None and len(outcome.rows) == TINY.updates
    assert outcome.files["tb/abc_seed0/events.out"] == b"tensorboard"
    assert b"a warning from the run" in outcome.files["logs/abc_seed0.log"]


# ------------------------------------------------------------- without a cluster


def test_importing_llm_gym_does_not_import_ray():
    code = (
        "import sys, llm_gym, llm_gym.rewards, llm_gym.experiments, llm_gym.cli\n"
        "import llm_gym.experiments.backends\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ray_flags_without_ray_say_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    for flags in (["--ray"], ["--reward-model-on-ray"]):
        with pytest.raises(SystemExit) as exited:
            cli_main(["compare", *flags, "--out", str(tmp_path / "out")])
        assert exited.value.code == 2
        assert 'pip install "llm-gym[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ImportError, match=r'pip install "llm-gym\[ray\]"'):
        from llm_gym.rewards import RayRewardModel

        RayRewardModel("some/model")


def test_bad_ray_settings_name_the_value(capsys):
    with pytest.raises(ValueError, match="cpus_per_run must be a number > 0, got 0"):
        RayBackend(cpus_per_run=0)
    with pytest.raises(ValueError, match="retries must be an int >= 0, got -1"):
        RayBackend(retries=-1)
    with pytest.raises(ValueError, match="pass jobs=2 or backend"):
        run_compare(TINY, "unused", jobs=2, backend=RayBackend())
    with pytest.raises(SystemExit):
        cli_main(["compare", "--ray-gpus-per-run", "1"])
    assert "--ray-gpus-per-run needs --ray" in capsys.readouterr().err


@pytest.mark.parametrize("merge_calls", [True, False])
def test_the_actor_merges_calls_that_wait_for_a_forward(tmp_path, merge_calls):
    # the actor's class itself, without Ray: calls waiting together share one forward
    import asyncio

    from llm_gym.rewards.ray import RewardModelServer

    local = build_reward_model("bert", tmp_path, bert_tokenizer())
    server = RewardModelServer(
        str(tmp_path), {"pooling": "first", "device": "cpu"}, 1, merge_calls, max_batch=10
    )
    batches = [random_batch(bert_tokenizer(), 4, seed=s) for s in range(4)]
    request = AttentionRequest()

    async def callers():
        return await asyncio.gather(
            *(
                server.score("k", bert_tokenizer(), b.prompt_ids, b.completion_ids, request)
                for b in batches
            )
        )

    with one_thread():
        results = asyncio.run(callers())
        # 4 calls of 4 pairs; at most 10 pairs a forward: 2 forwards merged, else 4
        assert server.stats()["forwards"] == (2 if merge_calls else 4)
        for batch, (scores, attention) in zip(batches, results, strict=True):
            expected = local(batch, request)
            if merge_calls:
                np.testing.assert_allclose(scores, expected.scores, atol=1e-5)
            else:  # each call as sent: bit for bit a local call
                assert_same_output(expected, type(expected)(scores, attention))
    assert asyncio.run(server.score("unknown", None, [], [], None)) is None  # "send your tokenizer"
