"""The embedded default world: shipped files, measured figures, reproducible build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from llm_gym import assets
from llm_gym.assets.build import FIDELITY_BAR, BuildConfig, build_world
from llm_gym.assets.world import NEUTRAL_WORDS, SENTIMENT_WORDS, generate_corpus

REPORT = json.loads((assets.ASSET_DIR / "build_report.json").read_text())


def test_shipped_world_is_small_and_complete():
    files = [p for p in assets.ASSET_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    names = {p.relative_to(assets.ASSET_DIR).as_posix() for p in files}
    for required in (
        "tokenizer/tokenizer.json",
        "lm/model.safetensors",
        "rm_default/model.safetensors",
        "rm_deep/model.safetensors",
        "prompts_reviews.json",
        "token_valence.json",
        "MODEL_CARD.md",
    ):
        assert required in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # safetensors only
    assert sum(p.stat().st_size for p in files) < 20 * 2**20


def test_default_reward_model_meets_its_bars():
    default = REPORT["reward_models"]["default"]
    assert default["held_out_pearson_vader"] >= 0.9
    last = default["fidelity"]["layer_0"]
    for key, bar in FIDELITY_BAR.items():
        assert last[key] >= bar, key
    # the initial policy's completions score near neutral: room to learn
    assert abs(default["policy_samples_mean_score"]) < 0.5


def test_deep_reward_model_last_layer_is_less_faithful():
    deep = REPORT["reward_models"]["deep"]["fidelity"]
    last = deep[f"layer_{REPORT['reward_models']['deep']['layers'] - 1}"]
    default_last = REPORT["reward_models"]["default"]["fidelity"]["layer_0"]
    assert last["mass_ratio"] < default_last["mass_ratio"]


def test_prompts_are_review_openings_of_2_to_8_tokens():
    tok = AutoTokenizer.from_pretrained(assets.TOKENIZER_DIR)
    prompts = assets.load_prompts("reviews")
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert len(prompts) >= 100 and min(lengths) >= 2 and max(lengths) <= 8
    with pytest.raises(ValueError, match="no bundled prompt set 'imdb'"):
        assets.load_prompts("imdb")


def test_token_relevance_is_lexicon_valence():
    tok = AutoTokenizer.from_pretrained(assets.TOKENIZER_DIR)
    ids = tok("the acting was not very good but the plot was awful", add_special_tokens=False)[
        "input_ids"
    ]
    valence = assets.token_valence(ids)
    words = tok.convert_ids_to_tokens(ids)
    assert valence[words.index("good")] == pytest.approx(1.9)
    assert valence[words.index("awful")] == pytest.approx(-2.0)
    assert np.count_nonzero(valence) == 2
    np.testing.assert_array_equal(assets.token_relevance(ids), np.abs(valence))


def test_corpus_is_deterministic_and_neutral_filler_carries_no_sentiment():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    assert generate_corpus(50, seed=3) == generate_corpus(50, seed=3)
    assert generate_corpus(50, seed=3) != generate_corpus(50, seed=4)
    lexicon = SentimentIntensityAnalyzer().lexicon
    assert not [w for w in NEUTRAL_WORDS if w in lexicon]
    assert all(w in lexicon for w in SENTIMENT_WORDS)
    words = " ".join(generate_corpus(2000, seed=0)).split()
    share = np.mean([w in SENTIMENT_WORDS for w in words])
    assert 0.01 < share < 0.04  # rare decisive words


def test_build_runs_as_a_module():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "llm_gym.assets.build", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--quick" in out and "--out" in out


@pytest.mark.slow
def test_build_is_bit_for_bit_reproducible(tmp_path: Path):
    cfg = BuildConfig(
        n_reviews=200,
        held_out=50,
        lm_steps=8,
        rm_steps=8,
        deep_rm_steps=8,
        eval_completions=16,
        n_prompts=20,
        context=64,
    )
    build_world(tmp_path / "a", cfg, enforce_fidelity=False)
    build_world(tmp_path / "b", cfg, enforce_fidelity=False)
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert any(f.name == "model.safetensors" for f in files)
    for f in files:
        if f.name in ("build_report.json", "MODEL_CARD.md"):
            continue  # both state the build's wall time
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
