"""Reading weights files safely, and fingerprinting state dicts.

Only tensors are ever read: ``torch.load(weights_only=True)`` for PyTorch files and
safetensors for ``.safetensors`` files. Whatever else a file holds is a
:class:`ModelError` that names the file and says how to re-save it.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from medtransfer.errors import ModelError

_SHOW = 10  # keys listed in an error message


def key_listing(keys: list[str]) -> str:
    """The first keys, comma-separated, with the total when some are left out."""
    shown = ", ".join(keys[:_SHOW])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOW else shown


def _existing(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(
            f"The weights file {path} does not exist. Check the path given with --weights."
        )
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a flat ``{name: tensor}`` dict (or one wrapped as ``{'state_dict': ...}``) safely.

    Uses ``torch.load(weights_only=True)`` on the CPU; anything else is a ModelError that
    names the file.
    """
    path = _existing(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise ModelError(
                f"The weights file {path} holds non-tensor Python objects and is refused for "
                "safety (it is loaded with torch.load(weights_only=True)). Re-save just the "
                "tensors: torch.save(model.state_dict(), PATH)."
            ) from err
        raise ModelError(
            f"The weights file {path} cannot be read as a PyTorch state dict (corrupt or not a "
            "torch.save file). Re-save it with torch.save(model.state_dict(), PATH)."
        ) from err
    except Exception as err:  # zip/EOF errors from a truncated or foreign file
        raise ModelError(
            f"The weights file {path} cannot be read as a PyTorch state dict ({err}). It may be "
            "truncated or corrupt; re-download or re-save it."
        ) from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ModelError(
            f"The weights file {path} holds a {type(obj).__name__}, not a state dict. Save "
            "model.state_dict() (a flat dict of tensors, or {'state_dict': ...})."
        )
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise ModelError(
            f"The weights file {path} is not a flat dict of tensors: entries {key_listing(bad)} "
            "are not tensors. Save model.state_dict() (or {'state_dict': model.state_dict()})."
        )
    return dict(obj)


def read_weights_file(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file, or of a PyTorch file (:func:`read_state_dict`)."""
    path = _existing(path)
    if path.suffix != ".safetensors":
        return read_state_dict(path)
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:
        raise ModelError(f"{path} is not a readable safetensors file ({err}).") from err


def state_dict_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """Hex sha256 over the sorted keys, dtypes, shapes and raw bytes of a state dict."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        header = f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
