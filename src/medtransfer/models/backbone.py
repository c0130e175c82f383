"""The sealed backbone module, and strict loading of weights into a trunk.

A :class:`Backbone` is a pretrained trunk with its input normalisation sealed inside, in
``eval()`` mode: ``forward`` takes images ``(B, 3, H, W)`` float in [0, 1], applies the
normalisation the weights expect, and returns the pooled features ``(B, feature_dim)``:

* ResNet-18/50: conv1 → bn1 → relu → maxpool → layer1..4 → global average pool → flatten;
* DenseNet-121: features → ReLU → adaptive average pool 1×1 → flatten;
* EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``): forward_features → global average
  pool → flatten.

No classifier head and no feature normalisation follow. Weights are always loaded
strictly (:func:`load_strict`): a key that is missing, unexpected or of the wrong shape is
a :class:`ModelError`. :func:`medtransfer.models.loader.load_backbone` builds one from a
catalog name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from medtransfer.errors import ModelError
from medtransfer.models.catalog import ModelSpec
from medtransfer.models.normalization import make_normalization
from medtransfer.models.state_dicts import key_listing


class Backbone(nn.Module):
    """Pretrained trunk returning pooled features.

    forward(images: ``(B, 3, H, W)`` float in [0, 1]) -> ``(B, feature_dim)``.

    Attributes:
        spec: the catalog entry.
        feature_dim: width of the features (``spec.feature_dim``).
        weights_sha256: sha256 of the weights file, or of the state dict for random models.
        normalization: the normalisation kind actually applied (``none`` under --no-norm).
        weights_path: the weights file that was loaded (None for random models).
    """

    def __init__(
        self,
        spec: ModelSpec,
        trunk: nn.Module,
        *,
        weights_sha256: str,
        normalization: str,
        weights_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.feature_dim = spec.feature_dim
        self.weights_sha256 = weights_sha256
        self.normalization = normalization
        self.weights_path = weights_path
        self.normalize = make_normalization(normalization)
        self.trunk = trunk

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> features ``(B, feature_dim)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{self.spec.name} expects images (B, 3, H, W); got shape {tuple(images.shape)}"
            )
        return self.trunk(self.normalize(images))

    def extra_repr(self) -> str:
        return (
            f"name={self.spec.name}, feature_dim={self.feature_dim}, "
            f"normalization={self.normalization}, weights_sha256={self.weights_sha256[:12]}"
        )


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, what: str) -> None:
    """Load ``state_dict`` into ``module``; every key must match in name and shape.

    BatchNorm ``num_batches_tracked`` counters absent from old files (torchvision's
    ImageNet checkpoints predate them) are taken from the module. ``what`` names the weights
    (file and model) in the error message.
    """
    expected = module.state_dict()
    given = dict(state_dict)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in given:
            given[key] = value.clone()
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {key_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {key_listing(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} keys with the wrong shape: {key_listing(mismatched)}")
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " The keys carry a 'module.' prefix (DataParallel); strip it before saving."
        raise ModelError(
            f"The weights in {what} do not fit the architecture: {'; '.join(parts)}. The file "
            "must be a torchvision-format state dict of that architecture (flat, or under "
            f"'state_dict'); the classifier head is dropped.{hint}"
        )
    module.load_state_dict(given, strict=True)
