"""The ImageNet trunks LPIPS measures with: AlexNet, VGG16 and SqueezeNet 1.1 (torchvision).

The ``lpips`` package ships its calibrated linear layers inside its wheel, but builds its
trunks with torchvision's ``pretrained=True``, which would download through torch.hub.
medtransfer builds them without weights instead and loads these files, fetched by the
project's downloader (:mod:`medtransfer.download`: resumed, checksummed, kept in the cache
under ``weights/``). A verified copy already in torch's hub cache is used as it is. Under
``MEDTRANSFER_OFFLINE=1`` a missing file is an error that lists every file to put in place
by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from medtransfer.config import ENV_OFFLINE, Roots, is_offline
from medtransfer.download import fetch, recorded_sha256
from medtransfer.errors import DownloadError
from medtransfer.fsutil import sha256_file
from medtransfer.models.state_dicts import read_state_dict
from medtransfer.models.weights import torch_hub_copy


@dataclass(frozen=True)
class TrunkFile:
    """The torchvision weights file of one LPIPS trunk.

    ``net``: the ``lpips.LPIPS(net=...)`` name; ``arch``: the torchvision builder;
    ``sha256_prefix``: the leading digits of the file's sha256 (torchvision puts them in
    the file name)."""

    net: str
    arch: str
    url: str
    sha256_prefix: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_TORCHVISION = "https://download.pytorch.org/models"

#: ``lpips`` net name -> its trunk's weights file.
LPIPS_TRUNKS: dict[str, TrunkFile] = {
    "alex": TrunkFile("alex", "alexnet", f"{_TORCHVISION}/alexnet-owt-7be5be79.pth", "7be5be79"),
    "vgg": TrunkFile("vgg", "vgg16", f"{_TORCHVISION}/vgg16-397923af.pth", "397923af"),
    "squeeze": TrunkFile(
        "squeeze", "squeezenet1_1", f"{_TORCHVISION}/squeezenet1_1-b8a52dc0.pth", "b8a52dc0"
    ),
}


def trunk_path(roots: Roots, trunk: TrunkFile) -> Path:
    """Where the trunk's file lives in the cache."""
    return roots.cache / "weights" / trunk.filename


def _available(roots: Roots, trunk: TrunkFile) -> tuple[Path, str] | None:
    """A verified copy on disk (the cache, or torch's hub cache) and its sha256; no network."""
    path = trunk_path(roots, trunk)
    if path.is_file():
        fetch(trunk.url, path, sha256_prefix=trunk.sha256_prefix)  # verifies, no transfer
        return path, recorded_sha256(path) or sha256_file(path)
    return torch_hub_copy(trunk.filename, trunk.sha256_prefix)


def fetch_trunks(
    nets: Sequence[str], roots: Roots, *, progress: bool = True
) -> dict[str, tuple[Path, str]]:
    """``{net: (file, sha256)}`` for each LPIPS ``net``, downloading what is missing.

    Raises:
        DownloadError: offline with files missing (every missing file is named, with its
            URL and where to save it), or a download or checksum failure.
    """
    trunks = [LPIPS_TRUNKS[net] for net in nets]
    found = {trunk.net: _available(roots, trunk) for trunk in trunks}
    missing = [trunk for trunk in trunks if found[trunk.net] is None]
    if missing and is_offline():
        listing = "\n".join(
            f"  {trunk.url}\n    -> {trunk_path(roots, trunk)}" for trunk in missing
        )
        archs = ", ".join(trunk.arch for trunk in missing)
        raise DownloadError(
            f"LPIPS needs the torchvision weights of its trunk ({archs}), "
            f"and offline mode is on ({ENV_OFFLINE}=1). Download each file by hand and save it "
            f"where the arrow points (its sha256 must start with the digits in its name):\n"
            f"{listing}\nor unset {ENV_OFFLINE}, or choose other nets with --nets "
            "(--nets none: SSIM only, which needs no weights)."
        )
    files: dict[str, tuple[Path, str]] = {}
    for trunk in trunks:
        available = found[trunk.net]
        if available is None:
            path = fetch(
                trunk.url,
                trunk_path(roots, trunk),
                sha256_prefix=trunk.sha256_prefix,
                progress=progress,
            )
            available = path, recorded_sha256(path) or sha256_file(path)
        files[trunk.net] = available
    return files


def read_trunk(path: Path) -> dict[str, Tensor]:
    """The tensors of a trunk file, read safely (no pickled code)."""
    return read_state_dict(path)
