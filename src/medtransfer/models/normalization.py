"""Input normalisation: what a network expects, made from images in [0, 1].

Every module here maps images ``(B, 3, H, W)`` float in [0, 1] to a tensor of the same
shape that the network was trained on:

=============  ==============================================================================
kind           output
=============  ==============================================================================
``imagenet``   ``(x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)`` per channel
``half``       ``(x - 0.5) / 0.5``, i.e. [-1, 1] (EfficientNet-Lite and other TF models)
``cxr``        ``(x - 0.5020) / 0.085585`` on every channel (MoCo-CXR's chest X-ray statistics)
``histogram``  per-image histogram equalisation to [0, 255] (the original's HistogramNormalize)
``none``       ``x`` unchanged
``standardize:m1,m2,m3/s1,s2,s3``  per-channel mean/std of the weights' own metadata (timm,
               torchvision models named by the user)
=============  ==============================================================================
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medtransfer.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
# MoCo-CXR (stanfordmlgroup/MoCo-CXR) pretrained with these statistics on all 3 channels.
CXR_MEAN = (0.5020, 0.5020, 0.5020)
CXR_STD = (0.085585, 0.085585, 0.085585)

NORMALIZATIONS: tuple[str, ...] = ("imagenet", "half", "cxr", "histogram", "none")

HISTOGRAM_BINS = 256


class Standardize(nn.Module):
    """Per-channel ``(x - mean) / std``. forward: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # Not persistent: the constants are not weights and stay out of state dicts.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        mean = self.mean.to(dtype=images.dtype)
        std = self.std.to(dtype=images.dtype)
        return (images - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class HistogramNormalize(nn.Module):
    """Histogram equalisation per image over all channels together, output in [0, 255].

    The original's ``HistogramNormalize`` (from facebookresearch/CovidPrognosis), batched:
    for each image, ``hist, bins = np.histogram(x.ravel(), 256, density=True)``,
    ``cdf = 255 * cumsum(hist) / sum(hist)``, and every value becomes
    ``np.interp(x, bins[:-1], cdf)`` (left bin edges; values past the last left edge take
    ``cdf[-1]``). A constant image uses numpy's range ``(v - 0.5, v + 0.5)``.

    forward: ``(B, C, H, W)`` float in [0, 1] -> ``(B, C, H, W)`` float32 in [0, 255].
    """

    def __init__(self, bins: int = HISTOGRAM_BINS) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim < 2:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
        batch = images.shape[0]
        work = torch.float32 if images.device.type == "mps" else torch.float64
        flat = images.reshape(batch, -1).to(work)  # (B, N)
        n_bins = self.bins

        low = flat.amin(dim=1, keepdim=True)  # (B, 1)
        high = flat.amax(dim=1, keepdim=True)
        constant = low == high
        low = torch.where(constant, low - 0.5, low)
        high = torch.where(constant, high + 0.5, high)
        steps = torch.linspace(0.0, 1.0, n_bins + 1, device=flat.device, dtype=work)
        edges = low + (high - low) * steps  # (B, n_bins + 1)
        edges[:, -1] = high[:, 0]

        # Bin i holds edges[i] <= x < edges[i+1]; the last bin also holds x == high.
        index = torch.searchsorted(edges, flat.contiguous(), right=True) - 1  # (B, N)
        index = index.clamp_(0, n_bins - 1)
        counts = torch.zeros(batch, n_bins, device=flat.device, dtype=work)
        counts.scatter_add_(1, index, torch.ones_like(flat))
        cdf = counts.cumsum(dim=1)
        cdf = 255.0 * cdf / cdf[:, -1:]  # (B, n_bins); density scaling cancels out

        # np.interp(x, left_edges, cdf): linear between left edges, clamp past the last one.
        left = edges[:, :-1]  # (B, n_bins)
        j = index.clamp(max=n_bins - 2)
        x0 = left.gather(1, j)
        x1 = left.gather(1, j + 1)
        y0 = cdf.gather(1, j)
        y1 = cdf.gather(1, j + 1)
        out = y0 + (flat - x0) * (y1 - y0) / (x1 - x0)
        out = torch.where(index >= n_bins - 1, cdf[:, -1:].expand_as(out), out)
        return out.to(torch.float32).reshape(images.shape)

    def extra_repr(self) -> str:
        return f"bins={self.bins}"


def standardize_kind(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    """The kind string of a per-channel ``(x - mean) / std`` with these statistics."""
    numbers = ",".join(f"{v:g}" for v in mean) + "/" + ",".join(f"{v:g}" for v in std)
    return f"standardize:{numbers}"


def _parse_standardize(kind: str) -> nn.Module:
    try:
        mean_text, std_text = kind.split(":", 1)[1].split("/")
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise ModelError(
            f"Bad normalisation {kind!r}; expected standardize:m1,m2,m3/s1,s2,s3."
        ) from None
    if len(mean) != len(std) or not all(s > 0 for s in std):
        raise ModelError(f"Bad normalisation {kind!r}: mean and std must pair up, std > 0.")
    return Standardize(mean, std)


def make_normalization(kind: str) -> nn.Module:
    """The normalisation module for ``kind`` (one of :data:`NORMALIZATIONS`, or
    ``standardize:...`` from :func:`standardize_kind`)."""
    key = kind.strip().lower() if isinstance(kind, str) else kind
    if isinstance(key, str) and key.startswith("standardize:"):
        return _parse_standardize(key)
    if key == "imagenet":
        return Standardize(IMAGENET_MEAN, IMAGENET_STD)
    if key == "half":
        return Standardize(HALF_MEAN, HALF_STD)
    if key == "cxr":
        return Standardize(CXR_MEAN, CXR_STD)
    if key == "histogram":
        return HistogramNormalize()
    if key == "none":
        return nn.Identity()
    raise ModelError(
        f"Unknown input normalisation {kind!r}; use one of {', '.join(NORMALIZATIONS)}."
    )
