"""BYOL (DeepMind, haiku) pickle -> torchvision ResNet-50 state dict, without jax/haiku/dill.

The upstream file ``pretrain_res50x1.pkl`` (https://storage.googleapis.com/deepmind-byol/
checkpoints/pretrain_res50x1.pkl, 570 MB) is a Python pickle. Loading it the usual way needs
``jax``, ``jaxlib``, ``dill`` and ``dm-haiku`` and runs whatever code the pickle names. This
module reads it with the allow-list unpickler of :mod:`medtransfer.safety.unpickle`, given
exactly the handful of globals such a file references, maps the online ResNet-50 **by
module name** onto torchvision and refuses any other global with a :class:`ModelError`
before it can run.

What the file holds, and where that is documented:

* ``google-deepmind/deepmind-research`` ``byol/utils/checkpointing.py``
  (``Checkpointer.maybe_save_checkpoint``): ``dill.dump(dict(experiment_state=jax.tree_map(
  lambda x: jax.device_get(x[0]), experiment_state), step=step, rng=rng), f, protocol=2)``.
  So: a plain dict with keys ``experiment_state``, ``step`` (int) and ``rng`` (a jax
  ``DeviceArray``, uint32 (2,)); every leaf of the state is a host ``numpy.ndarray``.
* ``byol/byol_experiment.py``: ``class _ByolExperimentState(NamedTuple)`` with fields
  ``online_params, target_params, online_state, target_state, opt_state``. The network is
  ``getattr(networks, 'ResNet50')(num_classes=None, ...)`` (haiku derives the module name
  ``res_net50`` from the class name), ``networks.MLP(name='projector' | 'predictor')`` and
  ``hk.Linear(name='classifier')`` (the online linear probe).
* ``byol/utils/networks.py`` (``ResNetTorso``): ``initial_conv`` (7x7/2, no bias, SAME),
  ``initial_batchnorm``, then ``hk.nets.ResNet.BlockGroup(name='block_group_%d')``; the
  ``logits`` layer is built but never called, so it has no parameters. The MLP is
  ``linear`` -> ``batch_norm`` -> relu -> ``linear_1``.
* ``byol/utils/optimizers.py``: ``opt_state`` is ``optax.chain`` state, i.e. a tuple
  ``(AddWeightDecayState(), ScaleByLarsState(mu=<params tree>), <optax scale state>)``.
* ``google-deepmind/dm-haiku`` ``haiku/_src/integration/checkpoints/nets.ResNet.json`` and
  ``BatchNorm.json``: parameter names ``.../block_group_G/~/block_B/~/conv_K`` ``{'w': HWIO}``,
  ``.../batchnorm_K`` and ``shortcut_conv`` / ``shortcut_batchnorm`` (block 0 only),
  ``{'scale', 'offset'}`` of shape (1, 1, 1, C); state ``<bn>/~/mean_ema`` and
  ``<bn>/~/var_ema``, each ``{'average': (1, 1, 1, C), 'hidden': (1, 1, 1, C),
  'counter': int32 ()}``.
* ``haiku/_src/data_structures.py``: haiku's immutable mappings pickle as
  ``frozendict.__reduce__ -> (frozendict, (storage,))`` (haiku of 2020) or
  ``FlatMap.__reduce__ -> (FlatMapping, (mapping,))`` ("for backwards compatibility with old
  pickles"). Both are accepted and become plain dicts.
* ``uqfoundation/dill`` ``dill/_dill.py`` (0.3.x, 2020): ``save_type`` pickles namedtuple
  *classes* as ``dill._dill._create_namedtuple(name, fields, module)``, which rebuilds the
  class when its module is not importable. That is why third-party converters load the file
  with dill but without the ``byol`` package (``ajtejankar/byol-convert`` ``convert.py``).
  dill's numpy hook only looks at the top-level object (a dict), so arrays use numpy's own
  ``__reduce__``: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``.
  Under protocol 2 Python 3 writes every ``bytes`` as ``_codecs.encode(text, 'latin1')``.
* jax (``jax/interpreters/xla.py``): ``DeviceArray.__reduce__`` forwards to the ndarray value
  ("pickle saves and loads just like an ndarray"), so ``rng`` needs no jax global.
* Existing converters: ``ajtejankar/byol-convert`` ``convert.py`` maps by name with regexes
  (skips ``projector``/``predictor``, turns ``classifier`` into ``fc``, asserts
  ``average == hidden``); ``linusericsson/ssl-transfer`` ``download_and_prepare_models.py``
  (the study's recipe, docs/original-study.md#conversions) pairs convs/BNs by sorted position.

Allowed globals (everything else is refused): ``dill._dill._create_namedtuple`` (also the
pre-0.3 spelling ``dill.dill``), the by-reference namedtuples of the BYOL source
(``byol.byol_experiment._ByolExperimentState``, ``byol.utils.optimizers.ScaleByLarsState`` /
``AddWeightDecayState``), ``haiku._src.data_structures.frozendict`` / ``FlatMapping``, and
the numpy and bytes globals of :data:`medtransfer.safety.unpickle.NUMPY_GLOBALS`
(``numpy.core.multiarray._reconstruct`` / ``scalar`` and the numpy 2 ``numpy._core``
spelling, ``numpy.ndarray``, ``numpy.dtype``, ``_codecs.encode``): arrays are rebuilt from
their bytes with plain numeric dtypes only, so object and structured dtypes are refused.

Mapping (following the network code above): ``initial_conv`` -> ``conv1``,
``initial_batchnorm`` -> ``bn1``, ``block_group_g/~/block_b/~/conv_k`` ->
``layer{g+1}.{b}.conv{k+1}``, ``batchnorm_k`` -> ``bn{k+1}``, ``shortcut_conv`` ->
``downsample.0``, ``shortcut_batchnorm`` -> ``downsample.1``. Kernels HWIO -> OIHW; BN
``weight <- scale``, ``bias <- offset``, ``running_mean <- mean_ema['average']``,
``running_var <- var_ema['average']``, ``num_batches_tracked <- mean_ema['counter']``.
Only the ``online`` network is used; target network, projector, predictor, classifier, optimizer
state, ``step`` and ``rng`` are dropped.

Known, inherent difference: haiku pads stride-2 convolutions and the max-pool TF-style
(``SAME``: the extra row/column goes bottom/right) while torchvision pads symmetrically, so the
converted network sees a one-pixel-shifted grid in those layers. Every published conversion
shares this (``ajtejankar/byol-convert`` reports 74.6 % vs the original 74.4 % top-1).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medtransfer.errors import ModelError
from medtransfer.safety.unpickle import NUMPY_GLOBALS, RefusedPickle, restricted_load

UPSTREAM_URL = "https://storage.googleapis.com/deepmind-byol/checkpoints/pretrain_res50x1.pkl"
WRAPPER_KEY = "experiment_state"
# Blocks per group of the haiku ResNets BYOL publishes (byol/utils/networks.py).
BLOCKS_PER_GROUP: dict[str, tuple[int, int, int, int]] = {"resnet50": (3, 4, 6, 3)}
_SHOW = 8  # names listed in an error message

# _ByolExperimentState's fields, in the order of byol/byol_experiment.py.
EXPERIMENT_STATE_FIELDS = (
    "online_params",
    "target_params",
    "online_state",
    "target_state",
    "opt_state",
)
_ByolExperimentState = collections.namedtuple("_ByolExperimentState", EXPERIMENT_STATE_FIELDS)
_ScaleByLarsState = collections.namedtuple("ScaleByLarsState", ("mu",))
_AddWeightDecayState = collections.namedtuple("AddWeightDecayState", ())


# --------------------------------------------------------------------------- safe globals


_namedtuple_cache: dict[tuple[str, tuple[str, ...]], type] = {}


def _create_namedtuple(
    name: object, fieldnames: object, modulename: object = None, defaults: object = None
) -> type:
    """Stand-in for ``dill._dill._create_namedtuple``: a local namedtuple class, never an import.

    ``modulename`` (where the class lived when pickled) is ignored; defaults are not needed
    because instances are rebuilt with all their fields.
    """
    del modulename, defaults
    if not isinstance(name, str) or not name.isidentifier():
        raise RefusedPickle(f"a namedtuple with the invalid name {name!r}")
    if not isinstance(fieldnames, tuple | list) or not all(
        isinstance(f, str) and f.isidentifier() and not f.startswith("_") for f in fieldnames
    ):
        raise RefusedPickle(f"a namedtuple {name} with invalid fields {fieldnames!r}")
    key = (name, tuple(fieldnames))
    if key not in _namedtuple_cache:
        _namedtuple_cache[key] = collections.namedtuple(name, key[1])
    return _namedtuple_cache[key]


def _haiku_mapping(mapping: object = None) -> dict[str, Any]:
    """Stand-in for haiku's ``frozendict`` / ``FlatMapping``: their single argument as a dict."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise RefusedPickle(f"a haiku mapping built from a {type(mapping).__name__}")
    return dict(mapping)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **NUMPY_GLOBALS,
    ("dill._dill", "_create_namedtuple"): _create_namedtuple,
    ("dill.dill", "_create_namedtuple"): _create_namedtuple,
    ("byol.byol_experiment", "_ByolExperimentState"): _ByolExperimentState,
    ("byol.utils.optimizers", "ScaleByLarsState"): _ScaleByLarsState,
    ("byol.utils.optimizers", "AddWeightDecayState"): _AddWeightDecayState,
    ("haiku._src.data_structures", "frozendict"): _haiku_mapping,
    ("haiku._src.data_structures", "FlatMapping"): _haiku_mapping,
}


def load_byol_pickle(path: Path) -> Any:
    """Unpickle a BYOL checkpoint with the allow-list; jax/haiku/dill need not be installed.

    Returns the checkpoint dict ``{'experiment_state': namedtuple, 'step': int, 'rng': array}``
    with haiku mappings as plain dicts and arrays as ``numpy.ndarray``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"The BYOL checkpoint {path} does not exist; download {UPSTREAM_URL}.")
    try:
        with path.open("rb") as file:
            return restricted_load(file, _SAFE_GLOBALS)
    except RefusedPickle as err:
        raise ModelError(
            f"The BYOL checkpoint {path} was refused without being run ({err}). The published "
            "pretrain_res50x1.pkl needs only the allow-listed globals and plain numeric arrays, "
            f"and unpickling can execute code: re-download the genuine file from {UPSTREAM_URL}."
        ) from err
    except Exception as err:  # truncated stream, foreign format, bad opcode, ...
        raise ModelError(
            f"The BYOL checkpoint {path} cannot be read as a pickle ({type(err).__name__}: "
            f"{err}). It may be truncated or not the BYOL file; re-download {UPSTREAM_URL}."
        ) from err


# --------------------------------------------------------------------------- structure


def _keys_preview(mapping: Mapping[Any, Any]) -> str:
    keys = [str(k) for k in list(mapping)[:_SHOW]]
    more = f", ... ({len(mapping)} in all)" if len(mapping) > _SHOW else ""
    return ", ".join(keys) + more if keys else "nothing"


def _field(state: Any, name: str) -> Any:
    if isinstance(state, Mapping):
        return state.get(name)
    return getattr(state, name, None)


def online_network(checkpoint: Any, path: Path) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """``(online_params, online_state)`` of a loaded checkpoint, both haiku two-level dicts."""
    if not isinstance(checkpoint, Mapping) or WRAPPER_KEY not in checkpoint:
        found = (
            _keys_preview(checkpoint)
            if isinstance(checkpoint, Mapping)
            else "a " + type(checkpoint).__name__
        )
        raise ModelError(
            f"The BYOL checkpoint {path} has no {WRAPPER_KEY!r} entry (found: {found}). Expected "
            f"DeepMind's pretrain_res50x1.pkl ({UPSTREAM_URL})."
        )
    state = checkpoint[WRAPPER_KEY]
    params, bn_state = _field(state, "online_params"), _field(state, "online_state")
    if not isinstance(params, Mapping) or not isinstance(bn_state, Mapping):
        fields = getattr(state, "_fields", None) or (
            list(state) if isinstance(state, Mapping) else type(state).__name__
        )
        raise ModelError(
            f"The BYOL checkpoint {path}: {WRAPPER_KEY!r} has no online_params / online_state "
            f"mappings (found: {fields}). Expected DeepMind's pretrain_res50x1.pkl."
        )
    return params, bn_state


def encoder_root(params: Mapping[str, Any], path: Path) -> str:
    """The haiku name of the ResNet module (``res_net50`` for BYOL's ResNet50)."""
    roots = sorted({k[: -len("/~/initial_conv")] for k in params if k.endswith("/~/initial_conv")})
    roots = [r for r in roots if "/" not in r]
    if len(roots) != 1:
        raise ModelError(
            f"The BYOL checkpoint {path}: online_params should hold exactly one ResNet whose "
            f"modules start with '<encoder>/~/' (e.g. 'res_net50/~/initial_conv'); found "
            f"{len(roots)} ({', '.join(roots) or 'none'}) among: {_keys_preview(params)}."
        )
    return roots[0]


def haiku_to_torchvision(arch: str) -> dict[str, str]:
    """Haiku module name (below the encoder root) -> torchvision module prefix, for ``arch``.

    E.g. ``'block_group_1/~/block_0/~/shortcut_conv'`` -> ``'layer2.0.downsample.0'``.
    """
    names = {"initial_conv": "conv1", "initial_batchnorm": "bn1"}
    for group, blocks in enumerate(BLOCKS_PER_GROUP[arch]):
        for block in range(blocks):
            hk, tv = f"block_group_{group}/~/block_{block}/~/", f"layer{group + 1}.{block}."
            for k in range(3):
                names[f"{hk}conv_{k}"] = f"{tv}conv{k + 1}"
                names[f"{hk}batchnorm_{k}"] = f"{tv}bn{k + 1}"
            if block == 0:  # haiku's BlockGroup projects in its first block only
                names[f"{hk}shortcut_conv"] = f"{tv}downsample.0"
                names[f"{hk}shortcut_batchnorm"] = f"{tv}downsample.1"
    return names


def _is_conv(haiku_name: str) -> bool:
    return re.search(r"(^|/)(initial_conv|conv_\d+|shortcut_conv)$", haiku_name) is not None


def _expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """torchvision's state-dict shapes for ``arch`` (built on the meta device: no memory)."""
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("fc.")}


def _required_entries(root: str, table: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The haiku parameter and state module names a ResNet needs, in table order."""
    params = [f"{root}/~/{hk}" for hk in table]
    state = [
        f"{root}/~/{hk}/~/{ema}"
        for hk in table
        if not _is_conv(hk)
        for ema in ("mean_ema", "var_ema")
    ]
    return params, state


def _check_names(
    params: Mapping[str, Any],
    bn_state: Mapping[str, Any],
    root: str,
    table: Mapping[str, str],
    path: Path,
) -> None:
    """Every needed module is there and nothing unknown sits under the encoder root."""
    need_params, need_state = _required_entries(root, table)
    missing = [n for n in need_params if n not in params]
    missing += [n for n in need_state if n not in bn_state]
    prefix, known = f"{root}/~/", {*need_params, *need_state}
    unmapped = [k for k in [*params, *bn_state] if k.startswith(prefix) and k not in known]
    if missing or unmapped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {', '.join(missing[:_SHOW])}")
        if unmapped:
            parts.append(f"{len(unmapped)} not part of a ResNet-50: {', '.join(unmapped[:_SHOW])}")
        raise ModelError(
            f"The BYOL checkpoint {path} does not hold a complete haiku ResNet-50 "
            f"({'; '.join(parts)}). Expected DeepMind's pretrain_res50x1.pkl ({UPSTREAM_URL})."
        )


# --------------------------------------------------------------------------- tensors


def _leaf(entries: Mapping[str, Any], module: str, leaf: str, path: Path) -> np.ndarray:
    entry = entries[module]
    value = entry.get(leaf) if isinstance(entry, Mapping) else None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise ModelError(
            f"The BYOL checkpoint {path}: {module} has no numeric array {leaf!r} (found "
            f"{_keys_preview(entry) if isinstance(entry, Mapping) else type(entry).__name__})."
        )
    return value


def _as_tensor(
    value: np.ndarray, shape: tuple[int, ...], what: str, tv_key: str, path: Path
) -> Tensor:
    """A float32 copy of ``value`` reshaped to ``shape``; ``value`` must hold exactly that."""
    ok = value.size == int(np.prod(shape)) and (not shape or value.shape[-1] == shape[-1])
    if not ok:
        raise ModelError(
            f"The BYOL checkpoint {path}: {what} has shape {tuple(value.shape)}, which does not "
            f"fit {tv_key} {shape}. The file is not a BYOL ResNet-50."
        )
    return torch.from_numpy(np.array(value, dtype=np.float32)).reshape(shape)


def _conv(
    params: Mapping[str, Any],
    module: str,
    tv: str,
    shapes: Mapping[str, tuple[int, ...]],
    path: Path,
) -> dict[str, Tensor]:
    """haiku ``{'w': (kh, kw, in, out)}`` -> ``{tv.weight: (out, in, kh, kw)}``."""
    w = _leaf(params, module, "w", path)
    out, cin, kh, kw = shapes[f"{tv}.weight"]
    if w.shape != (kh, kw, cin, out):
        raise ModelError(
            f"The BYOL checkpoint {path}: {module}/w has shape {tuple(w.shape)}, expected "
            f"{(kh, kw, cin, out)} (HWIO) for {tv}.weight. The file is not a BYOL ResNet-50."
        )
    weight = torch.from_numpy(np.array(w, dtype=np.float32)).permute(3, 2, 0, 1).contiguous()
    return {f"{tv}.weight": weight}


def _batchnorm(
    params: Mapping[str, Any],
    bn_state: Mapping[str, Any],
    module: str,
    tv: str,
    shapes: Mapping[str, tuple[int, ...]],
    path: Path,
) -> dict[str, Tensor]:
    """haiku ``scale``/``offset`` and EMA ``average`` (all (1, 1, 1, C)) -> torchvision BN (C,)."""
    sources = {
        "weight": (params, module, "scale"),
        "bias": (params, module, "offset"),
        "running_mean": (bn_state, f"{module}/~/mean_ema", "average"),
        "running_var": (bn_state, f"{module}/~/var_ema", "average"),
    }
    out: dict[str, Tensor] = {}
    for name, (entries, hk_module, leaf) in sources.items():
        key = f"{tv}.{name}"
        value = _leaf(entries, hk_module, leaf, path)
        out[key] = _as_tensor(value, shapes[key], f"{hk_module}/{leaf}", key, path)
    counter = bn_state[f"{module}/~/mean_ema"].get("counter")
    if isinstance(counter, np.ndarray | np.integer) and np.size(counter) == 1:
        out[f"{tv}.num_batches_tracked"] = torch.tensor(int(np.asarray(counter).item()))
    return out


def haiku_resnet_to_torchvision(
    params: Mapping[str, Any], bn_state: Mapping[str, Any], arch: str, path: Path
) -> dict[str, Tensor]:
    """Map a haiku ResNet (params + BN state) onto torchvision's key names, by module name."""
    root = encoder_root(params, path)
    table = haiku_to_torchvision(arch)
    _check_names(params, bn_state, root, table, path)
    shapes = _expected_shapes(arch)
    converted: dict[str, Tensor] = {}
    for hk, tv in table.items():
        module = f"{root}/~/{hk}"
        if _is_conv(hk):
            converted.update(_conv(params, module, tv, shapes, path))
        else:
            converted.update(_batchnorm(params, bn_state, module, tv, shapes, path))
    return {k: converted[k] for k in shapes if k in converted}  # torchvision's key order


def convert_byol(path: Path, arch: str) -> dict[str, Tensor]:
    """DeepMind's BYOL ``pretrain_res50x1.pkl`` -> torchvision ResNet-50 backbone state dict.

    Reads the pickle with an allow-list (no jax/haiku/dill needed, nothing executed), takes the
    online network's parameters and BatchNorm EMAs and maps them by haiku module name:
    conv kernels HWIO ``(kh, kw, in, out)`` -> OIHW ``(out, in, kh, kw)``; BN ``(1, 1, 1, C)``
    -> ``(C,)``. Returns every ``conv1``/``bn1``/``layerX.Y.*`` key of torchvision's
    ``resnet50`` (no ``fc``), float32 on the CPU.

    Raises:
        ModelError: ``arch`` is not ``resnet50``; the file is missing, unreadable or refers to a
            global outside the allow-list; the ``experiment_state`` wrapper or the online
            network is missing; a ResNet module is missing, unknown or of the wrong shape.
    """
    if arch not in BLOCKS_PER_GROUP:
        raise ModelError(
            f"DeepMind publishes BYOL only as ResNet-50 here; cannot convert {path} for "
            f"architecture {arch!r}. Use arch 'resnet50'."
        )
    path = Path(path)
    checkpoint = load_byol_pickle(path)
    params, bn_state = online_network(checkpoint, path)
    return haiku_resnet_to_torchvision(params, bn_state, arch, path)
