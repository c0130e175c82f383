"""The contract every PyTorch-pickle converter keeps (MoCo, SwAV, PIRL, Lightning MoCo).

For each catalog model in these formats, a checkpoint in its authors' layout
(``upstream.py``) is served from 127.0.0.1 and loaded as that catalog model: downloaded,
converted by the converter the catalog names (looked up in the real registry), validated by
a strict load and cached. The backbone's pooled features must equal the source encoder's
exactly. A missing or extra backbone key, or a Python global that is not allowed, is a
ModelError naming the key or the global, and leaves no converted file in the cache.
Format-specific behaviour is tested in ``test_<format>.py``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from medtransfer.config import Roots
from medtransfer.errors import ModelError
from medtransfer.models.catalog import ModelSpec, get_model_spec, list_models
from medtransfer.models.convert.lightning import ALLOWED_GLOBALS
from medtransfer.models.converted import converted_path
from medtransfer.models.loader import load_backbone
from tests.models.convert import test_byol, test_simclr, upstream
from tests.support.checkpoints import Payload, save_torch
from tests.support.http_server import serve_directory


@dataclass(frozen=True)
class Format:
    """One upstream layout, as the catalog model ``model`` publishes it.

    Attributes:
        model: the catalog entry whose file this is.
        filename: the published file name.
        encoder: builds the seeded source encoder (torchvision layout, own head).
        checkpoint: wraps the encoder in the upstream checkpoint.
        save: writes a checkpoint to a path.
        weights: the mapping inside a checkpoint that holds the encoder's tensors.
        prefix: the key prefix of the encoder's tensors there.
        missing: an encoder key whose absence the strict load must name.
        extra: a key (and shape) the architecture lacks, which the strict load must name.
        allowed: how the refusal message lists the globals the format allows.
    """

    model: str
    filename: str
    encoder: Callable[[], nn.Module]
    checkpoint: Callable[[nn.Module], dict]
    save: Callable[[object, Path], Path]
    weights: Callable[[dict], MutableMapping[str, Tensor]]
    prefix: str
    missing: str
    extra: tuple[str, tuple[int, ...]]
    allowed: str = "none"

    @property
    def arch(self) -> str:
        return get_model_spec(self.model).arch


def _legacy(obj: object, path: Path) -> Path:
    """A file from torch < 1.6 (the released MoCo v2, SwAV and PIRL files)."""
    return save_torch(obj, path, legacy=True)


def _state_dict(checkpoint: dict) -> MutableMapping[str, Tensor]:
    return checkpoint["state_dict"]


MOCO_CXR_R18 = Format(
    model="moco-cxr_r18",
    filename="r8w-00001.pth.tar",
    encoder=lambda: upstream.moco_encoder("resnet18", seed=3),
    checkpoint=lambda encoder: upstream.moco_cxr_checkpoint(encoder, "resnet18"),
    save=save_torch,
    weights=_state_dict,
    prefix="module.encoder_q.",
    missing="layer1.0.conv1.weight",
    extra=("layer1.0.conv9.weight", (64, 64, 3, 3)),
)
SWAV = Format(
    model="swav",
    filename="swav_800ep_pretrain.pth.tar",
    encoder=upstream.swav_resnet50,
    checkpoint=upstream.swav_released,
    save=_legacy,
    weights=lambda checkpoint: checkpoint,
    prefix="module.",
    missing="layer4.2.bn3.running_var",
    extra=("layer4.3.conv1.weight", (512, 2048, 1, 1)),
)
PIRL = Format(
    model="pirl",
    filename="PIRL.pth",
    encoder=upstream.pirl_encoder,
    checkpoint=upstream.pirl_checkpoint,
    save=_legacy,
    weights=lambda checkpoint: checkpoint["model"],
    prefix="module.encoder.",
    missing="layer3.5.conv2.weight",
    extra=("layer3.6.conv2.weight", (256, 256, 3, 3)),
)
LIGHTNING = Format(
    model="mimic-chexpert_lr_0.1",
    filename="mimic-chexpert_lr_0.1_bs_128_fd_128_qs_65536.pt",
    encoder=upstream.lightning_densenet,
    checkpoint=lambda encoder: upstream.lightning_checkpoint(encoder, old_hparams=False),
    save=upstream.save_lightning,
    weights=_state_dict,
    prefix="model.encoder_q.",
    missing="features.denseblock4.denselayer16.conv2.weight",
    extra=("features.denseblock4.denselayer17.conv2.weight", (32, 128, 3, 3)),
    allowed=", ".join(ALLOWED_GLOBALS),
)
# One per converter, for the refusals.
FORMATS = [MOCO_CXR_R18, SWAV, PIRL, LIGHTNING]
# Every published layout, for the features.
LAYOUTS = [
    dataclasses.replace(
        MOCO_CXR_R18,
        model="moco-v2",
        filename="moco_v2_800ep_pretrain.pth.tar",
        encoder=lambda: upstream.moco_encoder("resnet50", seed=2),
        checkpoint=upstream.released_moco_v2,
        save=_legacy,
    ),
    MOCO_CXR_R18,
    dataclasses.replace(
        MOCO_CXR_R18,
        model="moco-cxr_d121",
        filename="d1w-00001.pth.tar",
        encoder=lambda: upstream.moco_encoder("densenet121", seed=4),
        checkpoint=lambda encoder: upstream.moco_cxr_checkpoint(encoder, "densenet121"),
    ),
    SWAV,
    PIRL,
    *(
        dataclasses.replace(
            LIGHTNING,
            model=f"mimic-chexpert_lr_{lr}",
            filename=f"mimic-chexpert_lr_{lr}_bs_128_fd_128_qs_65536.pt",
        )
        for lr in ("0.01", "0.1", "1.0")
    ),
]


def test_every_catalog_entry_with_a_converter_is_walked() -> None:
    """Each converted catalog entry is loaded, through the real converter registry (the
    entry's converter name -> :func:`~medtransfer.models.convert.get_converter`; nothing
    mocked), from a file in its authors' layout, and must give the source network's
    features: here (:data:`LAYOUTS`), in test_byol.py and in test_simclr.py. A new entry
    without such a test, or an entry mapped to another format's converter, fails."""
    converted = {spec.name for spec in list_models() if spec.converter is not None}
    walked = [fmt.model for fmt in LAYOUTS] + [*test_byol.CATALOG_WALK, *test_simclr.CATALOG_WALK]
    assert sorted(walked) == sorted(converted)


@pytest.fixture(scope="module")
def encoder_of() -> Callable[[Format], nn.Module]:
    """Each format's source encoder, built once per module."""
    built: dict[str, nn.Module] = {}

    def encoder(fmt: Format) -> nn.Module:
        if fmt.model not in built:
            built[fmt.model] = fmt.encoder()
        return built[fmt.model]

    return encoder


def _load_served(fmt: Format, checkpoint: object, tmp_path: Path, roots: Roots) -> nn.Module:
    """Serve ``checkpoint`` as ``fmt.model``'s file, then load that model from the server."""
    source = fmt.save(checkpoint, tmp_path / "served" / fmt.filename)
    with serve_directory(source.parent) as server:
        spec = _served_spec(fmt, server.url(fmt.filename))
        return load_backbone(spec, roots, progress=False)


def _served_spec(fmt: Format, url: str) -> ModelSpec:
    return dataclasses.replace(get_model_spec(fmt.model), url=url, filename=fmt.filename)


def _nothing_cached(fmt: Format, roots: Roots) -> bool:
    target = converted_path(roots, get_model_spec(fmt.model))
    return not target.exists() and not target.with_suffix(".json").exists()


@pytest.mark.parametrize("fmt", LAYOUTS, ids=lambda fmt: fmt.model)
def test_published_file_loads_to_the_source_encoder(
    fmt: Format, encoder_of: Callable[[Format], nn.Module], tmp_path: Path, roots: Roots
) -> None:
    encoder = encoder_of(fmt)
    backbone = _load_served(fmt, fmt.checkpoint(encoder), tmp_path, roots)
    assert backbone.spec.name == fmt.model
    assert converted_path(roots, backbone.spec).is_file()
    with torch.no_grad():
        features = backbone.trunk(upstream.IMAGES)
    torch.testing.assert_close(features, upstream.pooled(encoder, fmt.arch), rtol=0, atol=0)


@pytest.mark.parametrize("edit", ["missing", "extra"])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.model)
def test_missing_or_extra_backbone_key_is_named_and_not_cached(
    fmt: Format,
    edit: str,
    encoder_of: Callable[[Format], nn.Module],
    tmp_path: Path,
    roots: Roots,
) -> None:
    checkpoint = fmt.checkpoint(encoder_of(fmt))
    weights = fmt.weights(checkpoint)
    if edit == "missing":
        named = fmt.missing
        del weights[f"{fmt.prefix}{named}"]
    else:
        named, shape = fmt.extra
        weights[f"{fmt.prefix}{named}"] = torch.zeros(shape)
    with pytest.raises(ModelError, match=re.escape(named)):
        _load_served(fmt, checkpoint, tmp_path, roots)
    assert _nothing_cached(fmt, roots)


def _payload(kind: str, marker: Path) -> Payload:
    if kind == "os.system":
        return Payload(os.system, f"touch '{marker}'")
    return Payload(exec, f"open({str(marker)!r}, 'w').close()")


@pytest.mark.parametrize("kind", ["os.system", "exec"])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.model)
def test_forbidden_global_is_refused_without_running(
    fmt: Format,
    kind: str,
    encoder_of: Callable[[Format], nn.Module],
    tmp_path: Path,
    roots: Roots,
) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_payload(kind, control)))  # the payload is live ...
    assert control.exists()

    marker = tmp_path / "pwned"
    checkpoint = fmt.checkpoint(encoder_of(fmt))
    checkpoint["extra"] = _payload(kind, marker)
    refused = r"(posix|nt)\.system" if kind == "os.system" else "exec"
    message = (
        rf"{re.escape(fmt.filename)}.*global {refused}.*"
        rf"allowed for this format: {re.escape(fmt.allowed)}"
    )
    with pytest.raises(ModelError, match=message):
        _load_served(fmt, checkpoint, tmp_path, roots)
    assert not marker.exists()  # ... but the converter never ran it
    assert _nothing_cached(fmt, roots)
