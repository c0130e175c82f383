"""The deep-image-prior "skip" generator (Ulyanov et al.), as the original study configured it.

An encoder-decoder with one skip branch per scale (docs/original-study.md#reconstruction).
Scale ``i`` takes ``d_i`` channels (``d_0`` = the code's 32, then the previous scale's
down width) and computes::

    skip  = LReLU(BN(Conv1x1(x, d_i -> skip_i)))
    deep  = LReLU(BN(AvgPool2(Conv_k(x, d_i -> down_i))))
    deep  = LReLU(BN(Conv_k(deep, down_i -> down_i)))
    deep  = Upsample2_nearest(scale_{i+1}(deep))        # the deepest scale has no inner one
    y     = BN(concat(skip, deep))                       # skip_i + up_{i+1} (deepest: down_i)
    y     = LReLU(BN(Conv_k(y, skip_i + c -> up_i)))
    out_i = LReLU(BN(Conv1x1(y, up_i -> up_i)))

followed by a final ``Conv1x1(up_0 -> 3)`` and no output non-linearity. Convolutions have
stride 1, zero padding ``(k - 1) / 2`` and biases; BatchNorm has PyTorch's defaults and
stays in train mode (each generator sees a batch of one); LeakyReLU has slope 0.2. With the
defaults of :class:`SkipConfig` the generator has 2,606,763 trainable parameters and takes a
``32 x 256 x 256`` code through 128, 64, 32, 16, 8 down to 4 pixels and back to 256.

**Several generators at once.** :class:`SkipGenerator` holds ``members`` independent
generators as one module: every convolution is a grouped convolution (one group per
member) and every BatchNorm has one channel set per member, so a batch-of-one BatchNorm per
member is exactly the per-channel statistics of the grouped layer. Member ``g`` computes
what a one-member generator with member ``g``'s parameters computes
(:meth:`SkipGenerator.member_state_dict`); optimisers that act element-wise (Adam) then
train each member as if it were alone. How the grouped convolutions run is a choice of
speed only (``grouped``): one grouped call (the default on CUDA), or one call per member
(the default elsewhere: the CPU's grouped kernels are slower than separate calls for these
channel counts, see ``benchmarks/reconstruction.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Parameters of the original study's generator (docs/original-study.md#reconstruction).
ORIGINAL_PARAMETER_COUNT = 2_606_763


@dataclass(frozen=True)
class SkipConfig:
    """Widths and filter sizes of the skip generator, outermost scale first.

    The defaults are the original study's; ``shallower(n)`` keeps the first ``n`` scales
    (small generators for tests)."""

    in_channels: int = 32
    out_channels: int = 3
    channels_down: tuple[int, ...] = (16, 32, 64, 128, 128, 128)
    channels_up: tuple[int, ...] = (16, 32, 64, 128, 128, 128)
    channels_skip: tuple[int, ...] = (4, 4, 4, 4, 4, 4)
    filters_down: tuple[int, ...] = (7, 7, 5, 5, 3, 3)
    filters_up: tuple[int, ...] = (7, 7, 5, 5, 3, 3)
    filter_skip: int = 1
    slope: float = 0.2

    def __post_init__(self) -> None:
        lists = (
            self.channels_down,
            self.channels_up,
            self.channels_skip,
            self.filters_down,
            self.filters_up,
        )
        if len({len(values) for values in lists}) != 1 or not self.channels_down:
            raise ValueError("channels_down/up/skip and filters_down/up need one entry per scale")
        odd = [k for k in (*self.filters_down, *self.filters_up, self.filter_skip) if k % 2 == 0]
        if odd:
            raise ValueError(f"filter sizes must be odd (same-size padding), got {odd}")

    @property
    def depth(self) -> int:
        """The number of scales (each halves the spatial size on the way down)."""
        return len(self.channels_down)

    def shallower(self, depth: int) -> SkipConfig:
        """The same generator with only its first ``depth`` scales."""
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth must be in 1..{self.depth}, got {depth}")
        return SkipConfig(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            channels_down=self.channels_down[:depth],
            channels_up=self.channels_up[:depth],
            channels_skip=self.channels_skip[:depth],
            filters_down=self.filters_down[:depth],
            filters_up=self.filters_up[:depth],
            filter_skip=self.filter_skip,
            slope=self.slope,
        )

    def describe(self) -> dict[str, object]:
        """Every field, for records and checkpoint keys."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "channels_down": list(self.channels_down),
            "channels_up": list(self.channels_up),
            "channels_skip": list(self.channels_skip),
            "filters_down": list(self.filters_down),
            "filters_up": list(self.filters_up),
            "filter_skip": self.filter_skip,
            "slope": self.slope,
            "upsample": "nearest",
            "downsample": "avg",
            "pad": "zero",
        }


class _MemberConv(nn.Conv2d):
    """A convolution with one group per member, run as one grouped call or as one call per
    member (``grouped``: True, False, or None for grouped on CUDA only). Same parameters,
    same function; only the kernels (and so the rounding) differ."""

    grouped: bool | None = None

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        grouped = self.grouped if self.grouped is not None else x.device.type == "cuda"
        if grouped or self.groups == 1:
            return super()._conv_forward(x, weight, bias)
        assert bias is not None
        parts = zip(
            x.chunk(self.groups, 1),
            weight.chunk(self.groups, 0),
            bias.chunk(self.groups, 0),
            strict=True,
        )
        return torch.cat([F.conv2d(a, w, b, padding=self.padding) for a, w, b in parts], dim=1)


class _ConvUnit(nn.Module):
    """``LReLU(BN([AvgPool2](Conv_k(x))))`` for ``members`` generators side by side.

    forward: ``(1, members * c_in, H, W) -> (1, members * c_out, H', W')``, H' = H / 2
    when ``pool`` else H.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, members: int, slope: float, *, pool: bool = False
    ) -> None:
        super().__init__()
        self.conv = _MemberConv(
            members * c_in, members * c_out, kernel, padding=(kernel - 1) // 2, groups=members
        )
        self.pool = nn.AvgPool2d(2, 2) if pool else nn.Identity()
        self.bn = nn.BatchNorm2d(members * c_out)
        self.act = nn.LeakyReLU(slope, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.pool(self.conv(x))))


def _concat(skip: Tensor, deep: Tensor, members: int) -> Tensor:
    """Channel concatenation per member: ``(1, G*a, H, W)`` and ``(1, G*b, H, W)`` ->
    ``(1, G*(a+b), H, W)`` with member g's ``a`` skip channels before its ``b`` deep ones."""
    _, _, height, width = deep.shape
    parts = [t.reshape(members, -1, height, width) for t in (skip, deep)]
    return torch.cat(parts, dim=1).reshape(1, -1, height, width)


class _Scale(nn.Module):
    """Scale ``index`` of the generator and, inside it, every deeper scale (module docstring).

    forward: ``(1, members * d_i, H, W) -> (1, members * up_i, H, W)``.
    """

    def __init__(self, config: SkipConfig, index: int, c_in: int, members: int) -> None:
        super().__init__()
        self.members = members
        down, up = config.channels_down[index], config.channels_up[index]
        skip, slope = config.channels_skip[index], config.slope
        k_down, k_up = config.filters_down[index], config.filters_up[index]
        self.skip = _ConvUnit(c_in, skip, config.filter_skip, members, slope) if skip > 0 else None
        self.down1 = _ConvUnit(c_in, down, k_down, members, slope, pool=True)
        self.down2 = _ConvUnit(down, down, k_down, members, slope)
        deeper = index + 1 < config.depth
        self.inner = _Scale(config, index + 1, down, members) if deeper else None
        merged = skip + (config.channels_up[index + 1] if deeper else down)
        self.bn = nn.BatchNorm2d(members * merged)
        self.up1 = _ConvUnit(merged, up, k_up, members, slope)
        self.up2 = _ConvUnit(up, up, 1, members, slope)

    def forward(self, x: Tensor) -> Tensor:
        deep = self.down2(self.down1(x))
        if self.inner is not None:
            deep = self.inner(deep)
        deep = F.interpolate(deep, scale_factor=2, mode="nearest")
        merged = deep if self.skip is None else _concat(self.skip(x), deep, self.members)
        return self.up2(self.up1(self.bn(merged)))


class SkipGenerator(nn.Module):
    """``members`` independent skip generators in one module (module docstring).

    forward(code: ``(members, in_channels, H, W)``) -> ``(members, out_channels, H, W)``;
    row g of the output depends only on row g of the code and member g's parameters.
    H and W must be multiples of ``2 ** depth``. ``grouped``: see :attr:`grouped`.
    """

    def __init__(
        self, config: SkipConfig | None = None, members: int = 1, grouped: bool | None = None
    ) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.config = config or SkipConfig()
        self.members = members
        self.body = _Scale(self.config, 0, self.config.in_channels, members)
        up0 = self.config.channels_up[0]
        self.head = _MemberConv(
            members * up0, members * self.config.out_channels, 1, groups=members
        )
        self.grouped = grouped

    @property
    def grouped(self) -> bool | None:
        """How the members' convolutions run: one grouped call (True), one call per member
        (False), or grouped on CUDA only (None)."""
        return self._grouped

    @grouped.setter
    def grouped(self, value: bool | None) -> None:
        self._grouped = value
        for module in self.modules():
            if isinstance(module, _MemberConv):
                module.grouped = value

    def forward(self, code: Tensor) -> Tensor:
        members, channels, height, width = code.shape
        if members != self.members or channels != self.config.in_channels:
            raise ValueError(
                f"expected a code ({self.members}, {self.config.in_channels}, H, W), "
                f"got {tuple(code.shape)}"
            )
        step = 2**self.config.depth
        if height % step or width % step:
            raise ValueError(
                f"the code's size {height}x{width} must be a multiple of {step} "
                f"(2 ** {self.config.depth} scales)"
            )
        out = self.head(self.body(code.reshape(1, -1, height, width)))
        return out.reshape(members, self.config.out_channels, height, width)

    def scales(self) -> Iterator[_Scale]:
        """The scales, outermost first."""
        scale: _Scale | None = self.body
        while scale is not None:
            yield scale
            scale = scale.inner

    def reset_parameters(self, rng_state: Tensor) -> None:
        """Initialise every member from the CPU generator state ``rng_state``.

        Each member draws, in module order, every convolution's weight and then its bias
        from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's default initialisation of
        ``nn.Conv2d``, which the original used) from a generator set to ``rng_state``;
        BatchNorm starts at weight 1, bias 0. So member g's parameters do not depend on how
        many members there are, and with one state all members start equal."""
        with torch.no_grad():
            for member in range(self.members):
                rng = torch.Generator()
                rng.set_state(rng_state)
                for module in self.modules():
                    if isinstance(module, nn.Conv2d):
                        self._draw_conv(module, member, rng)
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_parameters()

    def _draw_conv(self, conv: nn.Conv2d, member: int, rng: torch.Generator) -> None:
        rows = conv.out_channels // self.members
        fan_in = conv.weight[0].numel()
        bound = fan_in**-0.5
        shape = (rows, *conv.weight.shape[1:])
        block = slice(member * rows, (member + 1) * rows)
        conv.weight[block] = (torch.rand(shape, generator=rng) * 2 - 1) * bound
        assert conv.bias is not None
        conv.bias[block] = (torch.rand(rows, generator=rng) * 2 - 1) * bound

    def member_state_dict(self, member: int) -> dict[str, Tensor]:
        """Member ``member`` as the state dict of a one-member :class:`SkipGenerator`."""
        if not 0 <= member < self.members:
            raise IndexError(f"member {member} of {self.members}")
        state = {}
        for name, tensor in self.state_dict().items():
            if tensor.ndim == 0:  # BatchNorm's num_batches_tracked
                state[name] = tensor.clone()
                continue
            rows = tensor.shape[0] // self.members
            state[name] = tensor[member * rows : (member + 1) * rows].clone()
        return state


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (convolution weights and biases, BN affine)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
