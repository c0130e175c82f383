"""SimCLR v1: a TensorFlow-written ``ResNet50_1x.zip`` -> torchvision ResNet-50.

The fixture is written by TensorFlow's own v1 ``Saver`` with the variable names of the
released checkpoint (``base_model/conv2d[_N]/kernel``, ``base_model/batch_normalization[_N]
/...``, ``head_supervised/linear_layer/dense/...``, ``global_step``), numbered in the order
SimCLR's ``resnet.py`` creates the layers: stem, then per block the projection shortcut
(first block of a group) BEFORE the block's three convs. It holds a seeded torchvision
ResNet-50, is zipped in the released layout (with a TF-Hub module beside it) and served
from 127.0.0.1.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.config import Roots
from medtransfer.download import fetch
from medtransfer.errors import ModelError
from medtransfer.models.archs import build_trunk
from medtransfer.models.backbone import load_strict
from medtransfer.models.catalog import get_model_spec
from medtransfer.models.convert.simclr import (
    _local_prefix,
    convert_simclr_v1,
    simclr_v1_layer_names,
    simclr_v1_state_dict,
)
from medtransfer.models.convert.tf_checkpoint import read_tf_checkpoint
from medtransfer.models.converted import convert_file
from medtransfer.models.loader import load_backbone
from tests.models.convert.test_tf_checkpoint import TFJob, TFWritten, write_with_tensorflow
from tests.support.checkpoints import randomize_batchnorm, touch_payload
from tests.support.http_server import serve_directory

STEP = 225206
FOLDER = "ResNet50_1x"


def _seeded_resnet50(seed: int = 5) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # leave the global RNG alone
        torch.manual_seed(seed)
        model = torchvision.models.resnet50(weights=None)
        randomize_batchnorm(model, affine=True, bias=0.2)
    return model.eval()


def _tf_creation_order(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs in the order SimCLR v1's resnet.py creates them (independent of
    the converter): stem; per Bottleneck ``[downsample]``, then conv1, conv2, conv3."""
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = [(model.conv1, model.bn1)]
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            if block.downsample is not None:  # use_projection: built before the main path
                pairs.append((block.downsample[0], block.downsample[1]))
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
    return pairs


def _suffix(n: int) -> str:
    return "" if n == 0 else f"_{n}"


def simclr_variables(model: nn.Module) -> dict[str, np.ndarray]:
    """The released checkpoint's variables holding ``model``'s weights (TF layouts)."""
    variables: dict[str, np.ndarray] = {}
    for n, (conv, bn) in enumerate(_tf_creation_order(model)):
        hwio = conv.weight.detach().permute(2, 3, 1, 0).numpy()  # OIHW -> HWIO
        variables[f"base_model/conv2d{_suffix(n)}/kernel"] = np.ascontiguousarray(hwio)
        scope = f"base_model/batch_normalization{_suffix(n)}"
        variables[f"{scope}/gamma"] = bn.weight.detach().numpy().copy()
        variables[f"{scope}/beta"] = bn.bias.detach().numpy().copy()
        variables[f"{scope}/moving_mean"] = bn.running_mean.numpy().copy()
        variables[f"{scope}/moving_variance"] = bn.running_var.numpy().copy()
    fc: nn.Linear = model.fc
    variables["head_supervised/linear_layer/dense/kernel"] = fc.weight.detach().T.numpy().copy()
    variables["head_supervised/linear_layer/dense/bias"] = fc.bias.detach().numpy().copy()
    variables["global_step"] = np.int64(STEP)
    return variables


def _zip_release(ckpt: Path, hub: Path, dest: Path) -> Path:
    """Zip like the released archive: ``ResNet50_1x/`` with the checkpoint and ``hub/``.

    Small members are deflated; the 100 MB data file is stored (deflating random floats
    only costs time), so both kinds of member are read.
    """
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{FOLDER}/", b"")
        for file in sorted(ckpt.iterdir()):
            stored = ".data-" in file.name
            zf.write(file, f"{FOLDER}/{file.name}", zipfile.ZIP_STORED if stored else None)
        zf.writestr(f"{FOLDER}/hub/", b"")
        zf.writestr(f"{FOLDER}/hub/saved_model.pb", b"\x08\x01")
        zf.writestr(f"{FOLDER}/hub/tfhub_module.pb", b"\x08\x03")
        for file in sorted(hub.iterdir()):
            if file.name.startswith("model.ckpt."):
                name = "variables" + file.name[len("model.ckpt") :]
                zf.write(file, f"{FOLDER}/hub/variables/{name}")
    return dest


@dataclass
class Release:
    """The seeded model, its TF variables, and what TensorFlow wrote from them."""

    model: nn.Module
    variables: dict[str, np.ndarray]
    written: TFWritten  # the checkpoint, with TensorFlow's listing of it
    archive: Path  # ResNet50_1x.zip, alone in its folder (served as is)
    no_scope: Path  # prefix of a checkpoint without base_model/


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Write the release with TensorFlow (one child process) and zip it."""
    model = _seeded_resnet50()
    variables = simclr_variables(model)
    root = tmp_path_factory.mktemp("simclr")
    decoy = {"base_model/conv2d/kernel": np.zeros((7, 7, 3, 64), np.float32)}
    other = {"resnet_model/conv2d/kernel": np.zeros((1, 1, 3, 4), np.float32)}
    written, hub, no_scope = write_with_tensorflow(
        [
            TFJob(root / FOLDER, variables, step=STEP, meta_graph=True, reference="listing"),
            TFJob(root / "hub", decoy),  # the TF-Hub module's variables: must not be picked
            TFJob(root / "other", other, step=3),
        ],
        root,
    )
    served = root / "served"
    served.mkdir()
    archive = _zip_release(written.prefix.parent, hub.prefix.parent, served / "ResNet50_1x.zip")
    return Release(model, variables, written, archive, no_scope.prefix)


@pytest.fixture(scope="module")
def converted(release: Release) -> dict[str, Tensor]:
    """The release zip converted once (read-only for the tests that share it)."""
    return convert_simclr_v1(release.archive, "resnet50")


@pytest.fixture(scope="module")
def found(release: Release) -> dict[str, np.ndarray]:
    """The release's base_model/ variables as the reader returns them (read-only)."""
    prefix = release.written.prefix
    return read_tf_checkpoint(prefix, select=lambda name: name.startswith("base_model/"))


def _features(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return model.eval()(images)


def _images() -> Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))


# --------------------------------------------------------------------------- the fixture itself


def test_fixture_matches_the_released_variable_listing(release: Release) -> None:
    """Shapes, as TensorFlow lists them, of numbered layers in the published variable
    listing of a SimCLR v1 ResNet-50 (the 4x listing divided by 4): ``conv2d_1`` is
    layer1's projection shortcut, created before the block's own convs."""
    shapes = release.written.shapes
    assert release.written.prefix.name == f"model.ckpt-{STEP}"
    assert shapes["base_model/conv2d/kernel"] == (7, 7, 3, 64)
    assert shapes["base_model/conv2d_1/kernel"] == (1, 1, 64, 256)  # shortcut first
    assert shapes["base_model/conv2d_2/kernel"] == (1, 1, 64, 64)
    assert shapes["base_model/conv2d_3/kernel"] == (3, 3, 64, 64)
    assert shapes["base_model/conv2d_4/kernel"] == (1, 1, 64, 256)
    assert shapes["base_model/conv2d_5/kernel"] == (1, 1, 256, 64)
    assert shapes["base_model/conv2d_11/kernel"] == (1, 1, 256, 512)
    assert shapes["base_model/conv2d_12/kernel"] == (1, 1, 256, 128)
    assert shapes["base_model/conv2d_24/kernel"] == (1, 1, 512, 1024)
    assert shapes["base_model/conv2d_43/kernel"] == (1, 1, 1024, 2048)
    assert shapes["base_model/conv2d_52/kernel"] == (1, 1, 512, 2048)
    assert shapes["base_model/batch_normalization_1/moving_variance"] == (256,)
    assert shapes["head_supervised/linear_layer/dense/kernel"] == (2048, 1000)
    assert shapes["global_step"] == ()
    assert "base_model/conv2d_53/kernel" not in shapes
    with zipfile.ZipFile(release.archive) as zf:
        names = set(zf.namelist())
    assert {
        f"{FOLDER}/checkpoint",
        f"{FOLDER}/model.ckpt-{STEP}.index",
        f"{FOLDER}/model.ckpt-{STEP}.data-00000-of-00001",
        f"{FOLDER}/hub/variables/variables.index",
    } <= names


# --------------------------------------------------------------------------- conversion


#: The catalog entries this module walks through the real converter registry
#: (tests/models/convert/test_contract.py checks that every converted entry is walked).
CATALOG_WALK = ("simclr-v1",)


@pytest.mark.parametrize("name", CATALOG_WALK)
def test_served_zip_converts_through_the_catalog_to_equal_features(
    name: str, release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roots: Roots
) -> None:
    """What `models convert simclr-v1 --from ResNet50_1x.zip` does: the catalog entry's
    converter, looked up in the real registry, turns the zip into the source network."""
    archive = release.archive
    with serve_directory(archive.parent) as server:
        local = fetch(server.url(archive.name), tmp_path / "ResNet50_1x.zip", progress=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    convert_file(get_model_spec(name), roots, local)
    assert list(scratch.iterdir()) == []  # the extracted checkpoint is removed again
    backbone = load_backbone(name, roots, progress=False)  # from the cache, no download
    source = copy.deepcopy(release.model)
    source.fc = nn.Identity()
    images = _images()
    torch.testing.assert_close(
        _features(backbone.trunk, images), _features(source, images), rtol=0, atol=0
    )


def test_shortcut_and_block_convs_land_in_the_right_modules(
    release: Release, converted: dict[str, Tensor]
) -> None:
    variables = release.variables

    def oihw(name: str) -> Tensor:
        return torch.from_numpy(variables[f"base_model/{name}/kernel"]).permute(3, 2, 0, 1)

    assert torch.equal(converted["conv1.weight"], oihw("conv2d"))
    assert torch.equal(converted["layer1.0.downsample.0.weight"], oihw("conv2d_1"))
    assert torch.equal(converted["layer1.0.conv1.weight"], oihw("conv2d_2"))
    assert torch.equal(converted["layer1.0.conv3.weight"], oihw("conv2d_4"))
    assert torch.equal(converted["layer1.1.conv1.weight"], oihw("conv2d_5"))
    assert torch.equal(converted["layer2.0.downsample.0.weight"], oihw("conv2d_11"))
    assert torch.equal(converted["layer4.2.conv3.weight"], oihw("conv2d_52"))
    mean = variables["base_model/batch_normalization_1/moving_mean"]
    assert torch.equal(converted["layer1.0.downsample.1.running_mean"], torch.from_numpy(mean))
    assert not any(k.startswith("fc.") for k in converted)  # head_supervised dropped
    assert len(converted) == 53 + 53 * 4
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in converted.values())


def test_folder_prefix_and_index_are_accepted(
    release: Release, converted: dict[str, Tensor], tmp_path: Path
) -> None:
    with zipfile.ZipFile(release.archive) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / FOLDER
    prefix = folder / f"model.ckpt-{STEP}"
    for path in (tmp_path, folder, prefix.with_name(prefix.name + ".index")):
        assert _local_prefix(path) == prefix, path  # hub/variables/variables.index skipped
    state = convert_simclr_v1(prefix, "resnet50")
    assert state.keys() == converted.keys()
    assert all(torch.equal(state[k], converted[k]) for k in state)


def test_optimizer_slots_and_projection_head_are_ignored(
    release: Release, found: dict[str, np.ndarray], converted: dict[str, Tensor]
) -> None:
    """Not in the released v1 file, but in SimCLR training checkpoints (LARS ``/Momentum``)."""
    extra = dict(found)
    for name in found:
        extra[f"{name}/Momentum"] = np.zeros_like(found[name])
    extra["head_contrastive/nl_0/dense/kernel"] = np.zeros((2048, 2048), np.float32)
    extra["head_contrastive/nl_0/batch_normalization/gamma"] = np.ones(2048, np.float32)
    extra["global_step"] = np.int64(STEP)
    state = simclr_v1_state_dict(extra, release.written.prefix)
    assert state.keys() == converted.keys()
    assert all(torch.equal(state[k], converted[k]) for k in state)


def test_layer_names_are_53_pairs() -> None:
    names = simclr_v1_layer_names()
    convs = [
        n for n, m in torchvision.models.resnet50().named_modules() if isinstance(m, nn.Conv2d)
    ]
    assert len(names) == 53 and sorted(c for c, _ in names) == sorted(convs)
    assert names[1] == ("layer1.0.downsample.0", "layer1.0.downsample.1")


# --------------------------------------------------------------------------- failures


def test_missing_and_unexpected_keys_fail_in_load_strict(converted: dict[str, Tensor]) -> None:
    missing = dict(converted)
    del missing["layer3.2.bn2.running_var"]
    with pytest.raises(ModelError, match=r"missing keys: layer3\.2\.bn2\.running_var"):
        load_strict(build_trunk("resnet50"), missing, what="simclr-v1")
    extra = dict(converted)
    extra["layer1.0.conv4.weight"] = torch.zeros(1)
    with pytest.raises(ModelError, match=r"unexpected keys: layer1\.0\.conv4\.weight"):
        load_strict(build_trunk("resnet50"), extra, what="simclr-v1")


def test_wrong_counts_are_named(found: dict[str, np.ndarray], tmp_path: Path) -> None:
    source = tmp_path / "model.ckpt-1"
    fewer = dict(found)
    del fewer["base_model/conv2d_52/kernel"]
    del fewer["base_model/batch_normalization_7/beta"]
    with pytest.raises(ModelError, match=r"found 52 conv2d kernels .*missing \[52\]") as err:
        simclr_v1_state_dict(fewer, source)
    assert "batch_normalization_7: has ['gamma', 'moving_mean', 'moving_variance']" in str(
        err.value
    )
    assert str(source) in str(err.value)
    more = dict(found)
    more["base_model/conv2d_53/kernel"] = np.zeros((1, 1, 2048, 10), np.float32)
    with pytest.raises(ModelError, match=r"54 conv2d kernels .*unexpected \[53\]"):
        simclr_v1_state_dict(more, source)
    wide = dict(found)
    wide["base_model/conv2d/kernel"] = np.zeros((7, 7, 3, 128), np.float32)
    with pytest.raises(ModelError, match=r"\[7, 7, 3, 128\].*2x/4x"):
        simclr_v1_state_dict(wide, source)


def test_checkpoint_without_base_model_scope(release: Release) -> None:
    with pytest.raises(
        ModelError, match=r"no variables under 'base_model/'.*found: resnet_model/conv2d/kernel"
    ):
        convert_simclr_v1(release.no_scope, "resnet50")


def test_other_architectures_are_refused(release: Release) -> None:
    with pytest.raises(ModelError, match=r"ResNet-50s; cannot convert .* for 'resnet18'"):
        convert_simclr_v1(release.archive, "resnet18")


def _zip_with(dest: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return dest


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", r"a '\.\.' component"),
        ("/tmp/evil.txt", "an absolute path"),
        ("link", "a symbolic link"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path: Path, member: str, reason: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    info = zipfile.ZipInfo(member)
    if member == "link":
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip_with(
        work / "ResNet50_1x.zip",
        [(f"{FOLDER}/model.ckpt-1.index", b"x"), (info, b"../../etc/passwd")],
    )
    with pytest.raises(ModelError, match=rf"refused: its member .* has {reason}"):
        convert_simclr_v1(archive, "resnet50")
    assert not (tmp_path / "evil.txt").exists() and sorted(os.listdir(work)) == ["ResNet50_1x.zip"]


def test_archive_without_checkpoint_or_data(tmp_path: Path) -> None:
    only_hub = _zip_with(tmp_path / "a.zip", [(f"{FOLDER}/hub/variables/variables.index", b"x")])
    with pytest.raises(ModelError, match=r"exactly one TensorFlow checkpoint .* found 0: none"):
        convert_simclr_v1(only_hub, "resnet50")
    no_data = _zip_with(tmp_path / "b.zip", [(f"{FOLDER}/model.ckpt-9.index", b"x")])
    with pytest.raises(ModelError, match=r"no model\.ckpt-9\.data-\* file"):
        convert_simclr_v1(no_data, "resnet50")


def test_pickles_and_other_files_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    bad = tmp_path / "simclr-v1.pth"
    buffer = io.BytesIO()
    pickle.dump({"state_dict": touch_payload(marker)}, buffer)
    bad.write_bytes(buffer.getvalue())
    with pytest.raises(
        ModelError, match=r"neither the SimCLR v1 zip .* nor a TensorFlow checkpoint"
    ):
        convert_simclr_v1(bad, "resnet50")
    assert not marker.exists()
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "zipped.pth")
    with pytest.raises(ModelError, match=r"exactly one TensorFlow checkpoint .* found 0"):
        convert_simclr_v1(tmp_path / "zipped.pth", "resnet50")  # a torch.save zip, not ours
    with pytest.raises(ModelError, match="does not exist"):
        convert_simclr_v1(tmp_path / "nowhere.zip", "resnet50")
