"""Building tar archives with chosen members (files, symbolic links) for extraction tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_tar_gz(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A gzipped tar at ``path`` holding ``files`` (name -> bytes), then ``links`` (name ->
    symbolic-link target), member names taken literally (``..`` and absolute ones too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path
