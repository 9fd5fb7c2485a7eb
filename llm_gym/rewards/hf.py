"""Hugging Face sequence classifiers as reward models.

Holds :class:`HFRewardModel`, :class:`EncodedBatch` (a batch laid out for its
forward) and :class:`ForwardOutput` (what its one forward returns).

Decoder classifiers (GPT-2, Llama, Qwen, ...) score at the last token of a
left-padded row; encoder classifiers (BERT, DistilBERT, ...) at the first ([CLS])
token.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardModel, RewardOutput
from llm_gym.rewards.loading import (
    HostToDevice,
    load_pretrained,
    load_tokenizer,
    model_positions,
    resolve_device,
    resolve_dtype,
)
from llm_gym.rewards.padding import position_ids_from_mask

__all__ = ["EncodedBatch", "ForwardOutput", "HFRewardModel"]


@dataclass
class EncodedBatch:
    """A batch laid out for the reward model's forward.

    Decoder RMs are left-padded (the scoring position is the last one); encoder
    RMs are right-padded with [CLS] first.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor | None
    score_index: torch.Tensor
    #: per pair, the RM positions of the completion's RM tokens
    completion_positions: list[np.ndarray]
    #: per pair, (n, 2) character spans of those RM tokens in the full text, or
    #: None when the RM reads the env's own token ids (one RM token per env token)
    completion_char_spans: list[np.ndarray] | None


@dataclass
class ForwardOutput:
    """What :meth:`HFRewardModel.forward` returns."""

    #: (B, num_labels) label logits at each row's scoring position
    logits: torch.Tensor
    #: per layer, (B, heads, T, T) attention probabilities, when asked for
    attentions: tuple[torch.Tensor, ...] | None = None
    #: the decoder's key/value cache, when asked for
    cache: Any = None


class HFRewardModel(RewardModel):
    """Any ``AutoModelForSequenceClassification`` as a reward model.

    Args:
        model: hub id, local folder, or an already loaded model.
        tokenizer: the RM's own tokenizer (id, folder or object). ``None`` loads the
            one saved with the model, or else reads the environment's token ids.
            When the RM's vocabulary equals the environment's, ids are used as they
            are; otherwise completions are decoded and re-tokenised.
        score: ``"auto"`` (one logit if the model has one label, else
            logit(positive) - logit(negative) found from ``id2label``, else label 1
            minus label 0); an int picks one logit; a pair ``(pos, neg)`` of label
            names or indices gives logit(pos) - logit(neg) as in the ABC paper.
        pooling: ``"auto"``, ``"last"`` (decoder) or ``"first"`` ([CLS], encoder).
        device: ``"auto"`` uses CUDA when available; the RM may have a device of its own
            (``"cuda:1"``), apart from the policy's.
        trust_remote_code: passed to ``from_pretrained``; off by default.
        dtype: the weights' type (``"bfloat16"``, ``"float16"``, ``"float32"``; ``None``:
            as saved). Scores and attention rows are computed from float32 logits and a
            float32 softmax whatever it is.
        torch_dtype: the transformers 4 name of ``dtype``.

    A model passed as an object is moved to ``device`` (and cast to ``dtype`` when one
    is given) and put in eval mode; its configuration is left as it is. A batch goes
    to the device in one copy per array (ids, mask), through pinned host buffers on
    a GPU.

    Example:
        >>> import llm_gym.assets
        >>> rm = HFRewardModel(llm_gym.assets.reward_model_path("default"))
        >>> rm.pooling
        'last'
    """

    supports_attention = True

    def __init__(
        self,
        model: str | Any,
        tokenizer: str | Any | None = None,
        score: str | int | tuple[str | int, str | int] = "auto",
        pooling: str = "auto",
        device: str | torch.device = "auto",
        trust_remote_code: bool = False,
        dtype: str | torch.dtype | None = None,
        torch_dtype: str | torch.dtype | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"got dtype={dtype!r} and torch_dtype={torch_dtype!r}; expected one")
        weights = resolve_dtype(dtype if dtype is not None else torch_dtype)
        self.device = resolve_device(device)
        if isinstance(model, str):
            self.name = model
            model = load_pretrained(
                AutoModelForSequenceClassification,
                model,
                trust_remote_code=trust_remote_code,
                **({} if weights is None else {"dtype": weights}),
            )
        else:
            self.name = getattr(model, "name_or_path", type(model).__name__)
            if weights is not None:
                model = model.to(weights)
        self.model = model.to(self.device).eval()
        self._to_device = HostToDevice(self.device)
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        elif tokenizer is None and _may_hold_tokenizer(self.name):
            try:
                tokenizer = load_tokenizer(self.name, trust_remote_code=trust_remote_code)
            except OSError:
                tokenizer = None
        self.tokenizer: Any = tokenizer
        self.pooling = self._resolve_pooling(pooling)
        if self.pooling == "last":
            self._check_decoder_head()
        self._score_index = self._resolve_score(score)
        self._same_vocab_cache: dict[int, bool] = {}

    # ----------------------------------------------------------------- config
    def _resolve_pooling(self, pooling: str) -> str:
        if pooling not in ("auto", "last", "first"):
            raise ValueError(f"pooling must be 'auto', 'last' or 'first', got {pooling!r}")
        if pooling != "auto":
            return pooling
        config = self.model.config
        if getattr(config, "is_decoder", False):
            return "last"
        encoder_types = {
            "bert",
            "distilbert",
            "roberta",
            "deberta",
            "deberta-v2",
            "electra",
            "albert",
            "xlm-roberta",
            "camembert",
            "modernbert",
            "mpnet",
        }
        return "first" if config.model_type in encoder_types else "last"

    def _check_decoder_head(self) -> None:
        """A decoder classifier is run as trunk + ``score`` head (see :meth:`forward`)."""
        model = self.model
        head = getattr(model, "score", None)
        if model.base_model is model or not isinstance(head, torch.nn.Module):
            raise ValueError(
                f"{type(model).__name__} (model_type {model.config.model_type!r}) has no `score` "
                "head on a base model, which a reward model with pooling='last' needs (it applies "
                "the head at the last position of left-padded rows); pass pooling='first' if it "
                "is an encoder classifier that pools its first token, or wrap it in a "
                "FunctionRewardModel"
            )
        # transformers renamed past_key_values to cache in 5.x; accept both generations
        parameters = inspect.signature(model.base_model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"

    def _resolve_score(self, score: Any) -> tuple[int, int | None]:
        num_labels = self.model.config.num_labels
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        label2id = {v.lower(): k for k, v in id2label.items()}

        def index(label: str | int) -> int:
            if isinstance(label, (int, np.integer)):
                if not 0 <= int(label) < num_labels:
                    raise ValueError(
                        f"score label index {label} is out of range for a model with "
                        f"{num_labels} labels (0..{num_labels - 1})"
                    )
                return int(label)
            if label.lower() not in label2id:
                raise ValueError(
                    f"score label {label!r} is not one of the model's labels {id2label}"
                )
            return label2id[label.lower()]

        if score == "auto":
            if num_labels == 1:
                return (0, None)
            pos = [k for k, v in id2label.items() if v.lower().startswith("pos")]
            neg = [k for k, v in id2label.items() if v.lower().startswith("neg")]
            if len(pos) == 1 and len(neg) == 1:
                return (pos[0], neg[0])
            if num_labels == 2:
                return (1, 0)
            raise ValueError(
                f"score='auto' cannot choose among {num_labels} labels {id2label}; pass "
                "score=<label> or score=(positive, negative)"
            )
        if isinstance(score, tuple):
            if len(score) != 2:
                raise ValueError(f"score pair must be (positive, negative), got {score!r}")
            return (index(score[0]), index(score[1]))
        return (index(score), None)

    # --------------------------------------------------------------- encoding
    def uses_env_ids(self, env_tokenizer: Any) -> bool:
        """True when the RM reads the env's token ids directly (same vocabulary)."""
        if self.tokenizer is None:
            return True
        key = id(env_tokenizer)
        if key not in self._same_vocab_cache:
            self._same_vocab_cache[key] = (
                env_tokenizer is self.tokenizer
                or env_tokenizer.get_vocab() == self.tokenizer.get_vocab()
            )
        return self._same_vocab_cache[key]

    def encode(self, batch: CompletionBatch) -> EncodedBatch:
        """Lay the batch out for one forward pass."""
        tokenizer = self.tokenizer if self.tokenizer is not None else batch.tokenizer
        char_spans: list[np.ndarray] | None
        sequences: list[list[int]] = []
        completion_starts: list[tuple[int, int]] = []
        if self.uses_env_ids(batch.tokenizer):
            char_spans = None
            for prompt, completion in zip(batch.prompt_ids, batch.completion_ids):
                ids = prompt.tolist() + completion.tolist()
                prefix = 0
                if self.pooling == "first":
                    with_special = _with_special_tokens(tokenizer, ids)
                    prefix = _offset_of(with_special, ids)
                    ids = with_special
                completion_starts.append((prefix + len(prompt), len(completion)))
                sequences.append(ids)
        else:
            char_spans = []
            for prompt_text, completion_text in zip(batch.prompt_texts, batch.completion_texts):
                text = prompt_text + completion_text
                enc = tokenizer(
                    text,
                    add_special_tokens=self.pooling == "first",
                    return_offsets_mapping=True,
                )
                offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
                # RM tokens that end after the prompt's text are completion tokens
                # (special tokens have empty (0, 0) spans and are skipped).
                in_completion = (offsets[:, 1] > len(prompt_text)) & (offsets[:, 1] > offsets[:, 0])
                positions = np.flatnonzero(in_completion)
                start = int(positions[0]) if positions.size else len(enc["input_ids"])
                completion_starts.append((start, int(positions.size)))
                char_spans.append(offsets[positions])
                sequences.append(list(enc["input_ids"]))

        max_positions = model_positions(self.model.config)
        longest = max(len(s) for s in sequences)
        if max_positions is not None and longest > max_positions:
            raise ValueError(
                f"a prompt + completion of {longest} reward-model tokens exceeds the reward "
                f"model's {max_positions} positions; use shorter prompts or completions"
            )
        width = longest
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
        completion_positions = []
        for i, (ids, (start, length)) in enumerate(zip(sequences, completion_starts)):
            offset = width - len(ids) if self.pooling == "last" else 0
            input_ids[i, offset : offset + len(ids)] = ids
            attention_mask[i, offset : offset + len(ids)] = 1
            completion_positions.append(np.arange(offset + start, offset + start + length))
        # one copy to the device per array; positions and scoring columns are made there
        mask = self._to_device(attention_mask, "attention_mask")
        rows = len(sequences)
        if self.pooling == "last":
            position_ids = position_ids_from_mask(mask)
            score_index = torch.full((rows,), width - 1, dtype=torch.long, device=self.device)
        else:
            position_ids = None
            score_index = torch.zeros(rows, dtype=torch.long, device=self.device)
        return EncodedBatch(
            input_ids=self._to_device(input_ids, "input_ids"),
            attention_mask=mask,
            position_ids=position_ids,
            score_index=score_index,
            completion_positions=completion_positions,
            completion_char_spans=char_spans,
        )

    # ---------------------------------------------------------------- scoring
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        score_index: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
    ) -> ForwardOutput:
        """The reward model's one forward: label logits at each row's scoring position.

        Every forward of the reward model (scoring, the attention read-outs, prefix
        scoring with a cache) goes through here. A decoder classifier runs as its
        trunk plus its ``score`` head, read at ``score_index`` (default: the last
        column, the last token of a left-padded row), so the model's configuration
        is never consulted for a pad id: completions may contain the pad/EOS id.
        An encoder classifier runs whole and pools its first ([CLS]) token.

        Args:
            input_ids: (B, T) token ids, laid out by :meth:`encode`.
            attention_mask: (B, T) 1 for real tokens.
            position_ids: (B, T) positions (decoders; see :meth:`encode`).
            score_index: (B,) the scoring column of each row (decoders).
            cache: a key/value cache from an earlier call (decoders).
            use_cache: return the key/value cache (decoders).
            output_attentions: return every layer's attention probabilities (the
                model must be in eager attention).

        Example:
            >>> import torch, llm_gym.assets
            >>> rm = HFRewardModel(llm_gym.assets.reward_model_path("default"), device="cpu")
            >>> rm.forward(torch.tensor([[5, 10, 11]])).logits.shape
            torch.Size([1, 2])
        """
        extra = {"output_attentions": True} if output_attentions else {}
        if self.pooling == "first":
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return ForwardOutput(out.logits, out.attentions)
        if cache is not None:
            extra[self._cache_arg] = cache
        out = self.model.base_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            # the config's default (True) would copy every layer's keys into a cache nobody reads
            use_cache=bool(use_cache) or cache is not None,
            **extra,
        )
        # the head runs on every position, as transformers runs it, so the logits are
        # bit for bit those of the model's own forward
        logits = self.model.score(out.last_hidden_state)
        rows = torch.arange(logits.shape[0], device=logits.device)
        column = logits.shape[1] - 1 if score_index is None else score_index
        return ForwardOutput(
            logits[rows, column], out.attentions, getattr(out, self._cache_arg, None)
        )

    def model_inputs(self, encoded: EncodedBatch) -> dict[str, Any]:
        """The keyword arguments of the Hugging Face model's forward for ``encoded``."""
        inputs = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
        if encoded.position_ids is not None:
            inputs["position_ids"] = encoded.position_ids
        return inputs

    def forward_encoded(
        self, encoded: EncodedBatch, output_attentions: bool = False
    ) -> ForwardOutput:
        """:meth:`forward` on a batch laid out by :meth:`encode`."""
        return self.forward(
            **self.model_inputs(encoded),
            score_index=encoded.score_index,
            output_attentions=output_attentions,
        )

    def score_tensor(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) float32 scores from (B, num_labels) logits, by the ``score`` definition,
        on the logits' device and differentiable (a critic built on the model trains it)."""
        pos, neg = self._score_index
        logits = logits.float()  # a half-precision RM's difference is taken in float32
        return logits[:, pos] if neg is None else logits[:, pos] - logits[:, neg]

    def logits_to_scores(self, logits: torch.Tensor) -> np.ndarray:
        """(B,) float64 scores from (B, num_labels) logits, by the ``score`` definition."""
        return self.score_tensor(logits).detach().double().cpu().numpy()

    @torch.no_grad()
    def score(
        self, batch: CompletionBatch, attention: AttentionRequest | None = None
    ) -> RewardOutput:
        encoded = self.encode(batch)
        if attention is None:
            return RewardOutput(scores=self.logits_to_scores(self.forward_encoded(encoded).logits))
        from llm_gym.rewards.attention import score_with_attention

        return score_with_attention(self, batch, encoded, attention)

    def __repr__(self) -> str:
        return f"HFRewardModel({self.name!r}, pooling={self.pooling!r})"


def _with_special_tokens(tokenizer: Any, ids: list[int]) -> list[int]:
    """``ids`` inside the tokenizer's single-sequence special-token template ([CLS] ... [SEP])."""
    if hasattr(tokenizer, "build_inputs_with_special_tokens"):
        return tokenizer.build_inputs_with_special_tokens(ids)
    # transformers 5 fast tokenizers have no such method: read the template off a probe text
    probe = tokenizer.convert_ids_to_tokens(ids[:1])[0] if ids else ""
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    templated = tokenizer(probe, add_special_tokens=True)["input_ids"]
    start = _offset_of(templated, plain)
    return templated[:start] + ids + templated[start + len(plain) :]


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def _may_hold_tokenizer(name: Any) -> bool:
    """A local model folder holds a tokenizer only if it has tokenizer files; without
    them transformers returns an empty default tokenizer instead of failing."""
    if not isinstance(name, str):
        return False
    folder = Path(name)
    if folder.is_dir():
        return any((folder / f).exists() for f in _TOKENIZER_FILES)
    return True


def _offset_of(with_special: list[int], ids: list[int]) -> int:
    """Where ``ids`` starts inside ``build_inputs_with_special_tokens(ids)``."""
    for start in range(len(with_special) - len(ids) + 1):
        if with_special[start : start + len(ids)] == ids:
            return start
    raise ValueError("the tokenizer's special-token template does not contain the input ids")
