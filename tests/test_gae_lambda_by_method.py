"""A method's own GAE lambda in a comparison: ``gae_lambda_by_method`` / ``--gae-lambda-by-method``."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from agents_world import command_line_preset, one_thread  # noqa: F401  (fixture)

from llm_gym.experiments.compare import ComparePreset, make_agent, run_compare, run_one

TINY = ComparePreset(n_envs=2, max_new_tokens=4, updates=2)


def test_each_method_gets_its_own_lambda_and_the_rest_the_common_one():
    preset = replace(TINY, gae_lambda_by_method={"sparse": 1.0})
    sparse, dense = make_agent("sparse", 0, preset), make_agent("abc-centred", 0, preset)
    assert (sparse.gae_lambda, sparse.rollout_buffer.gae_lambda) == (1.0, 1.0)
    assert (dense.gae_lambda, dense.rollout_buffer.gae_lambda) == (0.95, 0.95)


@pytest.mark.usefixtures("one_thread")
def test_a_method_at_its_own_lambda_runs_as_at_that_common_lambda(tmp_path):
    def run(preset, out):  # wall times aside
        return [
            {k: v for k, v in row.items() if k != "seconds"}
            for row in run_one("sparse", 0, preset, out)
        ]

    by_method = run(replace(TINY, gae_lambda_by_method={"sparse": 1.0}), tmp_path)
    common = run(replace(TINY, gae_lambda=1.0), tmp_path / "common")
    as_before = run(TINY, tmp_path / "before")
    assert by_method == common
    # lambda reaches the update: at 0.95 the second rollout, after one update, differs
    assert by_method[0] == as_before[0] and by_method[1] != as_before[1]


def test_the_map_is_a_run_setting_and_old_folders_resume(tmp_path, monkeypatch):
    import llm_gym.experiments.runs as runs

    calls: list[tuple[str, int]] = []

    def fake_run(method, seed, preset, out_dir, threads=None):
        calls.append((method, seed))
        return [
            {"method": method, "seed": seed, "update": 0, "score": 1.0, "kl": 0.0, "length": 4.0}
        ]

    monkeypatch.setattr(runs, "run_one", fake_run)
    preset = ComparePreset(methods=("sparse",), seeds=1, updates=1)
    run_compare(preset, tmp_path, progress=False, smoothing=1, fidelity=False)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["gae_lambda_by_method"] == {}
    del config["gae_lambda_by_method"]  # as written before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    calls.clear()
    run_compare(preset, tmp_path, progress=False, smoothing=1, fidelity=False)
    assert calls == []  # the folder's runs had every method at gae_lambda: resumed
    with pytest.raises(
        ValueError, match=r"gae_lambda_by_method: \{\} there, \{'sparse': 1.0\} now"
    ):
        run_compare(replace(preset, gae_lambda_by_method={"sparse": 1}), tmp_path, progress=False)
    assert calls == []


def test_the_summary_names_the_lambdas(tmp_path, monkeypatch):
    import llm_gym.experiments.runs as runs

    def fake_run(method, seed, preset, out_dir, threads=None):
        return [
            {
                "method": method,
                "seed": seed,
                "update": u,
                "score": float(u),
                "kl": 0.0,
                "length": 4.0,
            }
            for u in range(3)
        ]

    monkeypatch.setattr(runs, "run_one", fake_run)
    preset = ComparePreset(
        methods=("sparse", "abc"), seeds=1, updates=3, gae_lambda_by_method={"sparse": 1.0}
    )
    summary = run_compare(preset, tmp_path, progress=False, smoothing=1, fidelity=False)
    assert "GAE lambda per method: sparse 1; every other method 0.95." in summary


def test_from_the_command_line(tmp_path, monkeypatch):
    argv = ["--gae-lambda-by-method", "sparse=1.0", "pbrs=0.9", "--out", str(tmp_path)]
    preset = command_line_preset(argv, monkeypatch)
    assert preset.gae_lambda_by_method == {"pbrs": 0.9, "sparse": 1.0}
    assert (preset.gae_lambda_of("sparse"), preset.gae_lambda_of("abc")) == (1.0, 0.95)
    assert command_line_preset(["--out", str(tmp_path)], monkeypatch).gae_lambda_by_method == {}


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["--gae-lambda-by-method", "sparse"],
            r"expected METHOD=LAMBDA such as sparse=1.0, got 'sparse'",
        ),
        (["--gae-lambda-by-method", "sparse=high"], r"got 'sparse=high'"),
        (
            ["--gae-lambda-by-method", "sparse=1", "sparse=0.9"],
            r"names \['sparse'\] more than once",
        ),
    ],
)
def test_bad_command_lines_are_named(argv, match, tmp_path, capsys):
    from llm_gym.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["compare", *argv, "--out", str(tmp_path)])
    assert re.search(match, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"gae_lambda_by_method": {"sparse": 1.5}},
            r"gae_lambda_by_method\['sparse'\] must be a number in \[0, 1\], got 1.5",
        ),
        ({"gae_lambda_by_method": {"sprase": 1.0}}, r"names unknown methods \['sprase'\]"),
        ({"gae_lambda_by_method": [("sparse", 1.0)]}, r"must be a dict of method name to lambda"),
        (
            {"gae_lambda_by_method": {"sparse": 1.0}, "agent": "rloo"},
            r"sets TokenPPO's GAE lambda; agent 'rloo' has no critic",
        ),
    ],
)
def test_bad_maps_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        ComparePreset(**options)
