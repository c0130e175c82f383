"""EfficientNet-Lite0: the package's weights classify real photos and feed the backbone."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from medtransfer.config import Roots
from medtransfer.models.archs import timm_model
from medtransfer.models.backbone import load_strict
from medtransfer.models.catalog import get_model_spec
from medtransfer.models.efficientnet_lite import (
    IMAGENET_CLASSES,
    TIMM_NAME,
    efficientnet_lite0_state_dict,
    verified_package_file,
)
from medtransfer.models.loader import load_backbone
from medtransfer.models.seeding import seeded


def _classifier() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the package's ImageNet weights and head, in eval.

    forward: ``(B, 3, 224, 224)`` images normalised with ``half`` -> logits ``(B, 1000)``.
    """
    spec = get_model_spec("efficientnet-lite0")
    path, _ = verified_package_file(spec)
    with seeded(0):
        model = timm_model(TIMM_NAME, num_classes=IMAGENET_CLASSES)
    load_strict(model, efficientnet_lite0_state_dict(path), what=f"{path} ({spec.name})")
    return model.eval()


def _half_normalised(image: np.ndarray) -> Tensor:
    from PIL import Image

    resized = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - 0.5) / 0.5


def test_efficientnet_lite0_weights_are_real(roots: Roots) -> None:
    from skimage import data

    classifier = _classifier()
    x = torch.stack([_half_normalised(data.chelsea()), _half_normalised(data.coffee())])
    with torch.no_grad():
        top1 = classifier(x).argmax(dim=1).tolist()
    assert 281 <= top1[0] <= 285  # a cat
    assert top1[1] == 967  # espresso

    backbone = load_backbone("efficientnet-lite0", roots)
    assert backbone.normalization == "half" and backbone.weights_sha256.startswith("57934424")
    with torch.no_grad():
        features = backbone(x * 0.5 + 0.5)  # the backbone normalises [0, 1] itself
        expected = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
    assert features.shape == (2, 1280)
    torch.testing.assert_close(features, expected)
