"""Signed credit: the world-rule oracle, leave-one-out credit against the RM, their registry entries."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llm_gym  # noqa: F401
from llm_gym import assets
from llm_gym.assets.contributions import (
    SCORE_SCALE,
    signed_contributions,
    vader_score,
    word_sentiments,
    world_contributions,
)
from llm_gym.assets.lexicon import word_valence
from llm_gym.assets.world import generate_corpus
from llm_gym.experiments.methods import METHODS, registry
from llm_gym.experiments.presets import ComparePreset
from llm_gym.experiments.runs import make_method_env
from llm_gym.rewards import CompletionBatch, HFRewardModel, RewardModel, RewardOutput
from llm_gym.rewards.leave_one_out import LeaveOneOut
from llm_gym.rewards.loading import load_tokenizer
from llm_gym.wrappers.signed_credit import LeaveOneOutCredit, SignedCredit, signed_redistribute


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(str(assets.TOKENIZER_DIR))


def ids(tokenizer, text):
    return np.array(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


def test_the_world_rule_terms_sum_to_vaders_own_score_on_the_corpus():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from llm_gym.assets.build.corpus import SCORE_SCALE as BUILD_SCALE

    assert SCORE_SCALE == BUILD_SCALE  # the scale the reward models were trained to
    analyzer = SentimentIntensityAnalyzer()
    for text in generate_corpus(200, seed=3):
        spans, values = word_sentiments(text)
        terms = signed_contributions(text, spans)
        compound = analyzer.polarity_scores(text)["compound"]  # rounded to 4 decimals
        assert terms.sum() == pytest.approx(vader_score(text), abs=1e-12)
        assert vader_score(text) == pytest.approx(SCORE_SCALE * compound, abs=SCORE_SCALE * 6e-5)


def test_each_word_carries_its_own_sign_after_negation_intensifiers_and_but():
    spans, values = word_sentiments("the acting was not good but the plot was very good")
    words = "the acting was not good but the plot was very good".split()
    by_word = dict(zip(range(len(words)), values))
    lexicon_good = word_valence("good")
    assert by_word[4] == pytest.approx(-0.74 * lexicon_good * 0.5)  # negated, then halved by "but"
    assert by_word[10] > 1.5 * lexicon_good  # intensified, then x1.5 after "but"
    assert [v for i, v in by_word.items() if i not in (4, 10)] == [0.0] * 9  # modifiers carry 0


def test_world_contributions_map_the_terms_to_completion_tokens(tokenizer):
    prompt, completion = ids(tokenizer, "i thought the acting was"), ids(tokenizer, "not good .")
    batch = CompletionBatch([prompt], [completion], tokenizer)
    terms = world_contributions(batch)[0]
    assert terms[0] == 0.0 and terms[1] < 0 and terms[2] == 0.0  # "good" pays for "not good"
    assert terms.sum() == pytest.approx(vader_score("i thought the acting was not good ."))
    # a prompt word's term is not any completion token's
    batch = CompletionBatch(
        [ids(tokenizer, "a great film")], [ids(tokenizer, "the plot")], tokenizer
    )
    assert world_contributions(batch)[0].tolist() == [0.0, 0.0]


def test_signed_credit_keeps_the_return_and_the_sign():
    c = np.array([0.5, -2.0, 0.0, 0.25])
    rewards = signed_redistribute(c, 1.5, beta=0.8)
    assert rewards.sum() == pytest.approx(1.5)
    np.testing.assert_allclose(rewards[:3], 0.8 * c[:3])
    assert signed_redistribute(c, 1.5, beta=0.0).tolist() == [0.0, 0.0, 0.0, 1.5]


def run_episode(env, seed=0):
    env.reset(seed=seed)
    env.action_space.seed(seed)
    done = False
    while not done:
        _, reward, done, _, info = env.step(env.action_space.sample())
    return reward, info


def test_signed_credit_wrapper_pays_the_terms_and_the_residual_on_the_last_token():
    env = SignedCredit(gym.make("LLMCompletion-v0", max_new_tokens=12), world_contributions)
    for seed in range(4):
        reward, info = run_episode(env, seed)
        rewards = np.asarray(info["token_rewards"])
        assert rewards.sum() == pytest.approx(info["score"], abs=1e-9)
        np.testing.assert_allclose(rewards[:-1], 0.8 * env.last_contributions[:-1])
        assert "credit_map" not in info  # not a weighting of the score
        assert reward == info["score"]  # the scalar stream stays sparse
    with pytest.raises(ValueError, match="got contributions .* expected one finite value"):
        bad = SignedCredit(gym.make("LLMCompletion-v0", max_new_tokens=3), lambda b: [[1.0]])
        run_episode(bad)
    with pytest.raises(TypeError, match="contributions must be a function"):
        SignedCredit(gym.make("LLMCompletion-v0"), "world")


class CountingRM(RewardModel):
    """The default RM, counting rows and calls."""

    def __init__(self) -> None:
        self.inner = HFRewardModel(assets.reward_model_path("default"), device="cpu")
        self.calls, self.rows = 0, 0

    def score(self, batch, attention=None):
        self.calls += 1
        self.rows += len(batch)
        return RewardOutput(self.inner(batch).scores)


def test_leave_one_out_is_one_batched_call_of_t_rows_and_equals_one_by_one(tokenizer):
    rm = CountingRM()
    prompt, completion = ids(tokenizer, "the acting"), ids(tokenizer, "was very good .")
    batch = CompletionBatch([prompt], [completion], tokenizer)
    full = float(rm.inner(batch).scores[0])
    terms = LeaveOneOut(rm)(batch, np.array([full]))[0]
    assert (rm.calls, rm.rows) == (1, len(completion))
    for t in range(len(completion)):
        alone = CompletionBatch([prompt], [np.delete(completion, t)], tokenizer)
        assert terms[t] == pytest.approx(full - float(rm.inner(alone).scores[0]), abs=1e-5)
    # without the score: one more row, the same terms; batches split between calls
    both = CompletionBatch([prompt, prompt], [completion, completion[:2]], tokenizer)
    split = LeaveOneOut(rm, max_rows=5)(both)
    np.testing.assert_allclose(split[0], terms, atol=1e-5)
    assert len(split[1]) == 2


def test_leave_one_out_credit_wrapper():
    env = LeaveOneOutCredit(gym.make("LLMCompletion-v0", max_new_tokens=10))
    reward, info = run_episode(env)
    assert sum(info["token_rewards"]) == pytest.approx(info["score"], abs=1e-9)
    assert len(env.last_contributions) == len(info["completion_ids"])
    assert not hasattr(env, "reward_model") or env.reward_model is env.unwrapped.reward_model


def test_every_credit_method_has_a_centred_registry_entry():
    preset = ComparePreset(max_new_tokens=3)
    spreading = [m.name for m in registry if m.credit_map is not None and m.name in METHODS]
    assert set(spreading) == {"oracle", "abc", "uniform", "abcd", "abc-centred"}
    for name in spreading:
        centred = name if name.endswith("-centred") else f"{name}-centred"
        assert make_method_env(centred, preset).baseline.running, centred
        assert not make_method_env(name.removesuffix("-centred"), preset).baseline.running
    assert make_method_env("abc-centred@0", ComparePreset(reward_model="deep")).baseline.running
    for name, wrapper in (("oracle-signed", "SignedCredit"), ("loo", "LeaveOneOutCredit")):
        assert type(make_method_env(name, preset)).__name__ == wrapper
        assert name not in METHODS  # opt-in: the default presets run what they ran


def test_the_fidelity_table_measures_the_signed_maps_by_magnitude():
    from llm_gym.experiments.report import credit_fidelity_table

    table = credit_fidelity_table(ComparePreset(max_new_tokens=8), ["oracle-signed", "loo"], n=4)
    labels = [line.split(" | ")[0] for line in table.splitlines()[2:]]
    assert labels == ["| oracle-signed (rule-term magnitudes)", "| loo (leave-one-out magnitudes)"]
