"""SimCLR v1 (Google, TensorFlow 1) checkpoint -> torchvision ResNet-50 state dict.

Upstream publishes ``ResNet50_1x.zip`` holding ``ResNet50_1x/model.ckpt-225206.index`` and
``.data-00000-of-00001`` (plus ``checkpoint`` and a TF-Hub module under ``hub/``). The
checkpoint holds the base network under ``base_model/`` and the supervised linear head
``head_supervised/linear_layer/dense/{kernel,bias}``; the projection head is not released.

SimCLR's ``resnet.py`` builds every layer with ``tf.layers``, so the variables are named by
creation order inside the ``base_model`` scope: ``conv2d``, ``conv2d_1``, ... ``conv2d_52``
(kernels ``(H, W, in, out)``) and ``batch_normalization[_N]/{gamma, beta, moving_mean,
moving_variance}``, each conv followed by its batch norm, so conv ``N`` pairs with batch
norm ``N``. Creation order: the stem, then per bottleneck block the **projection shortcut
first** (first block of each group: ``use_projection=True``), then the 1x1, 3x3 and 1x1
convs. torchvision registers the shortcut (``downsample``) *after* ``conv3``, so pairing
by torchvision's module order would put the shortcut into ``conv1``.
``tonylins/simclr-converter`` pairs by module order against its own ResNet copy, whose
Bottleneck assigns ``self.downsample`` first ("hack ... to make order correct"); this
module maps index ``N`` to its torchvision name explicitly instead. Optimizer slots
(``.../Momentum``, present in SimCLR v2 and training checkpoints), heads and
``global_step`` are ignored.

The weights expect inputs in [0, 1] without mean/std normalisation. One architectural
difference remains, as in every published conversion: TF's max pool uses ``SAME`` padding
(on even sizes it pads only bottom/right), torchvision's pads one pixel on every side, so
features differ slightly from the TF model's.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from medtransfer.errors import ModelError
from medtransfer.models.convert.tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint
from medtransfer.safety.archive import ArchiveError, zip_members

SCOPE = "base_model/"
RESNET50_BLOCKS = (3, 4, 6, 3)
BN_FIELDS = {  # TF batch-norm variable -> torchvision BatchNorm2d tensor
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_CONV = re.compile(r"^base_model/conv2d(?:_(\d+))?/kernel$")
_BN = re.compile(
    r"^base_model/batch_normalization(?:_(\d+))?/(gamma|beta|moving_mean|moving_variance)$"
)
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_SHOW = 8


def simclr_v1_layer_names(blocks: tuple[int, ...] = RESNET50_BLOCKS) -> list[tuple[str, str]]:
    """torchvision ``(conv, bn)`` module names in SimCLR's TF creation order.

    Entry ``N`` receives ``base_model/conv2d_N`` and ``base_model/batch_normalization_N``:
    ``conv1/bn1``, then per block ``[downsample.0/downsample.1 for the first block of a
    group], conv1/bn1, conv2/bn2, conv3/bn3``. 53 entries for ResNet-50.
    """
    names = [("conv1", "bn1")]
    for group, count in enumerate(blocks, start=1):
        for block in range(count):
            stem = f"layer{group}.{block}"
            if block == 0:
                names.append((f"{stem}.downsample.0", f"{stem}.downsample.1"))
            names.extend((f"{stem}.conv{k}", f"{stem}.bn{k}") for k in (1, 2, 3))
    return names


# --------------------------------------------------------------------------- finding the checkpoint


def _in_hub_module(name: str) -> bool:
    """Whether a path lies inside a TF-Hub/SavedModel folder (``hub/`` or ``variables/``)."""
    return any(part in ("hub", "variables") for part in PurePosixPath(name).parts[:-1])


def _pick_index(source: Path, names: list[str]) -> str:
    """The one checkpoint ``.index`` among ``names`` (outside any TF-Hub module)."""
    candidates = [n for n in names if n.endswith(".index") and not _in_hub_module(n)]
    if len(candidates) != 1:
        found = ", ".join(candidates) if candidates else "none"
        raise ModelError(
            f"{source} should hold exactly one TensorFlow checkpoint (a model.ckpt-N.index "
            f"file outside hub/), found {len(candidates)}: {found}. Pass the checkpoint prefix "
            "(e.g. ResNet50_1x/model.ckpt-225206) instead."
        )
    return candidates[0]


def _extract_checkpoint(archive: Path, workdir: Path) -> Path:
    """Extract only the checkpoint's ``.index`` and ``.data-*`` files; returns the prefix."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zip_members(archive, zf)
            files = [i.filename for i in members if not i.is_dir()]
            index = _pick_index(archive, files)
            prefix = index[: -len(".index")]
            wanted = [index] + [
                n
                for n in files
                if n.startswith(prefix) and _DATA_SUFFIX.fullmatch(n[len(prefix) :])
            ]
            if len(wanted) == 1:
                raise ModelError(
                    f"The archive {archive} has the checkpoint index {index} but no "
                    f"{PurePosixPath(prefix).name}.data-* file. Download ResNet50_1x.zip again."
                )
            local = workdir / PurePosixPath(prefix).name
            for name in wanted:
                target = workdir / (local.name + name[len(prefix) :])
                with zf.open(name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except ArchiveError as err:
        raise ModelError(f"{err}. Download ResNet50_1x.zip again from the SimCLR bucket.") from err
    except zipfile.BadZipFile as err:
        raise ModelError(
            f"The archive {archive} is not a valid zip file ({err}). Download "
            "ResNet50_1x.zip again."
        ) from err
    return local


def _local_prefix(path: Path) -> Path:
    """The checkpoint prefix for a folder, a prefix or an ``.index`` file."""
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*.index")]
        return path / _pick_index(path, names)[: -len(".index")]
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    if path.with_name(path.name + ".index").is_file():
        return path
    if path.exists():
        raise ModelError(
            f"{path} is neither the SimCLR v1 zip (ResNet50_1x.zip) nor a TensorFlow "
            "checkpoint (prefix, .index file or folder). Pass the file as downloaded."
        )
    raise ModelError(f"The SimCLR v1 checkpoint {path} does not exist. Check the path.")


# --------------------------------------------------------------------------- mapping


def _numbered(
    found: Mapping[str, np.ndarray], pattern: re.Pattern[str]
) -> dict[int, dict[str, np.ndarray]]:
    """Group variables matching ``pattern`` by layer number (no suffix = 0)."""
    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, value in found.items():
        match = pattern.match(name)
        if match:
            field = match.group(2) if pattern.groups > 1 else "kernel"
            layers.setdefault(int(match.group(1) or 0), {})[field] = value
    return layers


def _check_counts(
    source: Path,
    convs: dict[int, dict[str, np.ndarray]],
    bns: dict[int, dict[str, np.ndarray]],
    want: int,
) -> None:
    problems = []
    for kind, layers in (("conv2d kernels", convs), ("batch_normalization layers", bns)):
        missing = sorted(set(range(want)) - set(layers))
        extra = sorted(set(layers) - set(range(want)))
        if missing or extra:
            problems.append(
                f"{len(layers)} {kind} (want {want}, numbered 0..{want - 1}; "
                f"missing {missing[:_SHOW]}, unexpected {extra[:_SHOW]})"
            )
    incomplete = [
        f"batch_normalization_{n}: has {sorted(f)}"
        for n, f in sorted(bns.items())
        if set(f) != set(BN_FIELDS)
    ]
    if incomplete:
        problems.append(f"incomplete batch norms ({'; '.join(incomplete[:_SHOW])})")
    if problems:
        raise ModelError(
            f"The SimCLR v1 checkpoint {source} does not have the layers of a ResNet-50 (1x): "
            f"found {'; '.join(problems)}. Only ResNet50_1x fits torchvision's resnet50."
        )


def _not_simclr(source: Path, names: list[str]) -> ModelError:
    shown = ", ".join(names[:_SHOW]) or "no variables"
    return ModelError(
        f"The checkpoint {source} has no variables under {SCOPE!r}, so it is not a SimCLR v1 "
        f"checkpoint (expected e.g. {SCOPE}conv2d/kernel); found: {shown}."
    )


def simclr_v1_state_dict(found: Mapping[str, np.ndarray], source: Path) -> dict[str, Tensor]:
    """Map the ``base_model/`` variables of a SimCLR v1 checkpoint onto torchvision names.

    Args:
        found: variable name -> array, as :func:`read_tf_checkpoint` returns them (other
            variables such as heads, optimizer slots and ``global_step`` are ignored).
        source: the file named in error messages.

    Returns:
        torchvision ``resnet50`` keys without ``fc``: conv ``weight`` ``(out, in, kH, kW)``
        (TF ``(kH, kW, in, out)`` permuted ``(3, 2, 0, 1)``), BatchNorm ``weight``, ``bias``,
        ``running_mean``, ``running_var`` ``(C,)``, all float32.
    """
    if not any(k.startswith(SCOPE) for k in found):
        raise _not_simclr(source, list(found))
    names = simclr_v1_layer_names()
    convs, bns = _numbered(found, _CONV), _numbered(found, _BN)
    _check_counts(source, convs, bns, len(names))
    stem = convs[0]["kernel"].shape
    if stem != (7, 7, 3, 64):
        raise ModelError(
            f"The SimCLR v1 checkpoint {source} has a stem kernel of shape {list(stem)}, not "
            "[7, 7, 3, 64]: it is a wider ResNet-50 (2x/4x), which torchvision's resnet50 "
            "cannot hold. Use ResNet50_1x.zip."
        )
    state: dict[str, Tensor] = {}
    for n, (conv, bn) in enumerate(names):
        kernel = np.ascontiguousarray(convs[n]["kernel"].transpose(3, 2, 0, 1), dtype=np.float32)
        state[f"{conv}.weight"] = torch.from_numpy(kernel)
        for tf_field, torch_field in BN_FIELDS.items():
            state[f"{bn}.{torch_field}"] = torch.from_numpy(
                np.asarray(bns[n][tf_field], dtype=np.float32)
            )
    return state


def convert_simclr_v1(path: Path, arch: str) -> dict[str, Tensor]:
    """Convert the SimCLR v1 checkpoint at ``path`` to a torchvision ``resnet50`` state dict.

    Args:
        path: ``ResNet50_1x.zip`` as downloaded, or the extracted checkpoint: its folder, its
            prefix (``.../model.ckpt-225206``) or its ``.index`` file. From the zip only the
            checkpoint's ``.index``/``.data-*`` files are extracted, to a temporary folder
            that is removed afterwards; an archive with an absolute path, ``..`` or a
            symbolic link among its members is refused.
        arch: must be ``resnet50``.

    Returns:
        ``{torchvision key: tensor}`` for ``resnet50`` without ``fc`` (see
        :func:`simclr_v1_state_dict`); the model expects [0, 1] inputs without mean/std.

    Raises:
        ModelError: another ``arch``, a file that is neither, an unsafe or broken archive, a
            malformed checkpoint, or one without the 53 convs / 53 batch norms of a 1x
            ResNet-50. The message names the file.
    """
    path = Path(path).expanduser()
    if arch != "resnet50":
        raise ModelError(
            f"SimCLR v1 checkpoints are ResNet-50s; cannot convert {path} for {arch!r}. Use "
            "arch 'resnet50'."
        )
    with tempfile.TemporaryDirectory(prefix="medtransfer-simclr-") as tmp:
        if path.is_file() and zipfile.is_zipfile(path):
            prefix = _extract_checkpoint(path, Path(tmp))
        else:
            prefix = _local_prefix(path)
        found = read_tf_checkpoint(prefix, select=lambda name: name.startswith(SCOPE))
        if not found:
            raise _not_simclr(path, list(list_tf_checkpoint(prefix)))
        return simclr_v1_state_dict(found, path)
