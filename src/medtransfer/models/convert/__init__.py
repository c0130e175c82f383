"""Converters: one function per upstream checkpoint format -> torchvision state dict.

Each converter has the signature ``convert(path: Path, arch: str) -> dict[str, Tensor]``:
it reads one file exactly as its authors publish it (never unpickling arbitrary globals)
and returns the backbone's weights under torchvision's key names for ``arch``. The loader
then drops any classifier head and loads strictly. Converters are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from medtransfer.errors import ModelError

Converter = Callable[[Path, str], dict[str, Tensor]]

# converter name -> "module:function" under medtransfer.models.convert
CONVERTERS: dict[str, str] = {
    "moco": "moco:convert_moco",
    "swav": "swav:convert_swav",
    "pirl": "pirl:convert_pirl",
    "lightning_moco": "lightning:convert_lightning_moco",
    "byol_haiku": "byol:convert_byol",
    "simclr_tf": "simclr:convert_simclr_v1",
}


def get_converter(name: str) -> Converter:
    """The converter function registered under ``name``."""
    try:
        module_name, function = CONVERTERS[name].split(":")
    except KeyError:
        raise ModelError(f"Unknown converter {name!r}; known: {', '.join(CONVERTERS)}.") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, function)
