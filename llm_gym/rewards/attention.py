"""Reading a reward model's attention from its scoring position, in the forward that scores.

Holds :func:`score_with_attention` (the fast read-out, what
:class:`~llm_gym.rewards.HFRewardModel` calls when ABC asks for attention),
:func:`reference_attention` (the same contract computed the plain way, from every
layer's full attention matrix in eager attention), :func:`attention_rows` (the raw
rows over reward-model positions) and :func:`map_to_env_tokens` (credit across
tokenizers).

How the row is read without eager attention: forward hooks on the chosen
layers' query/key projections see their outputs while the rest of the model
keeps its fast (sdpa/flash) attention; the hooks recompute only the scoring
position's query row against all keys (O(batch x heads x tokens) extra work and
memory). Supported families: GPT-2 (fused ``c_attn``), BERT/RoBERTa/ELECTRA and
DistilBERT ([CLS] query, padding mask), Llama and Qwen2 (RoPE from the captured
position embeddings, grouped key/value heads). Any other architecture, and
attention rollout (which needs every layer's full matrix), run the reference
read-out; the unsupported case warns once per model type.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardOutput

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from llm_gym.rewards.hf import EncodedBatch, HFRewardModel

__all__ = [
    "attention_rows",
    "eager_forward",
    "map_to_env_tokens",
    "normalise",
    "reference_attention",
    "score_with_attention",
    "supported_family",
]

_FAMILIES = {
    "gpt2": "gpt2",
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
    "distilbert": "distilbert",
    "llama": "rope",
    "qwen2": "rope",
}
_warned: set[str] = set()
_modules_cache: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()


def supported_family(model: PreTrainedModel) -> str | None:
    """Read-out family: ``"gpt2"``, ``"bert"``, ``"distilbert"``, ``"rope"``, or None."""
    config = model.config
    family = _FAMILIES.get(config.model_type)
    if family == "rope" and any(
        t != "full_attention" for t in getattr(config, "layer_types", None) or []
    ):
        return None  # sliding-window layers mask keys in ways the row read-out does not model
    return family


def _attention_modules(model: nn.Module, family: str) -> list[Any]:
    if model not in _modules_cache:
        _modules_cache[model] = _find_attention_modules(model, family)
    return _modules_cache[model]


def _find_attention_modules(model: nn.Module, family: str) -> list[Any]:
    def is_attention(m: nn.Module) -> bool:
        if family == "gpt2":
            return hasattr(m, "c_attn") and not getattr(m, "is_cross_attention", False)
        if family == "bert":
            return type(m).__name__.endswith("SelfAttention") and hasattr(m, "query")
        if family == "distilbert":
            return hasattr(m, "q_lin") and hasattr(m, "k_lin")
        return hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "num_key_value_groups")

    return [m for m in model.modules() if is_attention(m)]


def _softmax_row(
    query: torch.Tensor, keys: torch.Tensor, scaling: float, allowed: torch.Tensor
) -> torch.Tensor:
    """(B, H, D) query row against (B, H, T, D) keys -> (B, H, T) attention probabilities."""
    logits = torch.matmul(query.float().unsqueeze(-2), keys.float().transpose(-1, -2))
    logits = logits.squeeze(-2) * scaling
    logits = logits.masked_fill(~allowed[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1)


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, n_heads * D) -> (B, n_heads, T, D)."""
    b, t, _ = x.shape
    return x.view(b, t, n_heads, -1).transpose(1, 2)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _RowReader:
    """Hooks one attention module and stores its scoring-row probabilities (B, H, T)."""

    # ``module`` is an attention module of one of the families, whose projections and
    # head counts have per-family names (c_attn, query, q_lin, q_proj): typed Any
    def __init__(
        self, module: Any, family: str, query_index: torch.Tensor, allowed: torch.Tensor
    ) -> None:
        self.module, self.family = module, family
        self.query_index, self.allowed = query_index, allowed
        self.rows: torch.Tensor | None = None
        self._query: torch.Tensor | None = None
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self.handles: list[Any] = []

    def install(self) -> _RowReader:
        m = self.module
        if self.family == "gpt2":
            self.handles.append(m.c_attn.register_forward_hook(self._on_fused_qkv))
        elif self.family == "bert":
            self.handles.append(m.query.register_forward_hook(self._on_query))
            self.handles.append(m.key.register_forward_hook(self._on_keys))
        elif self.family == "distilbert":
            self.handles.append(m.q_lin.register_forward_hook(self._on_query))
            self.handles.append(m.k_lin.register_forward_hook(self._on_keys))
        else:
            self.handles.append(
                m.register_forward_pre_hook(self._on_attention_inputs, with_kwargs=True)
            )
            self.handles.append(m.q_proj.register_forward_hook(self._on_query))
            self.handles.append(m.k_proj.register_forward_hook(self._on_keys))
        return self

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _query_row(self, q: torch.Tensor) -> torch.Tensor:
        index = self.query_index[:, None, None].expand(-1, 1, q.shape[-1])
        return q.gather(1, index).squeeze(1)

    def _on_attention_inputs(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        embeddings = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
        if embeddings is None:
            raise RuntimeError(f"{type(module).__name__} was called without position_embeddings")
        self._rope = embeddings

    def _on_query(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        self._query = self._query_row(output)  # (B, H * D)

    def _on_fused_qkv(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        q, k, _ = output.split(self.module.split_size, dim=2)
        self._store(self._query_row(q), k, self.module.num_heads, self.module.num_heads)

    def _on_keys(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        m = self.module
        # the query projection runs before the key projection, so its hook has set the row
        query = cast(torch.Tensor, self._query)
        if self.family == "bert":
            self._store(query, output, m.num_attention_heads, m.num_attention_heads)
        elif self.family == "distilbert":
            self._store(query, output, m.n_heads, m.n_heads)
        else:
            config = m.config
            self._store(query, output, config.num_attention_heads, config.num_key_value_heads)

    def _store(self, query: torch.Tensor, keys: torch.Tensor, n_heads: int, n_kv: int) -> None:
        b = query.shape[0]
        q = query.view(b, n_heads, -1)
        k = _heads(keys, n_kv)
        if self.family == "rope":
            # the attention module's pre-hook, which runs before its projections, set them
            cos, sin = cast(tuple[torch.Tensor, torch.Tensor], self._rope)
            rows = torch.arange(b, device=q.device)
            cos_q, sin_q = (
                cos[rows, self.query_index][:, None],
                sin[rows, self.query_index][:, None],
            )
            q = q * cos_q + _rotate_half(q) * sin_q
            k = k * cos[:, None] + _rotate_half(k) * sin[:, None]
            k = k.repeat_interleave(n_heads // n_kv, dim=1)
        self.rows = _softmax_row(q, k, self.module.scaling, self.allowed)
        self._query = self._rope = None


def _allowed_keys(encoded: EncodedBatch, causal: bool) -> torch.Tensor:
    allowed = encoded.attention_mask.bool()
    if causal:
        positions = torch.arange(allowed.shape[1], device=allowed.device)
        allowed = allowed & (positions[None, :] <= encoded.score_index[:, None])
    return allowed


def _resolve_layers(layers: tuple[int, ...], n_layers: int) -> list[int]:
    resolved = []
    for layer in layers:
        if not -n_layers <= layer < n_layers:
            raise ValueError(
                f"layer {layer} does not exist in a reward model with {n_layers} layers; "
                f"expected an index in [{-n_layers}, {n_layers - 1}]"
            )
        resolved.append(layer % n_layers)
    return sorted(set(resolved))


def eager_forward(
    model: PreTrainedModel, inputs: dict[str, Any], forward: Callable[..., Any] | None = None
) -> Any:
    """``forward(**inputs, output_attentions=True)`` with ``model`` in eager attention.

    ``forward`` defaults to the model itself; the attention setting is restored after.
    """
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        return (forward or model)(**inputs, output_attentions=True)
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


def _combine_heads(rows: torch.Tensor, heads: str) -> torch.Tensor:
    return rows.mean(dim=1) if heads == "mean" else rows.amax(dim=1)


def _rollout_rows(
    attentions: tuple[torch.Tensor, ...], score_index: torch.Tensor, heads: str
) -> torch.Tensor:
    """Rollout (Abnar & Zuidema 2020) row of the scoring position: e_s A~_L ... A~_1.

    A~_l = 0.5 * A_l + 0.5 * I with rows renormalised, A_l heads combined.
    """
    b, _, t, _ = attentions[0].shape
    row = torch.zeros(b, t, dtype=torch.float32, device=attentions[0].device)
    row[torch.arange(b), score_index] = 1.0
    eye = torch.eye(t, device=row.device)
    for layer in reversed(attentions):
        a = _combine_heads(layer.float(), heads)
        a = 0.5 * a / a.sum(-1, keepdim=True).clamp_min(1e-12) + 0.5 * eye
        row = torch.einsum("bi,bij->bj", row, a)
    return row


def _eager_rows(
    rm: HFRewardModel, encoded: EncodedBatch, request: AttentionRequest
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and rows read off every layer's full attention matrix (eager attention)."""
    out = eager_forward(rm.model, {"encoded": encoded}, rm.forward_encoded)
    if request.rollout:
        return out.logits, _rollout_rows(out.attentions, encoded.score_index, request.heads)
    batch_rows = torch.arange(encoded.input_ids.shape[0], device=encoded.input_ids.device)
    chosen = _resolve_layers(request.layers, len(out.attentions))
    per_layer = [
        _combine_heads(out.attentions[i][batch_rows, :, encoded.score_index].float(), request.heads)
        for i in chosen
    ]
    return out.logits, torch.stack(per_layer).mean(0)


def _hooked_rows(
    rm: HFRewardModel, encoded: EncodedBatch, request: AttentionRequest, family: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and rows recomputed by hooks on the chosen layers (the model keeps its attention)."""
    modules = _attention_modules(rm.model, family)
    allowed = _allowed_keys(encoded, causal=rm.pooling == "last")
    readers = [
        _RowReader(modules[i], family, encoded.score_index, allowed).install()
        for i in _resolve_layers(request.layers, len(modules))
    ]
    try:
        logits = rm.forward_encoded(encoded).logits
    finally:
        for reader in readers:
            reader.remove()
    # the forward ran every hooked layer, so each reader holds its rows
    per_layer = [
        _combine_heads(cast(torch.Tensor, reader.rows), request.heads) for reader in readers
    ]
    return logits, torch.stack(per_layer).mean(0)


def attention_rows(
    rm: HFRewardModel, encoded: EncodedBatch, request: AttentionRequest
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the (B, T) attention row of each pair's scoring position over RM positions.

    Heads are combined by ``request.heads``; several layers are averaged. The
    row covers every RM position (prompt, special tokens and padding included).
    Uses the hooked read-out where the family is supported, else eager attention.
    """
    model = rm.model
    family = supported_family(model)
    if family is None and not request.rollout and model.config.model_type not in _warned:
        _warned.add(model.config.model_type)
        warnings.warn(
            f"no fast attention read-out for model type {model.config.model_type!r}; "
            "running the reward model in eager attention for ABC (slower, more memory)",
            stacklevel=3,
        )
    if request.rollout or family is None:
        return _eager_rows(rm, encoded, request)
    return _hooked_rows(rm, encoded, request, family)


def normalise(weights: np.ndarray) -> np.ndarray:
    """``weights / weights.sum()``; uniform when the sum is zero or not finite."""
    total = weights.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(len(weights), 1.0 / max(len(weights), 1))
    return weights / total


def map_to_env_tokens(
    rm_weights: np.ndarray, rm_spans: np.ndarray, env_spans: np.ndarray
) -> np.ndarray:
    """Split RM-token weights onto env tokens by character overlap; sums to 1.

    Each RM token's weight goes to the env tokens overlapping its characters, in
    proportion to the overlap. Weight of an RM token that overlaps no env token
    is dropped before renormalising; if nothing overlaps, the result is uniform.
    """
    rm_spans = np.asarray(rm_spans, dtype=np.int64).reshape(-1, 2)
    env_spans = np.asarray(env_spans, dtype=np.int64).reshape(-1, 2)
    starts = np.maximum(env_spans[:, None, 0], rm_spans[None, :, 0])
    ends = np.minimum(env_spans[:, None, 1], rm_spans[None, :, 1])
    overlap = np.clip(ends - starts, 0, None).astype(np.float64)  # (T_env, n_rm)
    covered = overlap.sum(axis=0)
    share = np.divide(overlap, covered, out=np.zeros_like(overlap), where=covered > 0)
    return normalise(share @ np.asarray(rm_weights, dtype=np.float64))


def _reward_output(
    rm: HFRewardModel,
    batch: CompletionBatch,
    encoded: EncodedBatch,
    logits: torch.Tensor,
    rows: torch.Tensor,
) -> RewardOutput:
    """Scores, and each pair's row restricted to its env completion tokens (each sums to 1)."""
    rows_np = rows.double().cpu().numpy()
    attention = []
    for i, positions in enumerate(encoded.completion_positions):
        weights = rows_np[i, positions]
        if encoded.completion_char_spans is None:
            attention.append(normalise(weights))
        else:
            env_spans = batch.completion_char_spans(i)
            attention.append(
                map_to_env_tokens(weights, encoded.completion_char_spans[i], env_spans)
            )
    return RewardOutput(scores=rm.logits_to_scores(logits), attention=attention)


@torch.no_grad()
def score_with_attention(
    rm: HFRewardModel, batch: CompletionBatch, encoded: EncodedBatch, request: AttentionRequest
) -> RewardOutput:
    """Scores plus each pair's attention over its env completion tokens (each sums to 1).

    The fast read-out: one row per chosen layer, in the forward that scores.
    """
    logits, rows = attention_rows(rm, encoded, request)
    return _reward_output(rm, batch, encoded, logits, rows)


@torch.no_grad()
def reference_attention(
    rm: HFRewardModel, batch: CompletionBatch, request: AttentionRequest
) -> RewardOutput:
    """What :func:`score_with_attention` returns, read the plain way: the reference read-out.

    Runs ``rm`` (an :class:`~llm_gym.rewards.HFRewardModel`) once in eager attention
    with ``output_attentions=True``, takes every layer's full attention matrix, and
    reads the scoring position's row of the requested layers (heads combined, layers
    averaged; or the rollout row), restricted to the completion and mapped to the
    environment's tokens as the fast read-out does. Slower and O(T^2) memory per
    layer: for checking the fast read-out, and for offline measurements.

    Example:
        >>> import numpy as np, llm_gym.assets
        >>> from llm_gym.rewards import HFRewardModel
        >>> from llm_gym.rewards.loading import load_tokenizer
        >>> rm = HFRewardModel(llm_gym.assets.reward_model_path("default"), device="cpu")
        >>> tokenizer = load_tokenizer(str(llm_gym.assets.TOKENIZER_DIR))
        >>> batch = CompletionBatch([np.array([5, 10])], [np.array([11, 12, 13])], tokenizer)
        >>> reference = reference_attention(rm, batch, AttentionRequest())
        >>> fast = rm(batch, AttentionRequest())
        >>> bool(np.allclose(reference.attention[0], fast.attention[0], atol=1e-6))
        True
    """
    encoded = rm.encode(batch)
    logits, rows = _eager_rows(rm, encoded, request)
    return _reward_output(rm, batch, encoded, logits, rows)
