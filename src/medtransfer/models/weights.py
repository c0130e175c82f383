"""Weight sources: where a model's weights come from, one class per kind.

Every source is bound to one model (its :class:`ModelSpec`) and the roots, and answers
three questions:

* :meth:`WeightSource.status`: where the weights stand, in a word (``models list``);
* :meth:`WeightSource.download`: fetch (and convert) them into the cache, once
  (``models download``); sources with nothing to fetch say so (``downloads`` is False);
* :meth:`WeightSource.resolve`: the :class:`Weights` to load (the loader).

:data:`WEIGHT_SOURCES` maps ``ModelSpec.source`` to its class; :class:`LocalFile` is the
file a user passes with ``--weights``, which replaces the model's own source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from medtransfer.config import Roots
from medtransfer.download import fetch, recorded_sha256
from medtransfer.errors import ModelError
from medtransfer.fsutil import sha256_file
from medtransfer.models.catalog import ModelSpec
from medtransfer.models.converted import converted_provenance, ensure_converted, upstream_path
from medtransfer.models.efficientnet_lite import (
    efficientnet_lite0_state_dict,
    verified_package_file,
)
from medtransfer.models.state_dicts import read_state_dict, read_weights_file


@dataclass(frozen=True)
class Weights:
    """What a source yields for one model.

    Attributes:
        state: the tensors to load strictly (before the classifier head is dropped), or
            None to keep the trunk's seeded random initialisation.
        sha256: sha256 of the file the weights come from ('' when ``state`` is None).
        path: the file the tensors were read from (None when ``state`` is None).
        what: names the file and the model in error messages.
    """

    state: dict[str, Tensor] | None
    sha256: str
    path: Path | None
    what: str


class WeightSource(ABC):
    """The weights of one model; see the module docstring."""

    downloads: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec, roots: Roots) -> None:
        self.spec = spec
        self.roots = roots

    @abstractmethod
    def status(self) -> str:
        """A short word on where the weights stand."""

    def download(self, *, progress: bool = True) -> tuple[Path, str]:
        """Fetch the weights into the cache; returns (the file loaded, its recorded sha256)."""
        raise ModelError(f"{self.spec.name}: nothing to download ({self.spec.source}).")

    @abstractmethod
    def resolve(self, *, progress: bool = True) -> Weights:
        """The weights to load (downloading them first where needed)."""


class RandomInit(WeightSource):
    """No weights: the trunk keeps its seeded random initialisation."""

    downloads = False

    def status(self) -> str:
        return "random init"

    def resolve(self, *, progress: bool = True) -> Weights:
        return Weights(state=None, sha256="", path=None, what="")


def _fetch_verified(
    url: str, dest: Path, sha256_prefix: str | None, progress: bool
) -> tuple[Path, str]:
    """``fetch`` into ``dest``; returns (the file, its recorded sha256)."""
    path = fetch(url, dest, sha256_prefix=sha256_prefix, progress=progress)
    return path, recorded_sha256(path) or sha256_file(path)


def torch_hub_copy(filename: str, sha256_prefix: str | None) -> tuple[Path, str] | None:
    """A copy of ``filename`` already in torch's hub cache (``<hub>/checkpoints/``) whose
    sha256 starts with ``sha256_prefix``, and that sha256; None when there is none."""
    candidate = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not candidate.is_file():
        return None
    digest = sha256_file(candidate)
    if sha256_prefix and not digest.startswith(sha256_prefix):
        return None
    return candidate, digest


class TorchvisionFile(WeightSource):
    """A torchvision-format state dict at ``spec.url``, cached as ``spec.filename``.

    A verified copy already in torch's hub cache is used instead of downloading.
    """

    @property
    def _cached(self) -> Path:
        assert self.spec.filename is not None
        return self.roots.cache / "weights" / self.spec.filename

    def _torch_hub_copy(self) -> tuple[Path, str] | None:
        """A verified copy of the weights already in torch's hub cache, and its sha256."""
        if self.spec.filename is None:
            return None
        return torch_hub_copy(self.spec.filename, self.spec.sha256_prefix)

    def status(self) -> str:
        cached = self._cached.is_file() or self._torch_hub_copy() is not None
        return "cached" if cached else "not cached"

    def download(self, *, progress: bool = True) -> tuple[Path, str]:
        spec = self.spec
        if spec.url is None or spec.filename is None:
            raise ModelError(f"The catalog entry {spec.name} has no weights URL.")
        if not self._cached.exists():
            hub = self._torch_hub_copy()
            if hub is not None:
                return hub
        return _fetch_verified(spec.url, self._cached, spec.sha256_prefix, progress)

    def resolve(self, *, progress: bool = True) -> Weights:
        path, digest = self.download(progress=progress)
        return Weights(read_state_dict(path), digest, path, f"{path} ({self.spec.name})")


class PackagedFile(WeightSource):
    """Weights shipped inside an installed Python package (EfficientNet-Lite0)."""

    downloads = False

    def status(self) -> str:
        return "in package"

    def resolve(self, *, progress: bool = True) -> Weights:
        if self.spec.arch != "tf_efficientnet_lite0":
            raise ModelError(f"No package ships {self.spec.arch} weights ({self.spec.name}).")
        path, digest = verified_package_file(self.spec)
        state = efficientnet_lite0_state_dict(path)
        return Weights(state, digest, path, f"{path} ({self.spec.name})")


class ConvertedFile(WeightSource):
    """The authors' file, converted once to a torchvision state dict and cached.

    The recorded sha256 is the authors' file's (see :mod:`medtransfer.models.converted`).
    """

    def status(self) -> str:
        if converted_provenance(self.roots, self.spec) is not None:
            return "cached"
        if upstream_path(self.roots, self.spec).is_file():
            return "downloaded"
        return "by hand" if self.spec.manual else "not cached"

    def download(self, *, progress: bool = True) -> tuple[Path, str]:
        return ensure_converted(self.spec, self.roots, progress=progress)

    def resolve(self, *, progress: bool = True) -> Weights:
        path, digest = self.download(progress=progress)
        what = f"{path} ({self.spec.name}, converted by {self.spec.converter})"
        return Weights(read_state_dict(path), digest, path, what)


class ExternalFile(WeightSource):
    """Pretrained weights of a ``timm:``/``torchvision:`` model (see ``external.py``),
    cached under ``weights/<family>/``; ``.safetensors`` or a PyTorch file."""

    @property
    def _cached(self) -> Path:
        assert self.spec.filename is not None
        family = self.spec.name.partition(":")[0]
        return self.roots.cache / "weights" / family / self.spec.filename

    def status(self) -> str:
        return "cached" if self._cached.is_file() else "not cached"

    def download(self, *, progress: bool = True) -> tuple[Path, str]:
        if self.spec.url is None:
            raise ModelError(f"{self.spec.name} lists no pretrained weights; pass --weights PATH.")
        return _fetch_verified(self.spec.url, self._cached, self.spec.sha256_prefix, progress)

    def resolve(self, *, progress: bool = True) -> Weights:
        path, digest = self.download(progress=progress)
        return Weights(read_weights_file(path), digest, path, f"{path} ({self.spec.name})")


class LocalFile(WeightSource):
    """A file the user passes with ``--weights``: a state dict for the model's architecture
    (flat, or under ``'state_dict'``; ``.safetensors`` also read)."""

    downloads = False

    def __init__(self, spec: ModelSpec, roots: Roots, path: Path) -> None:
        super().__init__(spec, roots)
        self.path = Path(path).expanduser()

    def status(self) -> str:
        return "your file" if self.path.is_file() else "missing"

    def resolve(self, *, progress: bool = True) -> Weights:
        state = read_weights_file(self.path)
        spec = self.spec
        model = spec.name if spec.arch == spec.name else f"for {spec.name}, {spec.arch}"
        return Weights(state, sha256_file(self.path), self.path, f"{self.path} ({model})")


WEIGHT_SOURCES: dict[str, type[WeightSource]] = {
    "random": RandomInit,
    "torchvision": TorchvisionFile,
    "package": PackagedFile,
    "converted": ConvertedFile,
    "external": ExternalFile,
}


def weight_source(spec: ModelSpec, roots: Roots, weights: Path | None = None) -> WeightSource:
    """The source of ``spec``'s weights: ``weights`` (a user's file) when given, else the
    one its ``source`` names."""
    if weights is not None:
        return LocalFile(spec, roots, weights)
    try:
        source = WEIGHT_SOURCES[spec.source]
    except KeyError:
        raise ModelError(
            f"The catalog entry {spec.name} has no known way to get its weights "
            f"(source {spec.source!r})."
        ) from None
    return source(spec, roots)
