"""ABC-D credit: a causal LM's own attention over the completion it generated.

Holds :class:`GeneratorAttention`. Unlike ABC it is not free: it costs one
forward of the LM per episode, in eager attention, since it needs the attention
of every completion position.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from llm_gym.rewards.attention import eager_forward, normalise
from llm_gym.rewards.loading import load_pretrained, resolve_device

__all__ = ["GeneratorAttention"]


class GeneratorAttention:
    """Per-completion-token weights from a causal LM's attention (ABC-D).

    The queries are the completion positions: the state after each new token,
    from which the LM generates the next one. Each query's attention over the
    completion tokens so far is renormalised; ``steps="mean"`` averages those
    rows over the generation steps (the paper's ABC-D), ``steps="last"`` keeps
    the last step's row only. Heads are combined by ``heads``, layers averaged.

    Args:
        model: a causal LM (object, hub id or folder), e.g. the reference policy.
        layers: layer indices (negative from the end); ``(-1,)``: the last.
        heads: ``"mean"`` or ``"max"`` over heads.
        steps: ``"mean"`` over generation steps, or ``"last"``.
        device: ``"auto"`` uses CUDA when available.

    Example:
        >>> import numpy as np, llm_gym.assets
        >>> credit = GeneratorAttention(str(llm_gym.assets.LM_DIR), device="cpu")
        >>> w = credit.weights(np.array([5, 10]), np.array([11, 12, 13]))
        >>> w.shape, round(float(w.sum()), 6)
        ((3,), 1.0)
    """

    def __init__(
        self,
        model: str | Any,
        layers: tuple[int, ...] = (-1,),
        heads: str = "mean",
        steps: str = "mean",
        device: str | torch.device = "auto",
    ) -> None:
        from transformers import AutoModelForCausalLM

        if heads not in ("mean", "max"):
            raise ValueError(f"heads must be 'mean' or 'max', got {heads!r}")
        if steps not in ("mean", "last"):
            raise ValueError(f"steps must be 'mean' or 'last', got {steps!r}")
        if not layers:
            raise ValueError("layers must name at least one layer, got an empty tuple")
        if isinstance(model, str):
            model = load_pretrained(AutoModelForCausalLM, model)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.layers, self.heads, self.steps = tuple(layers), heads, steps

    @torch.no_grad()
    def weights(self, prompt_ids: np.ndarray, completion_ids: np.ndarray) -> np.ndarray:
        """(T,) weights over the completion tokens, summing to 1 (one LM forward)."""
        prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        completion = np.asarray(completion_ids, dtype=np.int64).reshape(-1)
        n, t = len(prompt), len(completion)
        if t == 0:
            return np.zeros(0)
        ids = torch.from_numpy(np.concatenate([prompt, completion]))[None].to(self.device)
        attentions = eager_forward(self.model, {"input_ids": ids}).attentions
        n_layers = len(attentions)
        rows = []
        for layer in self.layers:
            if not -n_layers <= layer < n_layers:
                raise ValueError(
                    f"layer {layer} does not exist in an LM with {n_layers} layers; "
                    f"expected an index in [{-n_layers}, {n_layers - 1}]"
                )
            a = attentions[layer][0, :, n:, n:].double()  # heads x completion queries x keys
            rows.append(a.mean(0) if self.heads == "mean" else a.amax(0))
        block = torch.stack(rows).mean(0).cpu().numpy()  # causal: lower triangular
        block = block / np.clip(block.sum(-1, keepdims=True), 1e-300, None)
        return normalise(block[-1] if self.steps == "last" else block.mean(0))
