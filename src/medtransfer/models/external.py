"""Backbones beyond the catalog: ``timm:NAME`` and ``torchvision:NAME``.

For users who bring newer architectures (DINOv2, ViTs, ConvNeXts, ...). The pretrained
weights are fetched through medtransfer's own downloader (resumed, checksummed, into the
cache), never through a hub client at run time, and loaded strictly. Pooling follows the
family: timm's ``num_classes=0`` head (global average pool for CNNs, class token or the
model's own pooling for transformers); for torchvision the final classifier ``Linear`` is
replaced by the identity, which leaves each family's own pooling in place. The input
normalisation is the mean/std the weights were trained with (from their metadata).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from medtransfer.config import Roots
from medtransfer.download import fetch, recorded_sha256
from medtransfer.errors import ModelError
from medtransfer.fsutil import sha256_file
from medtransfer.models.catalog import ModelSpec
from medtransfer.models.normalization import standardize_kind

PREFIXES = ("timm:", "torchvision:")


def is_external(name: object) -> bool:
    """Whether ``name`` names a timm or torchvision model rather than a catalog entry."""
    return isinstance(name, str) and name.strip().lower().startswith(PREFIXES)


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no Linear classifier to remove.")
    return linears[-1]


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def torchvision_weights(name: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """(url, mean, std) of torchvision's DEFAULT weights for ``name``."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise ModelError(
            f"torchvision has no model {name!r} with pretrained weights; see "
            "torchvision.models.list_models() for the names."
        ) from None
    preset = weights.transforms()
    return weights.url, tuple(preset.mean), tuple(preset.std)


def timm_weights_url(pretrained_cfg: dict[str, object]) -> str:
    """Where timm's pretrained weights of a model are published (HF hub first)."""
    hub = pretrained_cfg.get("hf_hub_id")
    if hub:
        return f"https://huggingface.co/{hub}/resolve/main/model.safetensors"
    url = pretrained_cfg.get("url")
    if url:
        return str(url)
    raise ModelError("timm lists no pretrained weights for this model; pass --weights PATH.")


def _read(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ModelError(f"{path} is not a readable safetensors file ({err}).") from None
    from medtransfer.models.backbone import read_state_dict

    return read_state_dict(path)


def _fetch(url: str, roots: Roots, family: str, progress: bool) -> tuple[Path, str]:
    filename = url.rsplit("/", 1)[1].split("?", 1)[0]
    if "huggingface.co/" in url:  # several models share model.safetensors: keep the repo
        filename = url.split("huggingface.co/", 1)[1].split("/resolve/", 1)[0].replace("/", "--")
        filename += ".safetensors"
    stem = filename.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    known = prefix if len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix) else None
    dest = roots.cache / "weights" / family / filename
    path = fetch(url, dest, sha256_prefix=known, progress=progress)
    return path, recorded_sha256(path) or sha256_file(path)


def build_external(
    name: str,
    roots: Roots,
    *,
    weights: Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[ModelSpec, nn.Module, str, Path]:
    """Trunk (head removed, weights loaded strictly) of ``timm:NAME`` / ``torchvision:NAME``.

    Returns (spec, trunk, weights sha256, weights path); the trunk maps normalised images
    ``(B, 3, H, W)`` to pooled features ``(B, spec.feature_dim)``.
    """
    from medtransfer.models.backbone import _seeded, load_strict

    family, _, model_name = name.strip().partition(":")
    family = family.lower()
    with _seeded(seed):
        if family == "timm":
            import timm

            try:
                trunk = timm.create_model(model_name, pretrained=False, num_classes=0)
            except RuntimeError as err:
                raise ModelError(f"timm has no model {model_name!r} ({err}).") from None
            cfg = dict(trunk.pretrained_cfg)
            mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg["std"])
            head = str(cfg.get("classifier") or "")
            dim = int(getattr(trunk, "head_hidden_size", None) or trunk.num_features)
            url = None if weights else timm_weights_url(cfg)
        else:
            import torchvision

            try:
                trunk = torchvision.models.get_model(model_name, weights=None)
            except ValueError as err:
                raise ModelError(f"torchvision has no model {model_name!r} ({err}).") from None
            url, mean, std = torchvision_weights(model_name)
            url = None if weights else url
            head, last = _last_linear(trunk)
            dim = last.in_features
    path, digest = (
        (Path(weights), sha256_file(weights))
        if weights
        else _fetch(str(url), roots, family, progress)
    )
    state = _read(path)
    if state.get("state_dict") is not None and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # type: ignore[assignment]
    if head:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    if family == "torchvision":
        _replace(trunk, head, nn.Identity())
    load_strict(trunk, state, what=f"{path} ({name})")
    spec = ModelSpec(
        name=f"{family}:{model_name}",
        aliases=(),
        arch=f"{family}:{model_name}",
        feature_dim=dim,
        normalization=standardize_kind(mean, std),
        source="external",
        url=url,
        filename=path.name,
        sha256_prefix=None,
        method=f"{family} pretrained weights",
        pretraining_data="see the model's card",
        licence="see the model's card",
        description=f"{model_name} from {family}",
    )
    return spec, trunk.eval(), digest, path
