"""The credit benchmark: task rules with exact per-token truth, their models, their oracles, --suite."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import world_folder

import llm_gym  # noqa: F401  (registers LLMCompletion-v0)
from llm_gym import assets
from llm_gym.assets.build import BuildConfig
from llm_gym.assets.build.tasks import build_task, openings
from llm_gym.assets.rules import (
    CHARACTER_WORDS,
    RULES,
    FittingPlaceRule,
    ProtagonistRule,
    ShortWordsRule,
    rule_words,
)
from llm_gym.assets.world import generate_corpus
from llm_gym.experiments.methods import registry, task_contributions, task_relevance
from llm_gym.experiments.presets import ComparePreset, env_options
from llm_gym.experiments.statistics import interval_estimates, load_task
from llm_gym.rewards import CompletionBatch
from llm_gym.rewards.loading import load_tokenizer

TOKENIZER = load_tokenizer(str(assets.TOKENIZER_DIR))
NEW_TASKS = ("decisive", "diffuse", "interaction")


def ids(text: str) -> np.ndarray:
    return np.asarray(TOKENIZER(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


# ------------------------------------------------------------------ the rules


@pytest.mark.parametrize("task", NEW_TASKS)
def test_rule_terms_sum_to_the_score_on_the_corpus(task):
    rule = RULES[task]
    texts = generate_corpus(200, seed=3)
    scores = rule.scores(texts)
    sums = [rule.word_terms(t.split()).sum() for t in texts]
    np.testing.assert_allclose(sums, scores)
    assert np.std(scores) > 0.3  # the rule tells the corpus's texts apart


def test_protagonist_rule_by_hand():
    rule = ProtagonistRule()
    # the first character decides, later ones do not; beyond the window nothing counts
    words = "we see a nurse and a boy in a hotel .".split()
    terms = rule.word_terms(words)
    assert terms[words.index("nurse")] == 2.0 and terms.sum() == 2.0
    assert rule.score("then two sisters meet a chef") == -2.0
    late = " ".join(["the movie runs for two hours ."] * 3) + " a chef"
    assert len(late.split()) > 16 and rule.score(late) == 0.0


def test_short_words_rule_by_hand():
    rule = ShortWordsRule(scale=12.0, longest_short=3)
    words = "the acting was superb <eos>".split()  # the, was short; acting, superb, <eos> long
    np.testing.assert_allclose(rule.word_terms(words), 12.0 / 5 * np.array([1, -1, 1, -1, -1]))
    # every term has the same size: the magnitude of the truth is uniform
    assert len(set(np.abs(rule.word_terms(words)).round(12))) == 1


def test_fitting_place_rule_pairs_by_hand():
    rule = FittingPlaceRule(scale=6.0, misfit=-0.5)
    words = "a sailor leaves a ship . a farmer visits a hospital with a boy .".split()
    # every character with a domain against every place; the boy has none
    assert rule.pairs(words) == [(1, 4, 1.0), (1, 10, -0.5), (7, 4, -0.5), (7, 10, -0.5)]
    share = 6.0 * np.array([1.0, -0.5, -0.5, -0.5]) / 4  # 6 x the mean fit, pair by pair
    expected = np.zeros(len(words))
    for (c, p, _), value in zip(rule.pairs(words), share):
        expected[[c, p]] += value / 2  # each pair's share split between its two words
    np.testing.assert_allclose(rule.word_terms(words), expected)
    assert rule.score(" ".join(words)) == pytest.approx(-0.75)
    # the same place scores by the characters around it: no single word carries the credit
    assert rule.score("a doctor works in a hospital .") == 6.0
    assert rule.score("a pilot works in a hospital .") == -3.0
    assert rule.score("a boy works in a hospital .") == 0.0
    assert rule.score("a hospital with a doctor") == 6.0  # pairs, in either order


def test_rule_words_read_the_embedded_tokenizer():
    text = "the story begins when a chef visits the coast ."
    assert rule_words(ids(text)) == text.split()


@pytest.mark.parametrize("task", NEW_TASKS)
def test_task_oracles_are_the_rule_terms_of_the_completion(task):
    rule = RULES[task]
    prompt, completion = "a doctor visits", "a hospital . we see a boy in a ship ."
    p, c = ids(prompt), ids(completion)
    terms = rule.word_terms(f"{prompt} {completion}".split())
    np.testing.assert_allclose(task_relevance(task)(p, c), np.abs(terms[len(p) :]))
    batch = CompletionBatch([p], [c], TOKENIZER)
    np.testing.assert_allclose(task_contributions(task)(batch)[0], terms[len(p) :])


def test_sentiment_tasks_keep_their_oracles():
    from llm_gym.assets.contributions import world_contributions
    from llm_gym.experiments.methods import relevance_of

    assert task_relevance("default") is relevance_of
    assert task_contributions("paper") is world_contributions


# ------------------------------------------------------------ tasks and models


@pytest.mark.parametrize("task", NEW_TASKS)
def test_gym_make_task_reads_its_own_reward_model(task):
    env = gym.make("LLMCompletion-v0", task=task)
    rm = env.unwrapped.task.reward_model
    assert Path(rm.model.name_or_path).name == f"rm_{task}"
    obs, info = env.reset(seed=0)
    if task == "decisive":  # its prompts name no character: the completion names the first
        assert not any(w in CHARACTER_WORDS for w in rule_words(info["prompt_ids"]))
    env.close()
    assert Path(
        gym.make("LLMCompletion-v0").unwrapped.task.reward_model.model.name_or_path
    ).name == ("rm_default")


@pytest.mark.parametrize("task", [*NEW_TASKS, "long"])
def test_task_reward_models_learned_their_rules(task):
    report = json.loads((assets.ASSET_DIR / "tasks_report.json").read_text())
    assert sorted(report) == sorted([*NEW_TASKS, "long"])
    assert (assets.ASSET_DIR / "TASKS.md").read_text().count("| layer_0 |") == len(report)
    r = report[task]
    assert r["held_out_pearson_rule"] >= 0.8
    assert r["policy_samples_pearson_rule"] >= 0.7
    assert r["build_seconds"] < 15 * 60


def test_bundled_openings_name_no_character():
    bundled = assets.load_prompts("openings")
    assert bundled == openings(assets.load_prompts("reviews")) and len(bundled) > 100


def test_compare_preset_reads_the_tasks_reward_model_and_old_folders_resume():
    assert env_options(ComparePreset(task="interaction"))["reward_model"] == "interaction"
    assert env_options(ComparePreset())["reward_model"] == "default"
    named = ComparePreset(task="decisive", reward_model="deep")
    assert env_options(named)["reward_model"] == "deep"
    from llm_gym.experiments.runs import _run_config

    # the stored settings of a sentiment folder read as before tasks had their own models
    stored = json.loads(
        (Path(__file__).parents[1] / "results/compare_default/config.json").read_text()
    )
    assert _run_config(ComparePreset())["reward_model"] == stored["reward_model"] == "default"


@pytest.mark.parametrize("method", ["oracle", "oracle-centred", "oracle-signed"])
def test_oracle_methods_on_a_task_spread_by_its_rule(method):
    preset = ComparePreset(task="interaction", n_envs=1)
    env = registry.lookup(method).wrap(gym.make("LLMCompletion-v0", **env_options(preset)), preset)
    env.reset(seed=1)
    env.action_space.seed(1)  # a fixed episode: unseeded actions at times pair nothing
    done = False
    while not done:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
    terms = RULES["interaction"].completion_terms(info["prompt_ids"], info["completion_ids"])
    assert np.abs(terms[:-1]).sum() > 0  # this episode pairs a character and a place
    rewards = np.asarray(info["token_rewards"])
    assert rewards.sum() == pytest.approx(info["score"])  # the return is preserved
    if method == "oracle-signed":
        # beta x the rule's signed terms, the residual (score - their sum) on the last token
        np.testing.assert_allclose(rewards[:-1], preset.beta * terms[:-1], atol=1e-9)
    else:
        # the score (or its deviation) spread by |term|: beta x the rule's normalised map
        weights = np.abs(terms) / np.abs(terms).sum()
        np.testing.assert_allclose(info["credit_map"][:-1], preset.beta * weights[:-1])
    env.close()


def test_task_build_is_deterministic_and_measured(tmp_path):
    cfg = BuildConfig(n_reviews=200, held_out=50, rm_steps=6, eval_completions=8, n_prompts=20)
    for name in ("a", "b"):
        world = tmp_path / name
        world_folder(world)
        report = build_task("decisive", world, cfg)
    a, b = (tmp_path / n / "rm_decisive" / "model.safetensors" for n in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    assert report["layers"] == 2 and report["task"] == "decisive"
    assert set(report["fidelity"]) == {"layer_0", "layer_1", "mean_of_layers", "uniform"}
    assert (tmp_path / "a" / "prompts_openings.json").exists()
    assert "decisive" in (tmp_path / "a" / "TASKS.md").read_text()
    with pytest.raises(ValueError, match="no credit-benchmark task 'nope'"):
        build_task("nope", tmp_path / "a", cfg)
    with pytest.raises(ValueError, match="has no tokenizer"):
        build_task("diffuse", tmp_path / "empty", cfg)


# ------------------------------------------------------------------- the suite


def _fake_run(calls):
    def run_one(method, seed, preset, out_dir, threads=None):
        calls.append((preset.task, method, seed))
        speed = {"sparse": 1.0, "oracle-centred": 2.0, "abc": 1.5}[method]
        speed *= {"default": 1.0, "diffuse": 0.5}[preset.task]
        cap = 12.0 if method == "oracle-centred" else 10.0
        return [
            {
                "method": method,
                "seed": seed,
                "update": u,
                "score": float(min(u * speed, cap) + 0.1 * seed),
                "kl": 0.0,
            }
            for u in range(preset.updates)
        ]

    return run_one


def test_suite_runs_every_task_and_method_and_aggregates(tmp_path, monkeypatch):
    import llm_gym.experiments.runs as runs
    from llm_gym.experiments.suite import run_suite

    calls: list[tuple[str, str, int]] = []
    monkeypatch.setattr(runs, "run_one", _fake_run(calls))
    preset = ComparePreset(methods=("sparse", "oracle-centred", "abc"), seeds=3, updates=30)
    options = {"reps": 200, "smoothing": 1, "progress": False, "fidelity": False}
    text = run_suite(preset, tmp_path, ("default", "diffuse"), **options)
    assert sorted(calls) == sorted(
        (t, m, s) for t in ("default", "diffuse") for m in preset.methods for s in range(3)
    )
    for task in ("default", "diffuse"):
        config = json.loads((tmp_path / task / "config.json").read_text())
        assert config["task"] == task
        assert config["reward_model"] == ("default" if task == "default" else "diffuse")
    assert (tmp_path / "ratios.png").stat().st_size > 0
    assert text == (tmp_path / "summary.md").read_text()
    # the aggregate is the statistics module's, over both tasks' curves, normalised by the
    # best method's best (the centred oracle's 12 + the mean seed offset 0.1), not sparse's
    # and with the threshold at the start (0.1) plus 90% of sparse's gain (10.1 - 0.1)
    tasks = [
        replace(
            load_task(tmp_path / t / "curves.csv", t, smoothing=1),
            best=12.1,
            threshold=9.1,
            from_start=True,
        )
        for t in ("default", "diffuse")
    ]
    assert [t.start for t in tasks] == pytest.approx([0.1, 0.1])
    estimates = {
        e.method: e
        for e in interval_estimates(tasks, ["sparse", "oracle-centred", "abc"], reps=200)
    }
    ratio = estimates["oracle-centred"].ratios["diffuse"][0]
    assert ratio.estimate == pytest.approx(0.5, abs=0.06)  # twice sparse's speed
    assert f"{ratio.estimate:.2f} [{ratio.low:.2f}, {ratio.high:.2f}]" in text
    assert str(estimates["abc"].iqm) in text

    # resumes: nothing retrained
    calls.clear()
    run_suite(preset, tmp_path, ("default", "diffuse"), **options)
    assert calls == []


def test_suite_checks_every_task_before_training(tmp_path, monkeypatch):
    import llm_gym.experiments.runs as runs
    from llm_gym.experiments.suite import run_suite

    calls: list = []
    monkeypatch.setattr(runs, "run_one", _fake_run(calls))
    preset = ComparePreset(methods=("sparse",), seeds=1, updates=2)
    # the second task is unknown: the first is not trained either
    with pytest.raises(ValueError, match="task must be one of .* got 'nowhere'"):
        run_suite(preset, tmp_path, ("default", "nowhere"), progress=False)
    assert calls == [] and not (tmp_path / "default").exists()
    with pytest.raises(ValueError, match="tasks is empty"):
        run_suite(preset, tmp_path, (), progress=False)


def test_cli_suite_flags_are_checked(capsys):
    from llm_gym.cli import main

    for argv, message in (
        (["compare", "--tasks", "diffuse"], "--tasks needs --suite"),
        (["compare", "--suite", "--task", "diffuse"], "drop --task"),
        (["compare", "--suite-report"], "--suite-report needs --suite"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_report_warns_when_sparse_barely_learns(tmp_path):
    from llm_gym.experiments.report import write_report
    from llm_gym.experiments.summary import load_curves, sparse_gain_share

    rows = ["method,seed,update,score,kl"]
    for seed in range(2):
        for u in range(20):
            rows.append(f"sparse,{seed},{u},{0.1 * (u % 2)},0.0")
            rows.append(f"oracle-centred,{seed},{u},{min(u, 10) / 5},0.0")
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    preset = ComparePreset(
        task="decisive", methods=("sparse", "oracle-centred"), seeds=2, updates=20
    )
    text = write_report(
        tmp_path / "out", preset, [tmp_path / "in.csv"], smoothing=1, fidelity=False
    )
    share = sparse_gain_share(load_curves(tmp_path / "out" / "curves.csv"), 1)
    assert share == pytest.approx(0.1 / 2.0)  # sparse's best 0.1 against the oracle's 2.0
    assert "Sparse barely learned here" in text and f"{share:.0%}" in text
    assert '"reward_model": "decisive"' in text  # the header names the model the runs read


def test_suite_report_leaves_out_a_task_nothing_learned(tmp_path):
    from llm_gym.experiments.suite import write_suite_report

    for task, slope in (("default", 0.1), ("decisive", 0.0)):
        rows = ["method,seed,update,score,kl"]
        for seed in range(2):
            for u in range(10):
                rows += [
                    f"{m},{seed},{u},{slope * u * k + 0.01 * seed},0.0"
                    for m, k in (("sparse", 1), ("abc", 2))
                ]
        (tmp_path / task).mkdir()
        (tmp_path / task / "curves.csv").write_text("\n".join(rows) + "\n")
    text = write_suite_report(tmp_path, ["default", "decisive"], reps=100, smoothing=1)
    assert "Left out: decisive" in text
    assert "ratio to sparse, default" in text and "ratio to sparse, decisive" not in text
    # a task not run yet is named and left out; the others' report stands
    partial = write_suite_report(tmp_path, ["default", "diffuse"], reps=100, smoothing=1)
    assert "Not run yet (no curves.csv): diffuse." in partial
    assert "ratio to sparse, default" in partial and "ratio to sparse, diffuse" not in partial
    with pytest.raises(ValueError, match=r"none of the tasks \['diffuse', 'long'\] has a curves"):
        write_suite_report(tmp_path, ["diffuse", "long"])


def _write_curves(folder: Path, runs: dict[tuple[str, int], np.ndarray]) -> None:
    rows = ["method,seed,update,score,kl"]
    for (method, seed), scores in runs.items():
        rows += [f"{method},{seed},{u},{x},0.0" for u, x in enumerate(scores)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "curves.csv").write_text("\n".join(rows) + "\n")


def test_suite_aggregate_covers_the_seeds_every_task_ran(tmp_path):
    from llm_gym.experiments.suite import write_suite_report

    rng = np.random.default_rng(0)

    def runs(seeds):
        return {
            (m, s): np.linspace(0, k, 10) + 0.1 * rng.standard_normal(10)
            for s in seeds
            for m, k in (("sparse", 1.0), ("abc", 2.0))
        }

    default = runs(range(4))
    # seed 3 of diffuse lacks abc, so only seeds 0-2 are complete there
    diffuse = {k: v for k, v in runs(range(4)).items() if k != ("abc", 3)}
    _write_curves(tmp_path / "all" / "default", default)
    _write_curves(tmp_path / "all" / "diffuse", diffuse)
    kept = {k: v for k, v in default.items() if k[1] < 3}
    _write_curves(tmp_path / "kept" / "default", kept)
    _write_curves(tmp_path / "kept" / "diffuse", {k: v for k, v in diffuse.items() if k[1] < 3})
    options = {"tasks": ["default", "diffuse"], "reps": 100, "smoothing": 1}
    text = write_suite_report(tmp_path / "all", **options)
    assert "seeds 0-2 (runs per method" in text
    assert "Left out here, so that every task weighs the same" in text
    assert "default seeds 3; diffuse seeds 3." in text
    # the aggregate is the one over the three common seeds alone
    reference = write_suite_report(tmp_path / "kept", **options)
    table = [line for line in text.splitlines() if line.startswith("| abc |")]
    assert table and table == [
        line for line in reference.splitlines() if line.startswith("| abc |")
    ]
    assert "Left out here" not in reference
    _write_curves(tmp_path / "none" / "default", {k: v for k, v in default.items() if k[1] == 0})
    _write_curves(tmp_path / "none" / "diffuse", {k: v for k, v in default.items() if k[1] == 1})
    with pytest.raises(ValueError, match=r"no seed was run by every method \['sparse', 'abc'\]"):
        write_suite_report(tmp_path / "none", **options)


def test_report_warns_when_sparse_best_is_below_zero(tmp_path):
    from llm_gym.experiments.report import write_report

    rows = ["method,seed,update,score,kl"]
    rows += [f"sparse,0,{u},{-1.0 + 0.05 * u},0.0" for u in range(10)]  # best -0.55
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    preset = ComparePreset(task="interaction", methods=("sparse",), seeds=1, updates=10)
    text = write_report(
        tmp_path / "out", preset, [tmp_path / "in.csv"], smoothing=1, fidelity=False
    )
    assert "Sparse's best (-0.550) is not above zero" in text


def test_ratios_from_the_start_work_for_scores_below_zero():
    from llm_gym.experiments.statistics import Task, threshold_ratio_interval
    from llm_gym.experiments.summary import Curves

    u = np.arange(20, dtype=float)
    curves = Curves(
        {
            "sparse": {s: np.minimum(-1.0 + 0.05 * u, -0.5) for s in range(3)},
            "dense": {s: np.minimum(-1.0 + 0.1 * u, -0.5) for s in range(3)},
        }
    )
    task = Task("t", curves, start=-1.0, best=-0.5, threshold=-0.55, smoothing=1)
    # 90% of a negative best lies above it: nothing reaches, no ratio
    assert threshold_ratio_interval(task, "dense", reps=50)[0] is None
    # from the start: -1 + 0.9 x 0.5 = -0.55, reached at update 9 (dense) and 9 / 0.5 (sparse)
    ratio, unreached = threshold_ratio_interval(replace(task, from_start=True), "dense", reps=50)
    assert ratio.estimate == pytest.approx(5 / 9) and unreached == 0
