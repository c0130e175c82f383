"""Extract downloaded archives without letting a member land outside its folder.

A tar or zip member may name an absolute path, climb out with ``..``, or be a link that
points anywhere; extracting such an archive naively writes outside the destination.
:func:`tar_members` and :func:`zip_members` refuse every such member with an
:class:`ArchiveError` naming it, before anything is written; :func:`extract_tar_folder`
extracts one top-level folder of a checked tar atomically.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(Exception):
    """An archive that cannot be extracted safely; the message names the archive (and member)."""


def member_risk(
    name: str, *, symlink: bool = False, hardlink: bool = False, special: bool = False
) -> str | None:
    """Why a member called ``name`` must not be extracted, or None.

    ``symlink`` / ``hardlink``: the member is a link (it could point anywhere);
    ``special``: a device, FIFO or other non-regular file. Backslashes count as separators
    (archives written on Windows).
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts:
        return "an empty path"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "an absolute path"
    if ".." in parts:
        return "a '..' component"
    if symlink:
        return "a symbolic link"
    if hardlink:
        return "a hard link"
    if special:
        return "a special file"
    return None


def _refused(archive: Path, name: str, risk: str) -> ArchiveError:
    return ArchiveError(f"The archive {archive} is refused: its member {name!r} has {risk}")


def tar_members(archive: Path, tar: tarfile.TarFile, inside: str = "") -> list[tarfile.TarInfo]:
    """Every member of ``tar``, each checked; ``inside``: the one top folder allowed ("" any).

    Raises:
        ArchiveError: naming the first member with an absolute path, a ``..`` component, a
            link or special file, or (with ``inside``) a path outside ``inside/``.
    """
    members = tar.getmembers()
    for member in members:
        risk = member_risk(
            member.name,
            symlink=member.issym(),
            hardlink=member.islnk(),
            special=not (member.isfile() or member.isdir() or member.issym() or member.islnk()),
        )
        if risk is None and inside and PurePosixPath(member.name).parts[0] != inside:
            risk = f"a path outside {inside}/"
        if risk is not None:
            raise _refused(archive, member.name, risk)
    return members


def zip_members(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every member of ``zf``, each checked as :func:`member_risk` says.

    Raises:
        ArchiveError: naming the first member with an absolute path, a ``..`` component or
            a symbolic link (the Unix mode zip keeps in ``external_attr``).
    """
    members = zf.infolist()
    for info in members:
        risk = member_risk(info.filename, symlink=stat.S_ISLNK(info.external_attr >> 16))
        if risk is not None:
            raise _refused(archive, info.filename, risk)
    return members


def extract_tar_folder(archive: Path, dest: Path, folder: str) -> Path:
    """Extract ``folder/`` of the tar ``archive`` to ``dest/folder`` atomically; returns it.

    Every member is checked first (:func:`tar_members` with ``inside=folder``); the tree is
    written to a staging folder in ``dest`` and renamed into place, so ``dest/folder`` is
    either complete or absent.

    Raises:
        ArchiveError: an unsafe member, a member outside ``folder/``, an unreadable or
            truncated archive, or no ``folder/`` in it.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".tmp", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar_members(archive, tar, inside=folder):
                    _extract_member(archive, tar, member, staging)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{archive}: cannot be extracted ({exc})") from exc
        extracted = staging / folder
        if not extracted.is_dir():
            raise ArchiveError(f"{archive}: holds no {folder}/ folder")
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(extracted, dest / folder)
        if not (dest / folder).is_dir():
            raise ArchiveError(f"could not move the extracted {folder} into {dest}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest / folder


def _extract_member(
    archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path
) -> None:
    """Write one checked file or folder member below ``staging``."""
    target = staging.joinpath(*PurePosixPath(member.name).parts)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:
        raise ArchiveError(f"{archive}: member {member.name!r} has no data")
    with source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)
