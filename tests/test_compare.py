"""`llm-gym compare` plumbing on a tiny budget: files, CSV, table, plot."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from llm_gym.cli import main as cli_main
from llm_gym.experiments.compare import ComparePreset, make_method_env, run_compare
from llm_gym.experiments.summary import load_curves, summarise


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
    for name in ("curves.csv", "curves.png", "summary.md"):
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
    }
    with pytest.raises(ValueError, match="unknown method 'dense'"):
        make_method_env("dense", preset)
    first_layer = make_method_env("abc@0", ComparePreset(reward_model="deep", max_new_tokens=3))
    assert first_layer.unwrapped.attention_request.layers == (0,)
    with pytest.raises(ValueError, match=r"expected abc@<layer>"):
        make_method_env("abc@first", preset)


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
