"""Loading Hugging Face tokenizers and models by hub id or local path, with clear errors.

Nothing here downloads when the machine is offline: a missing model is an error
that names it and says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["load_pretrained", "load_tokenizer", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device {device!r} is not a torch device; expected 'auto', 'cpu', 'cuda', ..."
        ) from err


def _not_found(kind: str, name: str, err: Exception) -> OSError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = (
        "it is not a local folder, and the Hugging Face Hub is off (HF_HUB_OFFLINE is set)"
        if offline
        else "it is not a local folder, and it could not be fetched from the Hugging Face Hub "
        "(no network, or no such id)"
    )
    return OSError(
        f"could not load {kind} {name!r}: {where}. Save it with save_pretrained() on a "
        f"machine with network access and pass the folder's path. ({type(err).__name__}: {err})"
    )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer with AutoTokenizer, turning 'not found' into a clear OSError."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _not_found("tokenizer", name_or_path, err) from err


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' per-load progress bar (tiny models load in milliseconds)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_pretrained(
    auto_class: Any, name_or_path: str, trust_remote_code: bool = False, **kwargs: Any
) -> Any:
    """``auto_class.from_pretrained`` from safetensors only, with a clear error when missing."""
    try:
        with _quiet_loading():
            return auto_class.from_pretrained(
                name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
            )
    except (OSError, ValueError) as err:
        raise _not_found("model", name_or_path, err) from err
