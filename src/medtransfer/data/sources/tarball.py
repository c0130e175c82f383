"""Download a dataset's published tarball into the cache and extract its folder safely.

Used by datasets that can be fetched without a login (CIFAR). The archive is fetched
resumably (:func:`medtransfer.download.fetch`, which records its sha256 beside it), its md5
is checked against the published one, and one top-level folder is extracted atomically by
:func:`medtransfer.safety.archive.extract_tar_folder`, which refuses absolute paths, ``..``
and links.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medtransfer.download import fetch
from medtransfer.errors import DownloadError
from medtransfer.safety.archive import ArchiveError, extract_tar_folder


def md5_of(path: Path) -> str:
    """The hex md5 digest of the file at ``path`` (the checksum CIFAR publishes)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_tarball_folder(
    root: Path,
    *,
    url: str,
    md5: str,
    archive_name: str,
    folder: str,
    files: tuple[str, ...],
    progress: bool = True,
) -> Path:
    """Fetch ``url`` to ``root/archive_name``, check its md5, extract ``folder/`` into ``root``.

    ``files``: what a complete ``root/folder`` holds; when they are all there the network
    is not touched. Returns ``root``. ``root`` is chosen by the caller: a cache folder,
    never the user's data root.

    Raises:
        DownloadError: a partial ``root/folder`` already there, a failed download, a wrong
            md5 (the archive is then deleted), or an archive that cannot be extracted safely.
    """
    root = Path(root)
    target = root / folder
    if all((target / name).is_file() for name in files):
        return root
    if target.exists() and any(target.iterdir()):
        raise DownloadError(
            f"{target} exists but lacks some of {', '.join(files)}; delete it and run "
            "again to download and extract it afresh."
        )
    archive = fetch(url, root / archive_name, progress=progress)
    expected = md5.lower()
    actual = md5_of(archive)
    if actual != expected:
        archive.unlink(missing_ok=True)
        archive.with_name(archive.name + ".sha256").unlink(missing_ok=True)
        raise DownloadError(
            f"{archive} failed its md5 check: expected {expected}, got {actual}; it was deleted. "
            f"Run again to download {url} afresh."
        )
    try:
        extract_tar_folder(archive, root, folder)
    except ArchiveError as err:
        raise DownloadError(
            f"{err}. Delete it and download it again from the official site."
        ) from err
    return root
