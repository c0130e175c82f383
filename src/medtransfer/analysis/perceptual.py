"""How alike two images look: LPIPS (three trunks), SSIM and MS-SSIM, batched.

LPIPS is the ``lpips`` package's ``LPIPS(net, version='0.1')`` (Zhang et al., 2018:
calibrated linear layers on normalised trunk activations, spatially averaged), exactly as
the original study called it (docs/original-study.md#perceptual-distance), with one change
of plumbing: the trunk is built without weights and the caller's torchvision state dict is
loaded into it (:func:`build_lpips`), so no download happens behind the caller's back. Its
linear layers come from the package's wheel. Inputs are mapped from [0, 1] to [-1, 1]
(``2x - 1``) as the original did. Lower is more alike; 0 for identical images.

SSIM and MS-SSIM come from ``pytorch-msssim`` (Gaussian window 11, sigma 1.5, data range 1,
the constants of Wang et al.); they need no weights. Higher is more alike; 1 for identical
images. MS-SSIM needs images larger than 160 pixels a side (five scales of an 11-pixel
window); :func:`ms_ssim` returns None for smaller ones.

Every function takes ``(B, 3, H, W)`` float images in [0, 1] and returns ``(B,)``.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from medtransfer.errors import ModelError

#: ``lpips.LPIPS(net=...)`` names, in the original's order.
LPIPS_NETS: tuple[str, ...] = ("alex", "vgg", "squeeze")
LPIPS_VERSION = "0.1"
#: The smallest side MS-SSIM takes with pytorch-msssim's defaults.
MS_SSIM_MIN_SIDE = 161


def _trunk_key(lpips_key: str) -> str:
    """``slice2.3.weight`` (the lpips trunk's slices of torchvision's ``features``) ->
    ``features.3.weight`` (torchvision's name of the same tensor)."""
    return "features." + lpips_key.split(".", 1)[1]


def load_trunk(trunk: nn.Module, state: Mapping[str, Tensor], *, what: str) -> None:
    """Load a torchvision state dict (``alexnet``, ``vgg16`` or ``squeezenet1_1``) into an
    lpips trunk (``LPIPS(...).net``). Every ``features.*`` tensor the trunk uses must be
    there with its shape; other keys (the classifier) are ignored.

    Raises:
        ModelError: a missing tensor or a wrong shape, naming ``what`` (the file)."""
    mapped, missing, wrong = {}, [], []
    for key, tensor in trunk.state_dict().items():
        source = _trunk_key(key)
        if source not in state:
            missing.append(source)
        elif state[source].shape != tensor.shape:
            wrong.append(f"{source} {tuple(state[source].shape)} (expected {tuple(tensor.shape)})")
        else:
            mapped[key] = state[source]
    if missing or wrong:
        problems = (["missing " + ", ".join(missing[:5])] if missing else []) + wrong[:5]
        raise ModelError(
            f"{what} is not the torchvision layout the LPIPS trunk needs: {'; '.join(problems)}. "
            "Delete it to download it again."
        )
    trunk.load_state_dict(mapped, strict=True)


def _unfilled_features(arch: str) -> Callable[..., types.SimpleNamespace]:
    """A stand-in for torchvision's builder ``arch`` that gives only ``features`` (all lpips
    takes), with storage but no initialisation: :func:`load_trunk` fills every tensor."""

    def build(*args: object, **kwargs: object) -> types.SimpleNamespace:
        import torchvision

        with torch.device("meta"):  # no time spent drawing weights that are replaced
            model = getattr(torchvision.models, arch)(weights=None)
        return types.SimpleNamespace(features=model.features.to_empty(device="cpu"))

    return build


@contextlib.contextmanager
def _trunks_without_download() -> Iterator[None]:
    """Inside the block, lpips's trunk classes get their torchvision ``features`` from
    :func:`_unfilled_features` instead of torchvision's builders (which would initialise or
    download weights)."""
    from lpips import pretrained_networks

    builders = {arch: _unfilled_features(arch) for arch in ("alexnet", "vgg16", "squeezenet1_1")}
    original = pretrained_networks.tv
    pretrained_networks.tv = types.SimpleNamespace(**builders)
    try:
        yield
    finally:
        pretrained_networks.tv = original


def build_lpips(net: str, trunk_state: Mapping[str, Tensor], *, what: str = "") -> nn.Module:
    """``lpips.LPIPS(net=net, version='0.1')`` in eval mode, without gradients, with its
    trunk's weights taken from ``trunk_state`` (a torchvision state dict) instead of a
    download. forward(a, b): ``(B, 3, H, W)`` in [-1, 1] each -> ``(B, 1, 1, 1)``."""
    if net not in LPIPS_NETS:
        raise ModelError(f"Unknown LPIPS net {net!r}; use one of {', '.join(LPIPS_NETS)}.")
    import lpips

    with _trunks_without_download():
        model = lpips.LPIPS(net=net, version=LPIPS_VERSION, pnet_rand=True, verbose=False)
    load_trunk(model.net, trunk_state, what=what or f"the {net} trunk weights")
    return model.eval().requires_grad_(False)


def lpips_distance(model: nn.Module, images: Tensor, others: Tensor) -> Tensor:
    """LPIPS between ``images`` and ``others`` (both in [0, 1]) with a :func:`build_lpips`
    model: ``(B,)``."""
    with torch.no_grad():
        return model(images * 2 - 1, others * 2 - 1).reshape(-1).float()


def ssim(images: Tensor, others: Tensor) -> Tensor:
    """SSIM of each pair (mean over the map and the channels): ``(B,)``."""
    from pytorch_msssim import ssim as _ssim

    with torch.no_grad():
        return _ssim(images.float(), others.float(), data_range=1.0, size_average=False)


def ms_ssim(images: Tensor, others: Tensor) -> Tensor | None:
    """MS-SSIM of each pair: ``(B,)``; None when a side is under :data:`MS_SSIM_MIN_SIDE`."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if min(images.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return None
    with torch.no_grad():
        return _ms_ssim(images.float(), others.float(), data_range=1.0, size_average=False)
