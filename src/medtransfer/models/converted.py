"""Weights that need conversion: download (or take the user's file), convert once, cache.

``<cache>/downloads/<file>``            the authors' file, as published (sha256 sidecar)
``<cache>/weights/converted/<name>.pth`` the torchvision state dict (tensors only)
``<cache>/weights/converted/<name>.json`` its provenance: upstream sha256, converter, source

A conversion is validated by a strict load into the architecture before it is cached, so a
bad file never leaves a cached result behind. Records carry the upstream file's sha256.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from medtransfer.config import Roots
from medtransfer.download import fetch, recorded_sha256
from medtransfer.errors import ModelError
from medtransfer.fsutil import atomic_write_json, sha256_file, temp_file
from medtransfer.models.archs import build_trunk, prepare_state_dict
from medtransfer.models.backbone import load_strict
from medtransfer.models.catalog import ModelSpec
from medtransfer.models.convert import get_converter


def upstream_path(roots: Roots, spec: ModelSpec) -> Path:
    """Where the authors' file is kept (downloaded, or put there by hand)."""
    assert spec.filename is not None
    return roots.cache / "downloads" / spec.filename


def converted_path(roots: Roots, spec: ModelSpec) -> Path:
    """The cached torchvision state dict of a converted model."""
    return roots.cache / "weights" / "converted" / f"{spec.name}.pth"


def converted_provenance(roots: Roots, spec: ModelSpec) -> dict[str, str] | None:
    """The provenance of the cached conversion, or None when there is none."""
    meta = converted_path(roots, spec).with_suffix(".json")
    if not (meta.is_file() and converted_path(roots, spec).is_file()):
        return None
    try:
        return json.loads(meta.read_text())
    except ValueError:
        return None


def convert_file(spec: ModelSpec, roots: Roots, source: Path) -> tuple[Path, str]:
    """Convert ``source`` (the authors' file) for ``spec``; returns (cached path, its sha256)."""
    source = Path(source).expanduser()
    if not source.is_file():
        raise ModelError(f"{source} does not exist; pass the file the authors publish.")
    if spec.converter is None:
        raise ModelError(f"{spec.name} needs no conversion; it loads directly.")
    digest = recorded_sha256(source) or sha256_file(source)
    state = get_converter(spec.converter)(source, spec.arch)
    state = prepare_state_dict(state, spec.arch)
    load_strict(
        build_trunk(spec.arch),
        state,
        what=f"{source} (converted for {spec.name} by the {spec.converter} converter)",
    )
    target = converted_path(roots, spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(target.parent, f".{target.name}.")
    os.close(fd)
    try:
        torch.save({k: v.contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    atomic_write_json(
        target.with_suffix(".json"),
        {
            "model": spec.name,
            "upstream_file": str(source),
            "upstream_sha256": digest,
            "converter": spec.converter,
            "url": spec.url or "",
        },
    )
    return target, digest


def ensure_converted(spec: ModelSpec, roots: Roots, *, progress: bool = True) -> tuple[Path, str]:
    """The converted weights of ``spec`` (converting, and downloading, at most once).

    Returns (path of the torchvision state dict, sha256 of the authors' file).
    """
    provenance = converted_provenance(roots, spec)
    if provenance is not None:
        return converted_path(roots, spec), provenance["upstream_sha256"]
    source = upstream_path(roots, spec)
    if not source.is_file():
        if spec.manual:
            raise ModelError(
                f"{spec.name} cannot be downloaded automatically: {spec.manual}. Or put the "
                f"file at {source} and run the command again."
            )
        assert spec.url is not None
        fetch(spec.url, source, sha256_prefix=spec.sha256_prefix, progress=progress)
    return convert_file(spec, roots, source)
