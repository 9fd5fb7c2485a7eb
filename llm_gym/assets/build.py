"""Build the embedded default world: corpus, tokenizer, tiny LM, tiny reward models, prompts.

Run ``llm-gym build-assets`` (or ``python -m llm_gym.assets.build``). The build is
deterministic for a seed: the corpus, tokenizer, prompts and relevance table are
identical bit for bit; model weights are identical bit for bit on the same torch
version and thread count (the build fixes 1 thread), and otherwise agree to
float tolerance. It takes about 5-10 minutes on 2 CPU cores, and fails when the
default reward model's last-layer attention is not faithful (see
:data:`FIDELITY_BAR`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llm_gym.assets import ASSET_DIR
from llm_gym.assets.model_card import write_model_card
from llm_gym.assets.world import NEUTRAL_WORDS, SENTIMENT_WORDS, generate_corpus
from llm_gym.rewards.fidelity import fidelity_metrics

__all__ = ["FIDELITY_BAR", "BuildConfig", "build_world"]

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
#: the default RM's last layer must reach these (mass ratio, top-1 hit rate, Spearman)
FIDELITY_BAR = {"mass_ratio": 3.0, "top_hit_rate": 0.5, "spearman": 0.3}


@dataclass
class BuildConfig:
    seed: int = 0
    n_reviews: int = 30_000
    held_out: int = 1_500
    context: int = 128  # positions of every model: prompt + completion up to 128 tokens
    lm_layers: int = 3
    lm_width: int = 128
    lm_steps: int = 1_500
    lm_batch: int = 24
    lm_lr: float = 3e-3
    rm_width: int = 128
    rm_heads: int = 8
    rm_steps: int = 5_000
    deep_rm_steps: int = 3_000
    rm_lr: float = 1e-3
    rm_batch: int = 32
    n_prompts: int = 500
    eval_completions: int = 512
    eval_new_tokens: int = 32
    threads: int = 1


def _check_lexicon() -> None:
    from vaderSentiment import vaderSentiment as vader

    lexicon = vader.SentimentIntensityAnalyzer().lexicon
    loaded = [
        w for w in NEUTRAL_WORDS if w in lexicon or w in vader.BOOSTER_DICT or w in vader.NEGATE
    ]
    if loaded:
        raise RuntimeError(f"neutral filler words carry VADER sentiment: {loaded}")
    missing = [w for w in SENTIMENT_WORDS if w not in lexicon]
    if missing:
        raise RuntimeError(f"sentiment words missing from the VADER lexicon: {missing}")


def build_tokenizer(corpus: list[str], out: Path):
    """Word-level tokenizer; ids ordered by (frequency desc, word) so the build is deterministic."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    counts: dict[str, int] = {}
    for text in corpus:
        for word in text.split():
            counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(out))
    return tokenizer


def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _windows(
    stream: np.ndarray, starts: np.ndarray, rng: np.random.Generator, batch: int, length: int
) -> np.ndarray:
    picks = starts[rng.integers(len(starts), size=batch)]
    picks = np.minimum(picks, len(stream) - length)
    return np.stack([stream[p : p + length] for p in picks])


def _stream(tokenizer, reviews: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ids, starts = [], []
    for text in reviews:
        starts.append(len(ids))
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return np.asarray(ids, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def _train(model, steps: int, lr: float, make_batch, loss_fn, log: str) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        loss = loss_fn(model, make_batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(
                f"  [{log}] step {step + 1}/{steps} loss {loss.item():.4f} ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    model.eval()


def train_lm(cfg: BuildConfig, tokenizer, stream: np.ndarray, starts: np.ndarray):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.context,
        n_embd=cfg.lm_width,
        n_layer=cfg.lm_layers,
        n_head=4,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(config)
    rng = np.random.default_rng(cfg.seed + 1)

    def batch(_):
        return torch.from_numpy(_windows(stream, starts, rng, cfg.lm_batch, cfg.context))

    def loss(m, ids):
        return m(input_ids=ids, labels=ids).loss

    _train(model, cfg.lm_steps, cfg.lm_lr, batch, loss, "lm")
    return model


def _compound(texts: list[str], vader) -> np.ndarray:
    return np.array([vader.polarity_scores(t.replace("<eos>", " "))["compound"] for t in texts])


#: reward models are trained to score 4 x VADER's compound (range about +-4), neutral text at 0
SCORE_SCALE = 4.0


def train_rm(cfg: BuildConfig, tokenizer, stream, starts, layers: int, seed: int, steps: int):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.context,
        n_embd=cfg.rm_width,
        n_layer=layers,
        n_head=cfg.rm_heads,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(config)
    rng = np.random.default_rng(seed + 1)
    vader = _vader()

    def batch(_):
        length = (
            int(rng.integers(6, 45))
            if rng.random() < 0.8
            else int(rng.integers(45, cfg.context + 1))
        )
        ids = _windows(stream, starts, rng, cfg.rm_batch, length)
        texts = tokenizer.batch_decode(ids.tolist())
        target = torch.from_numpy(SCORE_SCALE * _compound(texts, vader)).float()
        return torch.from_numpy(ids), target

    def loss(m, data):
        ids, target = data
        logits = m(input_ids=ids).logits
        # soft labels: p(positive) = sigmoid(target) makes logit(pos) - logit(neg) -> target
        p = torch.sigmoid(target)
        logp = torch.log_softmax(logits, -1)
        return -(p * logp[:, 1] + (1 - p) * logp[:, 0]).mean()

    _train(model, steps, cfg.rm_lr, batch, loss, f"rm{layers}")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


@torch.no_grad()
def sample_completions(
    lm, prompts: list[np.ndarray], new_tokens: int, seed: int, eos_id: int, pad_id: int
):
    """Sample with the env's semantics: a completion ends at EOS or after ``new_tokens``."""
    torch.manual_seed(seed)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.from_numpy(p)
        mask[i, width - len(p) :] = 1
    out = lm.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        max_new_tokens=new_tokens,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )[:, width:].numpy()
    completions = []
    for row in out:
        ends = np.flatnonzero(row == eos_id)
        completions.append(row[: ends[0] + 1] if ends.size else row)
    return completions


@torch.no_grad()
def rm_layer_credit(
    rm, prompts, completions, pad_id: int
) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Scores and, per layer, the scoring row's head-mean attention over completion tokens.

    Reference computation with eager attention (the build is not a hot path).
    """
    rm.set_attn_implementation("eager")
    scores, per_layer = [], [[] for _ in range(rm.config.n_layer)]
    for start in range(0, len(prompts), 64):
        chunk = list(zip(prompts[start : start + 64], completions[start : start + 64]))
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, c) in enumerate(chunk):
            seq = np.concatenate([p, c])
            ids[i, width - len(seq) :] = torch.from_numpy(seq)
            mask[i, width - len(seq) :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        rm.config.pad_token_id = -1  # pool at the last position (left padding)
        out = rm(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, output_attentions=True
        )
        logits = out.logits
        scores.append((logits[:, 1] - logits[:, 0]).numpy())
        for layer, att in enumerate(out.attentions):
            row = att[:, :, -1, :].mean(1).numpy()  # (B, width)
            for i, (_, c) in enumerate(chunk):
                w = row[i, width - len(c) :]
                per_layer[layer].append(w / w.sum())
    rm.config.pad_token_id = pad_id
    rm.set_attn_implementation("sdpa")
    return np.concatenate(scores), per_layer


def _pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


@torch.no_grad()
def _perplexity(lm, stream, starts, cfg: BuildConfig) -> float:
    rng = np.random.default_rng(cfg.seed + 99)
    ids = torch.from_numpy(_windows(stream, starts, rng, 64, cfg.context))
    return float(torch.exp(lm(input_ids=ids, labels=ids).loss))


def build_world(
    out_dir: Path = ASSET_DIR, cfg: BuildConfig | None = None, enforce_fidelity: bool = True
) -> dict:
    """Build every asset into ``out_dir``; returns the measured report."""
    cfg = cfg or BuildConfig()
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _check_lexicon()

    corpus = generate_corpus(cfg.n_reviews + cfg.held_out, seed=cfg.seed)
    train_text, held_text = corpus[: cfg.n_reviews], corpus[cfg.n_reviews :]
    tokenizer = build_tokenizer(train_text, out_dir / "tokenizer")
    stream, starts = _stream(tokenizer, train_text)
    held_stream, held_starts = _stream(tokenizer, held_text)
    print(
        f"corpus: {len(train_text)} reviews, {len(stream)} tokens, vocab {len(tokenizer)}",
        flush=True,
    )

    # token valence table, aligned with token ids
    from llm_gym.assets.lexicon import word_valence

    vocab = tokenizer.get_vocab()
    valence = [0.0] * len(vocab)
    for token, index in vocab.items():
        valence[index] = 0.0 if token in SPECIAL_TOKENS else word_valence(token)
    (out_dir / "token_valence.json").write_text(json.dumps(valence))
    sentiment_share = float(np.mean(np.asarray(valence)[stream] != 0))

    # prompts: the first 2-8 tokens of held-out reviews, as the paper does with IMDb
    rng = np.random.default_rng(cfg.seed + 7)
    prompts_text = []
    for text in held_text:
        words = text.split()[: int(rng.integers(2, 9))]
        prompts_text.append(" ".join(words))
    prompts_text = list(dict.fromkeys(prompts_text))[: cfg.n_prompts]
    (out_dir / "prompts_reviews.json").write_text(json.dumps(prompts_text, indent=0))

    lm = train_lm(cfg, tokenizer, stream, starts)
    lm.save_pretrained(str(out_dir / "lm"))
    tokenizer.save_pretrained(str(out_dir / "lm"))
    perplexity = _perplexity(lm, held_stream, held_starts, cfg)
    print(f"lm: held-out perplexity {perplexity:.2f}", flush=True)

    prompt_ids = [
        np.asarray(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts_text
    ]
    eval_prompts = [prompt_ids[i % len(prompt_ids)] for i in range(cfg.eval_completions)]
    completions = sample_completions(
        lm,
        eval_prompts,
        cfg.eval_new_tokens,
        cfg.seed,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    samples = [
        tokenizer.decode(np.concatenate([p, c]).tolist())
        for p, c in zip(eval_prompts[:6], completions[:6])
    ]
    vader = _vader()
    sample_texts = [
        tokenizer.decode(np.concatenate([p, c]).tolist()) for p, c in zip(eval_prompts, completions)
    ]
    sample_vader = SCORE_SCALE * _compound(sample_texts, vader)
    relevance = [np.abs(np.asarray(valence)[c]) for c in completions]
    sample_sentiment_share = float(np.mean(np.concatenate(relevance) > 0))

    report: dict = {
        "seed": cfg.seed,
        "corpus": {
            "reviews": len(train_text),
            "tokens": int(len(stream)),
            "vocab": len(tokenizer),
            "sentiment_token_share": sentiment_share,
        },
        "lm": {
            "layers": cfg.lm_layers,
            "width": cfg.lm_width,
            "params": lm.num_parameters(),
            "held_out_perplexity": perplexity,
            "samples": samples,
            "sample_sentiment_token_share": sample_sentiment_share,
        },
        "reward_models": {},
    }
    for name, layers in (("default", 1), ("deep", 4)):
        steps = cfg.rm_steps if name == "default" else cfg.deep_rm_steps
        rm = train_rm(cfg, tokenizer, stream, starts, layers, cfg.seed + 10 * layers, steps)
        rm.save_pretrained(str(out_dir / f"rm_{name}"))
        tokenizer.save_pretrained(str(out_dir / f"rm_{name}"))
        # held-out windows: Pearson with VADER
        hrng = np.random.default_rng(cfg.seed + 123)
        held_ids = [
            _windows(held_stream, held_starts, hrng, 1, int(hrng.integers(6, 41)))[0]
            for _ in range(1000)
        ]
        held_scores, _ = rm_layer_credit(
            rm, [h[:1] for h in held_ids], [h[1:] for h in held_ids], tokenizer.pad_token_id
        )
        held_vader = SCORE_SCALE * _compound(
            tokenizer.batch_decode([h.tolist() for h in held_ids]), vader
        )
        scores, per_layer = rm_layer_credit(rm, eval_prompts, completions, tokenizer.pad_token_id)
        fidelity: dict[str, dict] = {}
        for layer, weights in enumerate(per_layer):
            fidelity[f"layer_{layer}"] = fidelity_metrics(weights, relevance).as_dict()
        mean_layers = [
            np.mean([per_layer[k][i] for k in range(layers)], axis=0)
            for i in range(len(completions))
        ]
        fidelity["mean_of_layers"] = fidelity_metrics(mean_layers, relevance).as_dict()
        fidelity["uniform"] = fidelity_metrics(
            [np.full(len(c), 1 / len(c)) for c in completions], relevance
        ).as_dict()
        report["reward_models"][name] = {
            "layers": layers,
            "width": cfg.rm_width,
            "params": rm.num_parameters(),
            "held_out_pearson_vader": _pearson(held_scores, held_vader),
            "policy_samples_pearson_vader": _pearson(scores, sample_vader),
            "policy_samples_mean_score": float(np.mean(scores)),
            "policy_samples_score_std": float(np.std(scores)),
            "fidelity": fidelity,
        }
        print(f"rm {name}: {json.dumps(report['reward_models'][name], indent=1)}", flush=True)

    report["build_seconds"] = time.perf_counter() - started
    (out_dir / "build_report.json").write_text(json.dumps(report, indent=2))
    write_model_card(report, out_dir, FIDELITY_BAR)
    last = report["reward_models"]["default"]["fidelity"]["layer_0"]
    failed = {k: last[k] for k, bar in FIDELITY_BAR.items() if not last[k] >= bar}
    if failed and enforce_fidelity:
        raise RuntimeError(
            f"the default reward model's last-layer attention is not faithful enough: {failed} "
            f"(bar: {FIDELITY_BAR})"
        )
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ASSET_DIR, help="output folder (default: the package's assets)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="tiny budget, for testing the build itself"
    )
    args = parser.parse_args(argv)
    cfg = BuildConfig(seed=args.seed)
    if args.quick:
        cfg = BuildConfig(
            seed=args.seed,
            n_reviews=400,
            held_out=100,
            lm_steps=20,
            rm_steps=20,
            deep_rm_steps=20,
            eval_completions=32,
            n_prompts=50,
        )
    build_world(args.out, cfg, enforce_fidelity=not args.quick)


if __name__ == "__main__":
    main()
