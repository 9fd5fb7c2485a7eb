"""Reward models: HF decoder/encoder classifiers by path, score definitions, functions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import PROMPTS, word_tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import llm_gym  # noqa: F401
from llm_gym.rewards import AttentionRequest, CompletionBatch, FunctionRewardModel, HFRewardModel


def direct_score(path: str, text_or_ids, pos: int = 1, neg: int | None = 0) -> float:
    """Independent reference: one unpadded forward of the saved model."""
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    if isinstance(text_or_ids, str):
        inputs = AutoTokenizer.from_pretrained(path)(text_or_ids, return_tensors="pt")
    else:
        model.config.pad_token_id = None  # batch of one: the head then reads the last position
        inputs = {"input_ids": torch.tensor([text_or_ids])}
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    return float(logits[pos] - (logits[neg] if neg is not None else 0.0))


def batch_of(tok, pairs):
    enc = lambda text: np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)  # noqa: E731
    return CompletionBatch([enc(p) for p, _ in pairs], [enc(c) for _, c in pairs], tok)


PAIRS = [
    ("the film was", "very good"),
    ("a movie", "was not bad but the plot was awful ."),
    ("the acting", "is"),
]


def test_decoder_rm_by_path_matches_direct_forward(tiny_gpt2_rm):
    tok = word_tokenizer()
    rm = HFRewardModel(tiny_gpt2_rm, device="cpu")
    assert rm.pooling == "last"
    scores = rm(batch_of(tok, PAIRS)).scores  # a padded batch of three lengths
    expected = [direct_score(tiny_gpt2_rm, tok(p + " " + c)["input_ids"]) for p, c in PAIRS]
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_decoder_rm_scores_completion_ending_in_pad_or_eos_id(tiny_gpt2_rm):
    """Completions may contain the pad id; the scoring position must still be the last token."""
    tok = word_tokenizer()
    rm = HFRewardModel(tiny_gpt2_rm, device="cpu")
    prompt = np.asarray(tok("the film")["input_ids"])
    completion = np.asarray([tok.convert_tokens_to_ids("good"), tok.pad_token_id])
    score = rm(CompletionBatch([prompt, prompt[:1]], [completion, completion[:1]], tok)).scores[0]
    expected = direct_score(tiny_gpt2_rm, prompt.tolist() + completion.tolist())
    assert score == pytest.approx(expected, abs=1e-5)


def test_encoder_rm_with_its_own_tokenizer_matches_direct_forward(tiny_bert_rm):
    env_tok = word_tokenizer()
    rm = HFRewardModel(tiny_bert_rm, device="cpu")
    assert rm.pooling == "first" and not rm.uses_env_ids(env_tok)
    batch = batch_of(env_tok, PAIRS)
    expected = [direct_score(tiny_bert_rm, text) for text in batch.texts]
    np.testing.assert_allclose(rm(batch).scores, expected, atol=1e-5)


def test_env_loads_rm_by_path_and_reports_its_score(tiny_gpt2_rm, tiny_bert_rm, word_tok_dir):
    for path in (tiny_gpt2_rm, tiny_bert_rm):
        env = gym.make(
            "LLMCompletion-v0",
            tokenizer=word_tok_dir,
            reward_model=path,
            prompts=PROMPTS,
            max_prompt_tokens=4,
            max_new_tokens=3,
            eos_ends_episode=False,
            device="cpu",
        )
        env.reset(seed=0)
        tok = env.unwrapped.tokenizer
        for word in ("very", "good", "."):
            *_, info = env.step(tok.convert_tokens_to_ids(word))
        full_text = tok.decode(info["prompt_ids"] + info["completion_ids"])
        reference = (
            full_text if path == tiny_bert_rm else info["prompt_ids"] + info["completion_ids"]
        )
        assert info["score"] == pytest.approx(direct_score(path, reference), abs=1e-5)


def test_score_definitions(tiny_gpt2_rm):
    tok = word_tokenizer()
    batch = batch_of(tok, PAIRS[:1])
    ids = tok("the film was very good")["input_ids"]
    one_logit = HFRewardModel(tiny_gpt2_rm, score=1, device="cpu")(batch).scores[0]
    assert one_logit == pytest.approx(direct_score(tiny_gpt2_rm, ids, 1, None), abs=1e-5)
    by_name = HFRewardModel(tiny_gpt2_rm, score=("NEGATIVE", "POSITIVE"), device="cpu")(
        batch
    ).scores[0]
    assert by_name == pytest.approx(direct_score(tiny_gpt2_rm, ids, 0, 1), abs=1e-5)
    with pytest.raises(ValueError, match=r"score label 'joy' is not one of the model's labels"):
        HFRewardModel(tiny_gpt2_rm, score=("joy", "NEGATIVE"), device="cpu")
    with pytest.raises(ValueError, match=r"score label index 5 is out of range"):
        HFRewardModel(tiny_gpt2_rm, score=5, device="cpu")


def test_too_long_input_is_a_clear_error(tiny_gpt2_rm):
    tok = word_tokenizer()
    rm = HFRewardModel(tiny_gpt2_rm, device="cpu")
    long = " ".join(["good"] * 70)
    with pytest.raises(
        ValueError, match=r"71 reward-model tokens exceeds the reward model's 64 positions"
    ):
        rm(batch_of(tok, [("the", long)]))


def test_vader_function_reward_model():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    rm = FunctionRewardModel(lambda text: vader.polarity_scores(text)["compound"])
    tok = word_tokenizer()
    scores = rm(batch_of(tok, [("the film was", "very good"), ("the film was", "awful")])).scores
    assert scores[0] > 0.4 and scores[1] < -0.4
    with pytest.raises(TypeError, match="no attention weights"):
        rm.score(batch_of(tok, PAIRS[:1]), attention=object())


def test_completion_texts_and_char_spans():
    tok = word_tokenizer()
    batch = batch_of(tok, [("the film", "was very good")])
    assert batch.prompt_texts == ["the film"] and batch.completion_texts == [" was very good"]
    text = batch.texts[0]
    assert [text[s:e] for s, e in batch.completion_char_spans(0)] == [" was", " very", " good"]


def test_model_folder_without_tokenizer_reads_env_ids(tmp_path, tiny_gpt2_rm):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_gpt2_rm)
    model.save_pretrained(tmp_path)  # weights only, no tokenizer files
    rm = HFRewardModel(str(tmp_path), device="cpu")
    tok = word_tokenizer()
    assert rm.tokenizer is None and rm.uses_env_ids(tok)
    expected = HFRewardModel(tiny_gpt2_rm, device="cpu")(batch_of(tok, PAIRS)).scores
    np.testing.assert_allclose(rm(batch_of(tok, PAIRS)).scores, expected, atol=1e-6)


def test_a_callers_model_is_left_as_it_was(tiny_gpt2_rm):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_gpt2_rm)
    config = model.config.to_dict()
    tok = word_tokenizer()
    rm = HFRewardModel(model, tokenizer=tok, device="cpu")
    rm(batch_of(tok, PAIRS))
    rm(batch_of(tok, PAIRS), AttentionRequest())
    rm(batch_of(tok, PAIRS), AttentionRequest(rollout=True))
    assert model.config.to_dict() == config
    assert model.config.pad_token_id == tok.pad_token_id


def test_decoder_classifier_without_a_score_head_is_a_clear_error(tiny_gpt2_rm):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_gpt2_rm)
    del model.score
    with pytest.raises(
        ValueError,
        match=r"GPT2ForSequenceClassification \(model_type 'gpt2'\) "
        r"has no `score` head.*pooling='first'",
    ):
        HFRewardModel(model, tokenizer=word_tokenizer(), device="cpu")


def test_prefix_scorer_scores_every_prefix_like_a_fresh_batch(tiny_gpt2_rm, tiny_bert_rm):
    from llm_gym.rewards.prefix import PrefixScorer

    tok = word_tokenizer()
    prompt = np.asarray(tok("the film")["input_ids"])
    completion = np.asarray(tok("was not bad but the plot")["input_ids"])
    for path, incremental in ((tiny_gpt2_rm, True), (tiny_bert_rm, False)):
        rm = HFRewardModel(path, device="cpu")
        scorer = PrefixScorer(rm, tok)
        assert scorer.incremental == incremental
        # growing prefixes, then a restart and a non-extending call
        for t in [*range(1, len(completion) + 1), 2, 2, 1]:
            expected = rm(CompletionBatch([prompt], [completion[:t]], tok)).scores[0]
            assert scorer(prompt, completion[:t]) == pytest.approx(expected, abs=1e-5)


def test_prefix_scorer_masks_a_completion_holding_the_pad_id(tiny_gpt2_rm):
    """A sampled pad id is a real token: every call passes a mask over the whole row."""
    from llm_gym.rewards.prefix import PrefixScorer

    tok = word_tokenizer()
    rm = HFRewardModel(tiny_gpt2_rm, device="cpu")
    masks: list[torch.Tensor | None] = []
    forward = rm.forward

    def spy(input_ids, attention_mask=None, **kwargs):
        masks.append(attention_mask)
        return forward(input_ids, attention_mask=attention_mask, **kwargs)

    rm.forward = spy  # type: ignore[method-assign]
    scorer = PrefixScorer(rm, tok)
    prompt = np.asarray(tok("the film")["input_ids"])
    completion = np.asarray([*tok("was bad")["input_ids"], tok.pad_token_id, tok.pad_token_id])
    for t in range(1, len(completion) + 1):
        expected = rm(CompletionBatch([prompt], [completion[:t]], tok)).scores[0]
        assert scorer(prompt, completion[:t]) == pytest.approx(expected, abs=1e-5)
    scorer_masks = masks[1::2]  # every other call is the reference batch's own forward
    assert [None if m is None else m.tolist() for m in scorer_masks] == [
        [[1] * (len(prompt) + t)] for t in range(1, len(completion) + 1)
    ]


def test_fidelity_of_uniform_credit_is_chance():
    from llm_gym.rewards.fidelity import fidelity_metrics

    rng = np.random.default_rng(0)
    relevance = [rng.random(10) * (rng.random(10) < 0.2) for _ in range(200)]
    uniform = [np.full(10, 0.1) for _ in relevance]
    report = fidelity_metrics(uniform, relevance)
    assert report.mass_ratio == pytest.approx(1.0)
    assert report.top_hit_rate == pytest.approx(report.top_hit_chance)
    oracle = fidelity_metrics([r / max(r.sum(), 1e-9) for r in relevance], relevance)
    assert oracle.top_hit_rate == 1.0 and oracle.spearman == pytest.approx(1.0)
