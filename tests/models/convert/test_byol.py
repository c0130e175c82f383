"""BYOL: DeepMind's haiku pickle, written here in its upstream layout without jax/haiku/dill.

The test file mirrors ``byol/utils/checkpointing.py``: ``dill.dump(dict(experiment_state=
_ByolExperimentState(...), step=..., rng=...), f, protocol=2)`` with haiku ``frozendict`` (or
``FlatMapping``) two-level mappings of numpy arrays. :class:`_UpstreamPickler` writes the same
globals the real file references (``dill._dill._create_namedtuple`` for namedtuple classes,
``haiku._src.data_structures.frozendict``, ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``_codecs.encode``) from local stand-ins, so neither the
writer nor the converter needs those packages. To keep the file small, the target network and
the optimizer momentum reuse the online arrays (pickle stores them once) except where a test
needs them to differ.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.config import Roots
from medtransfer.errors import ModelError
from medtransfer.models.archs import build_trunk
from medtransfer.models.backbone import load_strict
from medtransfer.models.catalog import get_model_spec
from medtransfer.models.convert.byol import (
    convert_byol,
    haiku_resnet_to_torchvision,
    load_byol_pickle,
)
from medtransfer.models.converted import converted_path
from medtransfer.models.loader import load_backbone
from tests.support.checkpoints import randomize_batchnorm, touch_payload
from tests.support.http_server import serve_directory

ROOT = "res_net50"  # haiku's name for byol/utils/networks.py's ResNet50 module
FILE = "pretrain_res50x1.pkl"

# --------------------------------------------------------------------------- upstream stand-ins


def _create_namedtuple(name: str, fieldnames: tuple[str, ...], modulename: str) -> type:
    """Plays ``dill._dill._create_namedtuple`` while writing (never called here)."""
    raise AssertionError("only its name is pickled")


def _legacy_reconstruct(*args: Any) -> Any:
    """Plays numpy 1.x's ``numpy.core.multiarray._reconstruct`` while writing."""
    raise AssertionError("only its name is pickled")


class _FrozenDict(Mapping):
    """haiku's 2020 ``frozendict``: pickles as ``(frozendict, (storage,))``."""

    def __init__(self, storage: Mapping[str, Any]) -> None:
        self._storage = dict(storage)

    def __getitem__(self, key: str) -> Any:
        return self._storage[key]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._storage))

    def __len__(self) -> int:
        return len(self._storage)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_FrozenDict, (self._storage,))


class _FlatMapping(_FrozenDict):
    """haiku's ``FlatMap``: pickles as ``(FlatMapping, (plain nested dict,))``."""

    def __reduce__(self) -> tuple[Any, ...]:
        plain = {k: dict(v) if isinstance(v, Mapping) else v for k, v in self._storage.items()}
        return (_FlatMapping, (plain,))


def _upstream_namedtuple(name: str, fields: tuple[str, ...], module: str) -> type:
    cls = collections.namedtuple(name, fields)
    cls.__module__ = module
    return cls


ExperimentState = _upstream_namedtuple(
    "_ByolExperimentState",
    ("online_params", "target_params", "online_state", "target_state", "opt_state"),
    "byol.byol_experiment",
)
AddWeightDecayState = _upstream_namedtuple("AddWeightDecayState", (), "byol.utils.optimizers")
ScaleByLarsState = _upstream_namedtuple("ScaleByLarsState", ("mu",), "byol.utils.optimizers")
EmptyState = _upstream_namedtuple("EmptyState", (), "optax._src.base")  # optax.scale's state
NAMEDTUPLES = (ExperimentState, AddWeightDecayState, ScaleByLarsState, EmptyState)

ALIASES: dict[object, tuple[str, str]] = {
    _create_namedtuple: ("dill._dill", "_create_namedtuple"),
    _legacy_reconstruct: ("numpy.core.multiarray", "_reconstruct"),
    _FrozenDict: ("haiku._src.data_structures", "frozendict"),
    _FlatMapping: ("haiku._src.data_structures", "FlatMapping"),
}


class _UpstreamPickler(pickle._Pickler):  # the Python pickler: save_global can be overridden
    """Writes the byte layout of ``dill.dump(..., protocol=2)`` (dill 0.3, numpy 1.x)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) and obj in NAMEDTUPLES:  # dill's save_type, branch T6
            return (_create_namedtuple, (obj.__name__, obj._fields, obj.__module__))
        if type(obj) is np.ndarray:  # numpy's own __reduce__, under its numpy 1.x name
            _, args, state = obj.__reduce__()
            return (_legacy_reconstruct, args, state)
        return NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        alias = ALIASES.get(obj) if isinstance(obj, type | types.FunctionType) else None
        if alias is None:
            super().save_global(obj, name)
            return
        self.write(pickle.GLOBAL + f"{alias[0]}\n{alias[1]}\n".encode())
        self.memoize(obj)

    # The base class dispatches functions straight to its own save_global.
    dispatch: ClassVar[dict] = {**pickle._Pickler.dispatch, types.FunctionType: save_global}


def _dump(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    _UpstreamPickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())
    return path


# --------------------------------------------------------------------------- haiku trees


def _haiku_name(tv_module: str) -> str:
    """torchvision module -> haiku module (written independently of the converter's table)."""
    if tv_module in ("conv1", "bn1"):
        return f"{ROOT}/~/initial_{'conv' if tv_module == 'conv1' else 'batchnorm'}"
    layer, block, rest = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", tv_module).groups()
    leaf = {"downsample.0": "shortcut_conv", "downsample.1": "shortcut_batchnorm"}.get(rest)
    if leaf is None:
        kind, k = re.fullmatch(r"(conv|bn)(\d)", rest).groups()
        leaf = f"{'conv' if kind == 'conv' else 'batchnorm'}_{int(k) - 1}"
    return f"{ROOT}/~/block_group_{int(layer) - 1}/~/block_{block}/~/{leaf}"


def _ema(value: Tensor, steps: int) -> dict[str, np.ndarray]:
    average = value.detach().numpy().reshape(1, 1, 1, -1).astype(np.float32)
    # 'hidden' deliberately differs from 'average', so reading the wrong leaf would show.
    return {"average": average, "counter": np.array(steps, np.int32), "hidden": 0.5 * average}


def _encoder_trees(model: nn.Module, steps: int) -> tuple[dict, dict]:
    """haiku (params, state) of a torchvision ResNet-50: HWIO kernels, (1, 1, 1, C) BN."""
    params: dict[str, dict[str, np.ndarray]] = {}
    state: dict[str, dict[str, np.ndarray]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            params[_haiku_name(name)] = {"w": module.weight.detach().permute(2, 3, 1, 0).numpy()}
        elif isinstance(module, nn.BatchNorm2d):
            hk = _haiku_name(name)
            params[hk] = {
                "offset": module.bias.detach().numpy().reshape(1, 1, 1, -1),
                "scale": module.weight.detach().numpy().reshape(1, 1, 1, -1),
            }
            state[f"{hk}/~/mean_ema"] = _ema(module.running_mean, steps)
            state[f"{hk}/~/var_ema"] = _ema(module.running_var, steps)
    return params, state


def _heads() -> tuple[dict, dict]:
    """Projector, predictor (byol's MLP: linear -> batch_norm -> relu -> linear_1), classifier."""

    def full(*shape: int) -> np.ndarray:
        return np.full(shape, 0.01, np.float32)

    params: dict[str, dict[str, np.ndarray]] = {
        "classifier": {"b": full(1000), "w": full(2048, 1000)}
    }
    state: dict[str, dict[str, np.ndarray]] = {}
    for head, width in (("projector", 2048), ("predictor", 256)):
        params[f"{head}/~/linear"] = {"b": full(4096), "w": full(width, 4096)}
        params[f"{head}/~/batch_norm"] = {"offset": full(1, 4096), "scale": full(1, 4096)}
        params[f"{head}/~/linear_1"] = {"w": full(4096, 256)}
        for ema in ("mean_ema", "var_ema"):
            stats = {"average": full(1, 4096), "counter": np.array(7, np.int32)}
            state[f"{head}/~/batch_norm/~/{ema}"] = {**stats, "hidden": full(1, 4096)}
    return params, state


def _haiku(tree: Mapping[str, Mapping[str, Any]], mapping: type[_FrozenDict]) -> _FrozenDict:
    return mapping({k: mapping(v) for k, v in tree.items()})


def _seeded_resnet50(seed: int = 11) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None)
    randomize_batchnorm(model, affine=True)
    return model.eval()


def _checkpoint(
    model: nn.Module,
    mapping: type[_FrozenDict] = _FrozenDict,
    drop: str | None = None,
    steps: int = 5004,
) -> dict[str, Any]:
    """The upstream checkpoint dict for ``model`` (``drop``: leave out one online module)."""
    enc_params, enc_state = _encoder_trees(model, steps)
    head_params, head_state = _heads()
    online_params = {**enc_params, **head_params}
    online_state = {**enc_state, **head_state}
    # The target network differs in its stem (so taking it instead of 'online' would show).
    target_params = dict(online_params)
    stem = f"{ROOT}/~/initial_conv"
    target_params[stem] = {"w": -online_params[stem]["w"]}
    target_state = dict(online_state)
    if drop is not None:
        online_params.pop(drop)
    state = ExperimentState(
        online_params=_haiku(online_params, mapping),
        target_params=_haiku(target_params, mapping),
        online_state=_haiku(online_state, mapping),
        target_state=_haiku(target_state, mapping),
        opt_state=(
            AddWeightDecayState(),
            ScaleByLarsState(mu=_haiku(online_params, mapping)),
            EmptyState(),
        ),
    )
    return {"experiment_state": state, "step": 300_000, "rng": np.array([0, 42], np.uint32)}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _seeded_resnet50()


def _features(module: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return module.eval()(images)


# --------------------------------------------------------------------------- tests


#: The catalog entries this module walks through the real converter registry
#: (tests/models/convert/test_contract.py checks that every converted entry is walked).
CATALOG_WALK = ("byol",)


@pytest.mark.parametrize("name", CATALOG_WALK)
def test_upstream_pickle_loads_through_the_catalog_to_equal_features(
    name: str, tmp_path: Path, model: nn.Module, roots: Roots
) -> None:
    """The catalog entry's converter, looked up in the real registry (nothing mocked),
    turns the served upstream pickle into the source network."""
    served = _dump(_checkpoint(model), tmp_path / "served" / FILE)
    with serve_directory(served.parent) as server:
        spec = dataclasses.replace(get_model_spec(name), url=server.url(FILE), filename=FILE)
        backbone = load_backbone(spec, roots, progress=False)
    reference = _seeded_resnet50()
    reference.fc = nn.Identity()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_features(backbone.trunk, images), _features(reference, images))

    state = torch.load(converted_path(roots, spec), weights_only=True)
    assert not any(k.startswith("fc.") for k in state)
    assert state["layer1.0.bn1.num_batches_tracked"].item() == 5004

    # Missing and unexpected keys are caught by the strict loader, by name.
    missing = {k: v for k, v in state.items() if k != "layer3.2.conv2.weight"}
    with pytest.raises(ModelError, match=r"layer3\.2\.conv2\.weight"):
        load_strict(build_trunk("resnet50"), missing, what="byol")
    extra = {**state, "layer5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"layer5\.0\.conv1\.weight"):
        load_strict(build_trunk("resnet50"), extra, what="byol")


def test_flatmapping_pickles_are_read_too(tmp_path: Path) -> None:
    small = {"layer": {"w": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)}}
    checkpoint = {
        "experiment_state": ExperimentState(
            _haiku(small, _FlatMapping), {}, _haiku(small, _FlatMapping), {}, ()
        ),
        "step": 1,
        "rng": np.array([0, 1], np.uint32),
    }
    loaded = load_byol_pickle(_dump(checkpoint, tmp_path / FILE))
    online = loaded["experiment_state"].online_params
    assert type(online) is dict and type(online["layer"]) is dict
    np.testing.assert_array_equal(online["layer"]["w"], small["layer"]["w"])
    assert loaded["step"] == 1 and loaded["rng"].dtype == np.uint32


def test_missing_conv_is_named(tmp_path: Path, model: nn.Module) -> None:
    gone = f"{ROOT}/~/block_group_1/~/block_0/~/conv_1"
    path = _dump(_checkpoint(model, drop=gone), tmp_path / FILE)
    with pytest.raises(ModelError, match=re.escape(gone)) as caught:
        convert_byol(path, "resnet50")
    assert str(path) in str(caught.value)


def test_unknown_encoder_module_and_wrong_shape_are_named(model: nn.Module) -> None:
    params, state = _encoder_trees(model, steps=1)
    stem = f"{ROOT}/~/initial_conv"
    extra = {**params, f"{ROOT}/~/logits": {"w": np.zeros((2048, 10), np.float32)}}
    with pytest.raises(ModelError, match=r"1 not part of a ResNet-50: res_net50/~/logits"):
        haiku_resnet_to_torchvision(extra, state, "resnet50", Path(FILE))
    narrow = {**params, stem: {"w": params[stem]["w"][:, :, :2]}}
    with pytest.raises(ModelError, match=r"initial_conv/w has shape \(7, 7, 2, 64\)"):
        haiku_resnet_to_torchvision(narrow, state, "resnet50", Path(FILE))


def test_forbidden_global_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    online = _FrozenDict({f"{ROOT}/~/initial_conv": _FrozenDict({"w": touch_payload(marker)})})
    checkpoint = {"experiment_state": ExperimentState(online, online, {}, {}, ()), "step": 0}
    path = _dump(checkpoint, tmp_path / FILE)

    with pytest.raises(ModelError, match=r"(posix|os)\.system") as caught:
        convert_byol(path, "resnet50")
    assert str(path) in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ({"step": 1, "rng": np.zeros(2, np.uint32)}, r"no 'experiment_state' entry.*step, rng"),
        ({"experiment_state": AddWeightDecayState()}, r"no online_params / online_state"),
        (
            {
                "experiment_state": ExperimentState(
                    _FrozenDict(
                        {"projector/~/linear": _FrozenDict({"b": np.zeros(2, np.float32)})}
                    ),
                    {},
                    _FrozenDict({}),
                    {},
                    (),
                )
            },
            r"res_net50/~/initial_conv.*found 0.*projector/~/linear",
        ),
    ],
    ids=["no-wrapper", "no-online-network", "no-encoder"],
)
def test_wrong_layout_gives_clear_error(tmp_path: Path, checkpoint: Any, message: str) -> None:
    path = _dump(checkpoint, tmp_path / FILE)
    with pytest.raises(ModelError, match=message) as caught:
        convert_byol(path, "resnet50")
    assert str(path) in str(caught.value)


def test_other_architectures_and_broken_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="resnet50"):
        convert_byol(tmp_path / FILE, "resnet18")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"experiment_state": 1}, protocol=2)[:-3])
    with pytest.raises(ModelError, match="cannot be read as a pickle"):
        convert_byol(truncated, "resnet50")
