"""`llm-gym compare` plumbing on a tiny budget: files, CSV, table, plot."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

from llm_gym.cli import main as cli_main
from llm_gym.experiments.compare import (
    METHODS,
    ComparePreset,
    Method,
    MethodFamily,
    check_methods,
    credit_fidelity_table,
    make_agent,
    make_method_env,
    registry,
    run_compare,
)
from llm_gym.experiments.summary import kl_matched_table, load_curves, summarise


@pytest.mark.slow
def test_compare_writes_curves_plot_and_summary(tmp_path):
    preset = ComparePreset(
        methods=("sparse", "oracle", "abc"),
        seeds=1,
        updates=3,
        n_envs=2,
        max_new_tokens=4,
        batch_size=8,
        fidelity_completions=8,
    )
    summary = run_compare(preset, tmp_path, progress=False, smoothing=1)
    for name in ("curves.csv", "curves.png", "kl_frontier.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert any((tmp_path / "tb").rglob("events.out.tfevents*"))
    with open(tmp_path / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["method"] for r in rows} == {"sparse", "oracle", "abc"}
    assert len(rows) == 3 * 3 and all(np.isfinite(float(r["score"])) for r in rows)
    assert [int(r["update"]) for r in rows if r["method"] == "abc"] == [0, 1, 2]
    # the table in summary.md is the one computed from the CSV
    threshold, summaries = summarise(load_curves(tmp_path / "curves.csv"), smoothing=1)
    assert f"= {threshold:.3f}" in summary
    for s in summaries:
        assert f"| {s.method} | 1 | {s.final:.3f} | {s.best:.3f} | {s.mean:.3f} " in summary
    assert "## Credit fidelity" in summary and "| oracle | " in summary
    assert "| abc | " in summary.split("KL per completion")[1]  # the KL / length table
    # the KL-matched table too, with budgets of a third, two thirds and all of the KL target
    matched = kl_matched_table(
        load_curves(tmp_path / "curves.csv"),
        load_curves(tmp_path / "curves.csv", column="kl"),
        budgets=(2.0, 4.0, 6.0),
        smoothing=1,
    )
    assert "| method | best score at KL <= 2 nats |" in matched and matched in summary


def test_every_method_builds_its_wrapper():
    preset = ComparePreset(max_new_tokens=3)
    names = {m: type(make_method_env(m, preset)).__name__ for m in preset.methods}
    assert names == {
        "oracle": "RelevanceCredit",
        "sparse": "SparseReward",
        "abc": "AttentionCredit",
        "uniform": "UniformCredit",
        "abcd": "GeneratorAttentionCredit",
        "pbrs": "PotentialShaping",
        "abc-centred": "AttentionCredit",
    }
    assert make_method_env("abc-centred", preset).baseline.running
    assert not make_method_env("abc", preset).baseline.running
    with pytest.raises(ValueError, match="unknown method 'dense'"):
        make_method_env("dense", preset)
    first_layer = make_method_env("abc@0", ComparePreset(reward_model="deep", max_new_tokens=3))
    assert first_layer.request.layers == (0,)
    with pytest.raises(ValueError, match=r"expected abc@<layer>"):
        make_method_env("abc@first", preset)


def test_centred_variants_are_registry_entries():
    preset = ComparePreset(max_new_tokens=3)
    for name, wrapper in (
        ("oracle-centred", "RelevanceCredit"),
        ("uniform-centred", "UniformCredit"),
    ):
        env = make_method_env(name, preset)
        assert type(env).__name__ == wrapper and env.baseline.running
        assert name not in METHODS  # opt-in: the default presets run what they ran
    with pytest.raises(ValueError, match="'oracle-centred' needs the embedded tokenizer"):
        check_methods(["oracle-centred"], ComparePreset(tokenizer="some/tokenizer"))


def _compare_help(capsys) -> str:
    with pytest.raises(SystemExit):
        cli_main(["compare", "--help"])
    return capsys.readouterr().out


def test_one_registry_entry_reaches_the_help_validation_env_and_fidelity_table(capsys):
    registry.register(
        Method(
            "throwaway",
            "llm_gym.wrappers:UniformCredit",
            lambda preset: {"baseline": 0.25},
            help="a test's own method",
            credit_map=lambda preset: ("throwaway map", "uniform"),
            by_default=False,
        )
    )
    try:
        help_text = _compare_help(capsys)
        assert "throwaway" in help_text and "a test's own method" in help_text
        check_methods(["sparse", "throwaway"])
        env = make_method_env("throwaway", ComparePreset(max_new_tokens=3))
        assert type(env).__name__ == "UniformCredit" and env.baseline.value == 0.25
        preset = ComparePreset(max_new_tokens=3)
        table = credit_fidelity_table(preset, ["sparse", "throwaway"], n=4).splitlines()
        assert len(table) == 3 and table[2].startswith("| throwaway map | ")  # sparse: no map
    finally:
        registry.unregister("throwaway")
    assert "throwaway" not in _compare_help(capsys)
    with pytest.raises(ValueError, match=r"unknown methods \['throwaway'\]"):
        check_methods(["throwaway"])
    with pytest.raises(SystemExit):
        cli_main(["compare", "--rewards", "throwaway", "--out", "unused"])
    assert "argument --rewards: unknown method 'throwaway'" in capsys.readouterr().err


def test_the_fidelity_table_has_one_row_per_credit_map():
    preset = ComparePreset(max_new_tokens=3)
    table = credit_fidelity_table(preset, ["abc", "abc-centred", "abc@-1", "uniform-centred"], n=4)
    labels = [line.split(" | ")[0] for line in table.splitlines()[2:]]
    assert labels == ["| abc (layers (-1,))", "| uniform"]


def test_registry_refuses_taken_and_unknown_names():
    with pytest.raises(ValueError, match="method 'abc' is already registered"):
        registry.register(Method("abc", "llm_gym.wrappers:SparseReward"))
    with pytest.raises(ValueError, match="'abc@<layers>' is already registered"):
        registry.register(MethodFamily("abc", "layers", lambda name: registry.lookup("abc")))
    with pytest.raises(ValueError, match="has an '@'"):
        registry.register(Method("abc@9", "llm_gym.wrappers:SparseReward"))
    with pytest.raises(ValueError, match="no method 'dense' to unregister"):
        registry.unregister("dense")
    with pytest.raises(ValueError, match=r"method 'abc@': expected abc@<layers>"):
        registry.lookup("abc@")


def test_summarise_merges_csvs_without_training(tmp_path, capsys):
    for part, seed in (("a", 0), ("b", 1)):
        rows = ["method,seed,update,score"] + [
            f"{m},{seed},{u},{u * (2 if m == 'abc' else 1)}"
            for m in ("sparse", "abc")
            for u in range(5)
        ]
        (tmp_path / f"{part}.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "merged"
    cli_main(
        [
            "compare",
            "--summarise",
            str(tmp_path / "a.csv"),
            str(tmp_path / "b.csv"),
            "--no-fidelity",
            "--smoothing",
            "1",
            "--out",
            str(out),
        ]
    )
    summary = (out / "summary.md").read_text()
    assert "| abc | 2 |" in summary and "| sparse | 2 |" in summary
    assert (out / "curves.png").exists()


def _fake_run(calls):
    def run_one(method, seed, preset, out_dir, threads=None):
        calls.append((method, seed))
        return [
            {"method": method, "seed": seed, "update": u, "score": float(u + seed), "kl": 0.0}
            for u in range(preset.updates)
        ]

    return run_one


def test_compare_resumes_and_only_trains_missing_runs(tmp_path, monkeypatch):
    import llm_gym.experiments.runs as runs

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(runs, "run_one", _fake_run(calls))
    preset = ComparePreset(methods=("sparse", "abc"), seeds=2, updates=3)
    run_compare(preset, tmp_path, progress=False, smoothing=1, fidelity=False)
    assert calls == [("sparse", 0), ("abc", 0), ("sparse", 1), ("abc", 1)]

    # same settings, one more method and seed: only the new runs train
    calls.clear()
    wider = replace(preset, methods=("sparse", "abc", "uniform"), seeds=3)
    run_compare(wider, tmp_path, progress=False, smoothing=1, fidelity=False)
    assert sorted(calls) == sorted(
        [("uniform", 0), ("uniform", 1), ("sparse", 2), ("abc", 2), ("uniform", 2)]
    )
    rows = list(csv.DictReader(open(tmp_path / "curves.csv", newline="")))
    assert len(rows) == 9 * 3
    keys = [(r["method"], int(r["seed"]), int(r["update"])) for r in rows]
    assert len(set(keys)) == len(keys)  # nothing trained twice
    # rows are ordered by seed, then method as listed, then update
    assert [k[:2] for k in keys[::3]][:3] == [("sparse", 0), ("abc", 0), ("uniform", 0)]

    # other run settings would mix incomparable runs: refused, naming the field
    calls.clear()
    with pytest.raises(ValueError, match=r"learning_rate: 3e-05 there, 0.0001 now"):
        run_compare(replace(preset, learning_rate=1e-4), tmp_path, progress=False)
    assert calls == []
    assert len(list(csv.DictReader(open(tmp_path / "curves.csv", newline="")))) == 27


def test_compare_resumes_a_folder_written_before_a_setting_existed(tmp_path, monkeypatch):
    import json

    import llm_gym.experiments.runs as runs

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(runs, "run_one", _fake_run(calls))
    preset = ComparePreset(methods=("sparse",), seeds=1, updates=2)
    run_compare(preset, tmp_path, progress=False, smoothing=1, fidelity=False)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["kl_horizon"]  # as written before kl_horizon was a setting
    (tmp_path / "config.json").write_text(json.dumps(config))

    # the missing setting held its default then: same runs, nothing retrained
    calls.clear()
    run_compare(preset, tmp_path, progress=False, smoothing=1, fidelity=False)
    assert calls == []
    assert json.loads((tmp_path / "config.json").read_text())["kl_horizon"] == 10_000
    with pytest.raises(ValueError, match="kl_horizon: 10000 there, 2000 now"):
        run_compare(replace(preset, kl_horizon=2000), tmp_path, progress=False)
    assert calls == []


def test_make_agent_uses_the_presets_kl_controller():
    agent = make_agent("sparse", 0, ComparePreset(n_envs=2, max_new_tokens=4, kl_horizon=500))
    assert (agent.kl.target, agent.kl.horizon) == (6.0, 500)


def test_compare_refuses_a_folder_of_unknown_runs(tmp_path, monkeypatch):
    import llm_gym.experiments.runs as runs

    monkeypatch.setattr(runs, "run_one", _fake_run([]))
    (tmp_path / "curves.csv").write_text("method,seed,update,score\nsparse,0,0,1.0\n")
    with pytest.raises(ValueError, match="config.json does not"):
        run_compare(ComparePreset(updates=2), tmp_path, progress=False)


@pytest.mark.slow
def test_parallel_jobs_train_the_same_runs_as_one_process(tmp_path):
    import torch

    preset = ComparePreset(
        methods=("sparse", "abc"), seeds=1, updates=2, n_envs=2, max_new_tokens=4, batch_size=8
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting
    try:
        run_compare(preset, tmp_path / "serial", progress=False, smoothing=1, fidelity=False)
    finally:
        torch.set_num_threads(threads)
    run_compare(preset, tmp_path / "jobs", progress=False, smoothing=1, fidelity=False, jobs=2)
    serial, parallel = (
        list(csv.DictReader(open(tmp_path / name / "curves.csv", newline="")))
        for name in ("serial", "jobs")
    )
    assert [r["method"] for r in parallel] == ["sparse", "sparse", "abc", "abc"]
    for a, b in zip(serial, parallel, strict=True):
        assert a["method"] == b["method"] and a["update"] == b["update"]
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-5)


def test_compare_rejects_bad_jobs_and_oracle_without_the_embedded_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="jobs must be >= 1, got 0"):
        run_compare(ComparePreset(), tmp_path, jobs=0)
    with pytest.raises(ValueError, match="'oracle' needs the embedded tokenizer"):
        run_compare(ComparePreset(tokenizer="some/tokenizer"), tmp_path)


@pytest.mark.slow
def test_compare_trains_a_users_own_policy_tokenizer_rm_and_prompts(
    tmp_path, tiny_gpt2_rm, word_tok_dir
):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm_gym.rewards.loading import load_tokenizer

    tok = load_tokenizer(word_tok_dir)
    torch.manual_seed(0)
    policy_dir = tmp_path / "policy"
    config = GPT2Config(vocab_size=len(tok) + 3, n_positions=64, n_embd=32, n_layer=1, n_head=4)
    GPT2LMHeadModel(config).save_pretrained(policy_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the film was\n\na movie\n")
    out = tmp_path / "out"
    cli_main(
        [
            "compare",
            "--rewards",
            "sparse",
            "abc",
            "abcd",
            "--seeds",
            "1",
            "--updates",
            "2",
            "--batch",
            "2",
            "--new-tokens",
            "3",
            "--policy",
            str(policy_dir),
            "--tokenizer",
            word_tok_dir,
            "--reward-model",
            tiny_gpt2_rm,
            "--prompts",
            str(prompts),
            "--smoothing",
            "1",
            "--out",
            str(out),
        ]
    )
    rows = list(csv.DictReader(open(out / "curves.csv", newline="")))
    assert {r["method"] for r in rows} == {"sparse", "abc", "abcd"} and len(rows) == 6
    assert all(float(r["length"]) == 3 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "skipped: the per-token relevance" in summary
    # the policy's padded vocabulary is the action space
    env = make_method_env(
        "sparse",
        ComparePreset(
            policy=str(policy_dir),
            tokenizer=word_tok_dir,
            reward_model=tiny_gpt2_rm,
            prompts=str(prompts),
            max_new_tokens=3,
        ),
    )
    assert env.action_space.n == len(tok) + 3
    assert env.unwrapped.task.prompt_texts == ["the film was", "a movie"]


def test_report_lists_methods_in_the_order_asked(tmp_path, monkeypatch):
    import llm_gym.experiments.runs as runs

    monkeypatch.setattr(runs, "run_one", _fake_run([]))
    preset = ComparePreset(methods=("sparse", "abc"), seeds=2, updates=3)
    run_compare(preset, tmp_path, progress=False, smoothing=1, fidelity=False)
    # a later call adds a method and asks for another order: tables and CSV follow it
    later = replace(preset, methods=("uniform", "abc", "sparse"))
    summary = run_compare(later, tmp_path, progress=False, smoothing=1, fidelity=False)
    table = summary.split("| method | seeds |")[1].split("\n\n")[0]
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
        "| uniform",
        "| abc",
        "| sparse",
    ]
    rows = list(csv.DictReader(open(tmp_path / "curves.csv", newline="")))
    assert [r["method"] for r in rows[::3]] == ["uniform", "abc", "sparse"] * 2


def test_group_agents_train_on_grouped_vector_envs_with_the_method_options():
    from llm_gym.agents import TokenGRPO, TokenRLOO
    from llm_gym.experiments.runs import make_agent

    preset = ComparePreset(agent="rloo", max_new_tokens=3, n_envs=4, group_size=2)
    model = make_agent("abc-group", 0, preset)
    assert isinstance(model, TokenRLOO) and model.estimator == "group_centred"
    assert model.get_env().env.unwrapped.group_size == 2
    assert isinstance(make_agent("pbrs", 0, replace(preset, agent="grpo")), TokenGRPO)
    assert "abcd" not in ComparePreset(agent="rloo").methods  # no vector form
    with pytest.raises(ValueError, match=r"methods \['abcd'\] do not run with --agent rloo"):
        ComparePreset(agent="rloo", methods=("sparse", "abcd"))
    with pytest.raises(ValueError, match=r"methods \['abc-group'\] do not run with --agent ppo"):
        ComparePreset(methods=("sparse", "abc-group"))
    with pytest.raises(ValueError, match=r"n_envs=6 .* not a multiple of group_size=4"):
        ComparePreset(agent="grpo", n_envs=6)
