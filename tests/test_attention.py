"""The one-row attention read-out equals eager attention and the reference read-out, and credit
maps across tokenizers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import build_reward_model, random_batch
from transformers import AutoModelForSequenceClassification

from llm_gym.rewards import AttentionRequest, HFRewardModel
from llm_gym.rewards import attention as readout
from llm_gym.rewards.attention import map_to_env_tokens, reference_attention


def eager_rows(path, rm: HFRewardModel, encoded, layers, heads) -> tuple[np.ndarray, list]:
    """Scores and per-pair full RM rows from an independent eager forward."""
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
    model.config.pad_token_id = -1
    with torch.no_grad():
        out = model(**rm.model_inputs(encoded), output_attentions=True)
    rows = []
    for i in range(encoded.input_ids.shape[0]):
        per_layer = [out.attentions[layer][i, :, encoded.score_index[i]] for layer in layers]
        combined = [r.mean(0) if heads == "mean" else r.amax(0) for r in per_layer]
        rows.append(torch.stack(combined).mean(0).double().numpy())
    return rm.logits_to_scores(out.logits), rows


@pytest.mark.parametrize("family", ["gpt2", "bert", "distilbert", "llama", "qwen2"])
@pytest.mark.parametrize(("layers", "heads"), [((-1,), "mean"), ((0, 1), "max")])
def test_readout_equals_eager_attention(tmp_path, env_tokenizer, family, layers, heads):
    rm = build_reward_model(family, tmp_path, env_tokenizer)
    batch = random_batch(env_tokenizer, 5)
    encoded = rm.encode(batch)
    assert encoded.attention_mask.min() == 0, "the batch must contain padding"
    out = rm(batch, AttentionRequest(layers=layers, heads=heads))
    scores, rows = eager_rows(tmp_path, rm, encoded, layers, heads)
    np.testing.assert_allclose(out.scores, scores, atol=1e-5)
    for i, positions in enumerate(encoded.completion_positions):
        expected = rows[i][positions] / rows[i][positions].sum()
        np.testing.assert_allclose(out.attention[i], expected, atol=1e-5)
        assert len(out.attention[i]) == len(batch.completion_ids[i])
    assert rm.model.config._attn_implementation == "sdpa"


REQUESTS = [
    AttentionRequest((-1,), "mean"),
    AttentionRequest((0,), "max"),
    AttentionRequest((0, 1), "mean"),
    AttentionRequest((-2, -1), "max"),
]


@pytest.mark.parametrize("family", ["gpt2", "bert", "distilbert", "llama", "qwen2"])
@pytest.mark.parametrize("own_tokenizer", [False, True], ids=["env-ids", "own-tokenizer"])
def test_fast_readout_equals_the_reference_readout(tmp_path, env_tokenizer, family, own_tokenizer):
    batch = random_batch(env_tokenizer, 5, seed=3)
    rm_tokenizer = _bpe_tokenizer(batch.texts) if own_tokenizer else env_tokenizer
    rm = build_reward_model(family, tmp_path, rm_tokenizer)
    assert rm.uses_env_ids(env_tokenizer) != own_tokenizer
    for request in REQUESTS:
        fast, reference = rm(batch, request), reference_attention(rm, batch, request)
        np.testing.assert_allclose(fast.scores, reference.scores, atol=1e-5)
        for i, weights in enumerate(reference.attention):
            assert weights.shape == (len(batch.completion_ids[i]),)
            assert abs(weights.sum() - 1) < 1e-9
            np.testing.assert_allclose(fast.attention[i], weights, atol=1e-5)
    assert rm.model.config._attn_implementation == "sdpa", "the reference must restore sdpa"


def test_readout_does_not_run_eager(tmp_path, env_tokenizer, monkeypatch):
    rm = build_reward_model("gpt2", tmp_path, env_tokenizer)

    def forbidden(*args, **kwargs):
        raise AssertionError("the fast read-out must not run the model in eager attention")

    monkeypatch.setattr(readout, "eager_forward", forbidden)
    rm(random_batch(env_tokenizer, 3), AttentionRequest())


def test_rollout_equals_independent_computation(tmp_path, env_tokenizer):
    rm = build_reward_model("gpt2", tmp_path, env_tokenizer)
    batch = random_batch(env_tokenizer, 3)
    encoded = rm.encode(batch)
    out = rm(batch, AttentionRequest(rollout=True))
    model = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation="eager"
    )
    model.config.pad_token_id = -1
    with torch.no_grad():
        attentions = model(**rm.model_inputs(encoded), output_attentions=True).attentions
    for i, positions in enumerate(encoded.completion_positions):
        t = encoded.input_ids.shape[1]
        product = np.eye(t)
        for layer in attentions:
            a = layer[i].mean(0).double().numpy()
            product = (0.5 * a + 0.5 * np.eye(t)) @ product
        row = product[int(encoded.score_index[i])][positions]
        np.testing.assert_allclose(out.attention[i], row / row.sum(), atol=1e-5)
    assert rm.model.config._attn_implementation == "sdpa", "rollout must restore sdpa"


def test_unsupported_architecture_falls_back_to_eager_and_warns_once(tmp_path, env_tokenizer):
    from transformers import GPTNeoXConfig

    config = GPTNeoXConfig(
        vocab_size=len(env_tokenizer.get_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    env_tokenizer.save_pretrained(tmp_path)
    rm = HFRewardModel(str(tmp_path), pooling="last", device="cpu")
    batch = random_batch(env_tokenizer, 4)
    readout._warned.discard("gpt_neox")
    with pytest.warns(UserWarning, match="gpt_neox"):
        out = rm(batch, AttentionRequest())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rm(batch, AttentionRequest())
    encoded = rm.encode(batch)
    _, rows = eager_rows(tmp_path, rm, encoded, (-1,), "mean")
    for i, positions in enumerate(encoded.completion_positions):
        np.testing.assert_allclose(
            out.attention[i], rows[i][positions] / rows[i][positions].sum(), atol=1e-5
        )


def test_bad_layer_names_the_range(tmp_path, env_tokenizer):
    rm = build_reward_model("gpt2", tmp_path, env_tokenizer)
    with pytest.raises(ValueError, match=r"layer 5 .* 2 layers"):
        rm(random_batch(env_tokenizer, 2), AttentionRequest(layers=(5,)))


def test_map_to_env_tokens_splits_by_character_overlap():
    # env tokens "good" [0,4) " film" [4,9); RM tokens "go" [0,2) "od f" [2,6) "ilm" [6,9)
    weights = map_to_env_tokens(
        np.array([0.5, 0.2, 0.3]), np.array([[0, 2], [2, 6], [6, 9]]), np.array([[0, 4], [4, 9]])
    )
    np.testing.assert_allclose(weights, [0.5 + 0.1, 0.1 + 0.3])


def _bpe_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=80, special_tokens=["[PAD]", "[UNK]"])
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_cross_tokenizer_credit(tmp_path, env_tokenizer, family):
    batch = random_batch(env_tokenizer, 4, seed=3)
    rm_tokenizer = _bpe_tokenizer(batch.texts)
    assert rm_tokenizer.get_vocab() != env_tokenizer.get_vocab()
    rm = build_reward_model(family, tmp_path, rm_tokenizer)
    assert not rm.uses_env_ids(env_tokenizer)
    out = rm(batch, AttentionRequest())
    encoded = rm.encode(batch)
    _, rows = eager_rows(tmp_path, rm, encoded, (-1,), "mean")
    for i, positions in enumerate(encoded.completion_positions):
        assert len(positions) > len(batch.completion_ids[i]), "BPE must split words further"
        w = out.attention[i]
        assert w.shape == (len(batch.completion_ids[i]),)
        assert abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
        expected = map_to_env_tokens(
            rows[i][positions], encoded.completion_char_spans[i], batch.completion_char_spans(i)
        )
        np.testing.assert_allclose(w, expected, atol=1e-5)
