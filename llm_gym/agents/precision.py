"""Mixed precision for the token agents: autocast contexts and fp16 loss scaling.

Holds :func:`autocast` (the compute-dtype context a model's forwards run in),
:func:`float32_head` (the output layer in float32, outside autocast) and
:class:`GradientScaler` (dynamic loss scaling for float16 updates, attached
through documented torch hooks, so stable-baselines3's ``train`` runs unchanged).

What runs in which precision: the trunk's forwards (rollout decoding, the
update's window forwards) in the compute dtype; the output layer, the
log-probabilities of the PPO ratio and of the KL, the critic and the optimizer's
weights in float32. bfloat16 needs no loss scaling; float16 does: its gradients
underflow below 6e-8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, cast

import torch
from torch import nn

__all__ = ["GradientScaler", "autocast", "float32_head"]


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; no context for None or float32.

    Example:
        >>> with autocast(torch.device("cpu"), torch.bfloat16):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def float32_head(head: nn.Module, hidden: torch.Tensor, compute: bool) -> torch.Tensor:
    """``head(hidden)`` in float32: outside autocast when ``compute`` (a compute dtype is set).

    Example:
        >>> head = nn.Linear(4, 3)
        >>> float32_head(head, torch.ones(2, 4, dtype=torch.bfloat16), compute=True).dtype
        torch.float32
    """
    if not compute:
        return head(hidden).float()
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return head(hidden.float()).float()


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by the scaler's factor."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, scaler: GradientScaler) -> torch.Tensor:
        ctx.scale = scaler.scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class GradientScaler:
    """Dynamic loss scaling for float16 updates, as ``torch.amp.GradScaler`` does it.

    :meth:`scale_gradients` marks the tensors a loss is computed from (the policy's
    values, log-probs and entropy): their gradients are multiplied by ``scale`` on
    the way back, so the float16 trunk's gradients do not underflow. A hook on each
    parameter divides its gradient by ``scale`` as soon as it is accumulated, so the
    gradient clipping and the optimizer see true gradients. An update whose
    gradients overflowed is skipped (its gradients are dropped before the optimizer
    step: Adam leaves parameters without gradients alone) and the scale halves; after
    ``growth_interval`` good updates it doubles.

    Args:
        parameters: the parameters the optimizer updates.
        optimizer: the optimizer; a step pre-hook drops overflowed gradients.
        scale: the initial scale.
        growth_interval: good updates before the scale doubles.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        >>> scaler = GradientScaler(layer.parameters(), optimizer, scale=1024.0)
        >>> scaler.scale_gradients(layer(torch.ones(1, 2))).sum().backward()
        >>> layer.bias.grad.item()  # the true gradient, not 1024 times it
        1.0
    """

    def __init__(
        self,
        parameters: Iterable[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scale: float = 2.0**16,
        growth_interval: int = 2000,
    ) -> None:
        self.scale, self.growth_interval = float(scale), growth_interval
        # whether every gradient of this backward is finite: a tensor, so that checking
        # each parameter does not wait for the GPU; read once, before the step
        self._finite: torch.Tensor | None = None
        #: updates skipped because their gradients overflowed
        self.skipped = 0
        self._good = 0
        self._parameters = [p for p in parameters if p.requires_grad]
        for parameter in self._parameters:
            parameter.register_post_accumulate_grad_hook(self._unscale)
        optimizer.register_step_pre_hook(self._before_step)

    def scale_gradients(self, *tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The tensors, unchanged, with their gradients scaled on the way back."""
        # torch leaves Function.apply unannotated
        scaled = tuple(_ScaleGradient.apply(t, self) for t in tensors)  # type: ignore[no-untyped-call]
        return scaled[0] if len(scaled) == 1 else scaled

    def _unscale(self, parameter: torch.Tensor) -> None:
        # a post-accumulate-grad hook runs once the gradient exists
        grad = cast(torch.Tensor, parameter.grad)
        grad.div_(self.scale)
        finite = torch.isfinite(grad).all()
        self._finite = finite if self._finite is None else self._finite & finite

    def _before_step(
        self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        overflowed = self._finite is not None and not bool(self._finite)
        self._finite = None
        if overflowed:
            for parameter in self._all(optimizer):
                parameter.grad = None
            self.scale /= 2.0
            self.skipped += 1
            self._good = 0
        else:
            self._good += 1
            if self._good >= self.growth_interval:
                self.scale *= 2.0
                self._good = 0

    @staticmethod
    def _all(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
        for group in optimizer.param_groups:
            yield from group["params"]
