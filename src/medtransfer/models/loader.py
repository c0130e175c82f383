"""``load_backbone``: a model name (and flags) in, a sealed :class:`Backbone` out.

The steps: find the model (catalog entry, or ``timm:``/``torchvision:`` name), ask its
weight source (:mod:`medtransfer.models.weights`) for the weights, build the trunk with a
seeded initialisation (:mod:`medtransfer.models.archs`), load the weights strictly, and seal
the chosen input normalisation in front of it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from medtransfer.config import Roots
from medtransfer.models.archs import build_trunk, prepare_state_dict
from medtransfer.models.backbone import Backbone, load_strict
from medtransfer.models.catalog import ModelSpec, get_model_spec
from medtransfer.models.external import build_external, is_external
from medtransfer.models.seeding import seeded
from medtransfer.models.state_dicts import state_dict_sha256
from medtransfer.models.weights import weight_source

# Normalisations that --no-norm turns into the identity; ``histogram`` is kept
# (docs/original-study.md#normalisation).
NO_NORM_DISABLES = frozenset({"imagenet", "half", "cxr"})


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
        name: a catalog name or alias, a ``timm:NAME`` / ``torchvision:NAME``, or a
            :class:`ModelSpec` (e.g. a catalog entry with another ``url``, as tests use to
            serve weights locally).
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
        model = build_external(name, weights=weights, seed=seed)
        spec, trunk = model.spec, model.trunk
        found = weight_source(spec, roots, weights).resolve(progress=progress)
        state = found.state
        if state is not None and model.head_prefix:
            state = {k: v for k, v in state.items() if not k.startswith(model.head_prefix)}
    else:
        spec = name if isinstance(name, ModelSpec) else get_model_spec(name)
        # Find and read the weights first, so a missing file fails before any model is built.
        found = weight_source(spec, roots, weights).resolve(progress=progress)
        with seeded(seed):
            trunk = build_trunk(spec.arch)
        state = None if found.state is None else prepare_state_dict(found.state, spec.arch)
    if state is None:
        digest = state_dict_sha256(trunk.state_dict())
    else:
        load_strict(trunk, state, what=found.what)
        digest = found.sha256
    return _seal(spec, trunk, digest, found.path, no_norm=no_norm, norm=norm)


def _seal(
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
