"""Loading Hugging Face tokenizers and models by hub id or local path, with clear errors.

Nothing here downloads when the machine is offline: a missing model is an error
that names it and says what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DTYPES",
    "HostToDevice",
    "load_pretrained",
    "load_tokenizer",
    "model_positions",
    "resolve_device",
    "resolve_dtype",
]

#: the floating-point types a model can run in, by the names the options accept
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def model_positions(config: Any) -> int | None:
    """The positions a transformers model config allows (``None``: no fixed limit given).

    >>> from transformers import GPT2Config
    >>> model_positions(GPT2Config(n_positions=256))
    256
    """
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


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


def resolve_dtype(dtype: str | torch.dtype | None, name: str = "dtype") -> torch.dtype | None:
    """A ``dtype`` option as a torch dtype; ``None`` (or ``"auto"``) stays None.

    ``name`` is the option's name in the error message.

    Example:
        >>> resolve_dtype("bf16"), resolve_dtype(torch.float16), resolve_dtype(None)
        (torch.bfloat16, torch.float16, None)
    """
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(
        f"{name} must be None, 'auto', or one of {sorted(set(DTYPES))} (or the torch dtype), "
        f"got {dtype!r}"
    )


class HostToDevice:
    """Host arrays to one device, through reused pinned staging buffers when it is a GPU.

    A copy from pageable host memory to a GPU is synchronous and staged by the
    driver; from pinned (page-locked) memory it is one DMA that may overlap other
    work. Pinning is slow, so each named stream of arrays (``key``) keeps one
    pinned buffer, regrown only when an array outgrows it, and an event per buffer
    keeps the next write from racing the copy still in flight. On the CPU the
    array is wrapped without a copy, as ``torch.as_tensor`` does.

    Args:
        device: where the tensors go.

    Example:
        >>> to_cpu = HostToDevice("cpu")
        >>> to_cpu(np.array([[1, 2]]), "ids").tolist()
        [[1, 2]]
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = resolve_device(device)
        self._pinned = self.device.type == "cuda"
        self._buffers: dict[str, tuple[torch.Tensor, Any]] = {}

    def __call__(self, array: np.ndarray | torch.Tensor, key: str) -> torch.Tensor:
        """``array`` on the device (``key`` names its staging buffer)."""
        if not self._pinned:
            return torch.as_tensor(array, device=self.device)
        host = torch.as_tensor(array)
        done: Any  # a CUDA event, recorded after each copy out of the buffer
        buffer, done = self._buffers.get(key, (None, None))
        if buffer is None or buffer.dtype != host.dtype or buffer.numel() < host.numel():
            buffer = torch.empty(max(host.numel(), 1) * 2, dtype=host.dtype, pin_memory=True)
            done = torch.cuda.Event()
        else:
            done.synchronize()  # the previous copy out of this buffer has finished
        staged = buffer[: host.numel()].view(host.shape)
        staged.copy_(host)
        out = staged.to(self.device, non_blocking=True)
        done.record()
        self._buffers[key] = (buffer, done)
        return out

    def dict(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Each array of a dict observation on the device (buffers keyed by its keys)."""
        return {key: self(value, key) for key, value in arrays.items()}


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


_PICKLE_WEIGHTS = (
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "tf_model.h5",
    "flax_model.msgpack",
)


def _folder_problem(folder: Path, trust_remote_code: bool) -> str | None:
    """Why a local model folder cannot load, when that can be told from its files."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return (
            f"the folder has no config.json (it holds {sorted(p.name for p in folder.iterdir())})"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        return f"its config.json is not valid JSON ({err})"
    if "auto_map" in config and not trust_remote_code:
        return (
            "its config.json names custom model code (auto_map), which runs only with "
            "trust_remote_code=True; pass that if you trust the code in the folder"
        )
    safetensors = list(folder.glob("*.safetensors")) + list(folder.glob("*.safetensors.index.json"))
    pickles = [name for name in _PICKLE_WEIGHTS if (folder / name).is_file()]
    if not safetensors and pickles:
        return (
            f"it holds {pickles[0]} but no model.safetensors; llm-gym loads weights from "
            "safetensors only (pickled weights can run code when loaded). Convert once: "
            "model = AutoModel...from_pretrained(folder); model.save_pretrained(folder) "
            "(transformers writes safetensors by default)"
        )
    if not safetensors:
        return "it holds no model.safetensors"
    return None


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
    """``auto_class.from_pretrained`` from safetensors only, with a clear error when it cannot.

    A local folder that cannot load is diagnosed from its files (no config, pickled
    weights only, custom code without ``trust_remote_code``, a corrupt weights file);
    a name that is no folder is reported as missing from the Hub.
    """
    folder = Path(name_or_path)
    if folder.is_dir():
        problem = _folder_problem(folder, trust_remote_code)
        if problem is not None:
            raise OSError(f"could not load model {name_or_path!r}: {problem}")
    elif folder.exists():
        raise OSError(f"could not load model {name_or_path!r}: it is a file, expected a folder")
    try:
        with _quiet_loading():
            return auto_class.from_pretrained(
                name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
            )
    except (OSError, ValueError) as err:
        if folder.is_dir():
            raise OSError(
                f"could not load model {name_or_path!r} from its folder: {type(err).__name__}: {err}"
            ) from err
        raise _not_found("model", name_or_path, err) from err
    except Exception as err:
        if type(err).__name__ == "SafetensorError":  # a truncated or corrupt weights file
            files = sorted(str(p) for p in folder.glob("*.safetensors")) or [name_or_path]
            raise OSError(
                f"could not read the weights in {', '.join(files)}: {err}; the file is truncated "
                "or corrupt, save the model again"
            ) from err
        raise
