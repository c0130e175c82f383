"""Safe archive extraction: no member may land outside its folder."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from medtransfer.safety.archive import ArchiveError, extract_tar_folder, member_risk, zip_members
from tests.support.archives import write_tar_gz


@pytest.mark.parametrize(
    ("name", "kind", "risk"),
    [
        ("data/batch", "", None),
        ("data/", "", None),
        ("../evil", "", "a '..' component"),
        ("data/../../evil", "", "a '..' component"),
        ("data\\..\\..\\evil", "", "a '..' component"),
        ("/tmp/evil", "", "an absolute path"),
        ("\\evil", "", "an absolute path"),
        ("C:/evil", "", "an absolute path"),
        ("", "", "an empty path"),
        ("data/link", "symlink", "a symbolic link"),
        ("data/hard", "hardlink", "a hard link"),
        ("data/fifo", "special", "a special file"),
    ],
)
def test_member_risk(name: str, kind: str, risk: str | None) -> None:
    assert member_risk(name, **({kind: True} if kind else {})) == risk


def test_extracts_one_folder_atomically(tmp_path: Path) -> None:
    archive = write_tar_gz(tmp_path / "a.tar.gz", {"data/x": b"1", "data/sub/y": b"22"})
    dest = tmp_path / "dest"
    dest.mkdir()
    assert extract_tar_folder(archive, dest, "data") == dest / "data"
    assert (dest / "data" / "sub" / "y").read_bytes() == b"22"
    assert sorted(p.name for p in dest.iterdir()) == ["data"]  # no staging folder left


@pytest.mark.parametrize(
    ("files", "links", "message"),
    [
        ({"../evil": b"x"}, None, r"'\.\./evil' has a '\.\.' component"),
        ({"data/../../evil": b"x"}, None, r"a '\.\.' component"),
        ({"/tmp/evil": b"x"}, None, r"'/tmp/evil' has an absolute path"),
        ({}, {"data/escape": "/etc/passwd"}, r"'data/escape' has a symbolic link"),
        ({}, {"data/up": "../../evil"}, r"'data/up' has a symbolic link"),
        ({"other/x": b"x"}, None, r"'other/x' has a path outside data/"),
    ],
    ids=["parent", "nested-parent", "absolute", "symlink-absolute", "symlink-up", "outside"],
)
def test_unsafe_tar_is_refused_before_anything_is_written(
    tmp_path: Path, files: dict[str, bytes], links: dict[str, str] | None, message: str
) -> None:
    archive = write_tar_gz(tmp_path / "a.tar.gz", {"data/ok": b"ok", **files}, links)
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(ArchiveError, match=message) as caught:
        extract_tar_folder(archive, dest, "data")
    assert str(archive) in str(caught.value)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "deep" / "evil").exists()


def test_broken_tar_or_missing_folder_is_an_archive_error(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(
        write_tar_gz(tmp_path / "a.tar.gz", {"data/x": b"1" * 4096}).read_bytes()[:40]
    )
    with pytest.raises(ArchiveError, match="cannot be extracted"):
        extract_tar_folder(broken, dest, "data")
    empty = write_tar_gz(tmp_path / "empty.tar.gz", {})
    with pytest.raises(ArchiveError, match="holds no data/ folder"):
        extract_tar_folder(empty, dest, "data")
    assert list(dest.iterdir()) == []


def test_zip_members_refuse_links_parents_and_absolute_paths(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("model/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    cases = [(link, "a symbolic link"), ("../evil", "a '..' component"), ("/evil", "absolute")]
    for member, risk in cases:
        path = tmp_path / "a.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("model/ok", b"ok")
            zf.writestr(member, b"../../etc/passwd")
        with zipfile.ZipFile(path) as zf, pytest.raises(ArchiveError, match=risk):
            zip_members(path, zf)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/ok", b"ok")
    with zipfile.ZipFile(path) as zf:
        assert [info.filename for info in zip_members(path, zf)] == ["model/ok"]
