"""The LPIPS trunks' torchvision files: fetched once through the downloader, verified,
reused from torch's hub cache, and named one by one when offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from medtransfer.config import Roots
from medtransfer.download import recorded_sha256
from medtransfer.errors import DownloadError
from medtransfer.fsutil import sha256_file
from medtransfer.models import lpips_trunks
from medtransfer.models.lpips_trunks import LPIPS_TRUNKS, fetch_trunks, read_trunk, trunk_path
from tests.support.http_server import serve_directory
from tests.support.lpips_trunks import serve_from, standin_state, write_standins


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_standins(tmp_path_factory.mktemp("standins"))


def test_the_table_holds_torchvisions_files() -> None:
    assert {net: t.filename for net, t in LPIPS_TRUNKS.items()} == {
        "alex": "alexnet-owt-7be5be79.pth",
        "vgg": "vgg16-397923af.pth",
        "squeeze": "squeezenet1_1-b8a52dc0.pth",
    }
    for trunk in LPIPS_TRUNKS.values():
        assert trunk.url.startswith("https://download.pytorch.org/models/")
        assert trunk.filename.rsplit("-", 1)[1] == f"{trunk.sha256_prefix}.pth"


def test_downloaded_once_verified_and_read(
    roots: Roots, standins: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_directory(next(iter(standins.values())).parent) as server:
        serve_from(monkeypatch, server.base_url, standins)
        files = fetch_trunks(["alex", "squeeze"], roots, progress=False)
        assert set(files) == {"alex", "squeeze"}
        for net, (path, digest) in files.items():
            assert path == trunk_path(roots, lpips_trunks.LPIPS_TRUNKS[net])
            assert digest == sha256_file(standins[net]) == recorded_sha256(path)
        seen = len(server.requests)
        assert fetch_trunks(["alex", "squeeze"], roots, progress=False) == files
        assert len(server.requests) == seen == 2  # the second call used the cache
    state = read_trunk(files["squeeze"][0])
    assert state.keys() == standin_state("squeeze").keys()
    assert all(torch.equal(state[k], v) for k, v in standin_state("squeeze").items())


def test_a_corrupt_cached_file_is_refused(
    roots: Roots, standins: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_from(monkeypatch, "http://127.0.0.1:9", standins)
    trunk = lpips_trunks.LPIPS_TRUNKS["squeeze"]
    path = trunk_path(roots, trunk)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the weights")
    with pytest.raises(DownloadError, match=f"{path}.*does not match"):
        fetch_trunks(["squeeze"], roots, progress=False)


def test_a_verified_copy_in_torchs_hub_cache_is_used(
    roots: Roots, standins: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_from(monkeypatch, "http://127.0.0.1:9", standins)  # nothing listens there
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(standins["squeeze"], hub / standins["squeeze"].name)
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    path, digest = fetch_trunks(["squeeze"], roots, progress=False)["squeeze"]
    assert path == hub / standins["squeeze"].name and digest == sha256_file(standins["squeeze"])


def test_offline_names_every_file_to_place_by_hand(
    roots: Roots, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        fetch_trunks(["alex", "vgg", "squeeze"], roots, progress=False)
    message = str(info.value)
    for trunk in LPIPS_TRUNKS.values():
        assert trunk.url in message and str(trunk_path(roots, trunk)) in message
    assert "MEDTRANSFER_OFFLINE=1" in message and "--nets none" in message
