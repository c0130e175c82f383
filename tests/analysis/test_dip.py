"""The skip generator: the original's size and shape path, and members that act alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medtransfer.analysis.dip import (
    ORIGINAL_PARAMETER_COUNT,
    SkipConfig,
    SkipGenerator,
    count_parameters,
)

SMALL = SkipConfig().shallower(3)  # 8x smaller maps at the deepest scale: 32 px -> 4 px


def seeded(config: SkipConfig, members: int, seed: int = 0) -> SkipGenerator:
    generator = SkipGenerator(config, members)
    generator.reset_parameters(torch.Generator().manual_seed(seed).get_state())
    return generator


def test_the_original_generator_has_2_606_763_trainable_parameters() -> None:
    with torch.device("meta"):
        one, three = SkipGenerator(), SkipGenerator(members=3)
    assert count_parameters(one) == ORIGINAL_PARAMETER_COUNT == 2_606_763
    assert count_parameters(three) == 3 * 2_606_763
    convs = [m for m in one.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in one.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 6 * 5 + 1 and len(norms) == 6 * 6  # 5 convs + 6 BNs a scale, head
    assert all(conv.bias is not None for conv in convs)
    assert one.head.out_channels == 3 and one.head.kernel_size == (1, 1)
    widths = [(s.down1.conv.in_channels, s.down1.conv.out_channels) for s in one.scales()]
    assert widths == [(32, 16), (16, 32), (32, 64), (64, 128), (128, 128), (128, 128)]
    kernels = [s.down1.conv.kernel_size[0] for s in one.scales()]
    assert kernels == [7, 7, 5, 5, 3, 3]
    assert [s.skip.conv.out_channels for s in one.scales()] == [4] * 6  # type: ignore[union-attr]
    assert [s.bn.num_features for s in one.scales()] == [36, 68, 132, 132, 132, 132]


def test_the_spatial_path_runs_from_256_down_to_4_and_back() -> None:
    seen: dict[str, list[tuple[int, ...]]] = {"down": [], "up": []}
    generator = SkipGenerator()
    with torch.no_grad():
        for scale in generator.scales():
            scale.down1.register_forward_hook(
                lambda m, a, out: seen["down"].append(tuple(out.shape[1:]))
            )
            scale.register_forward_hook(lambda m, a, out: seen["up"].append(tuple(out.shape[1:])))
        output = generator(torch.rand(1, 32, 256, 256))
    assert [shape[1] for shape in seen["down"]] == [128, 64, 32, 16, 8, 4]
    # forward hooks fire innermost first: each scale's output is at its input's size
    assert [shape[1] for shape in seen["up"]] == [8, 16, 32, 64, 128, 256]
    assert [shape[0] for shape in seen["up"]] == [128, 128, 128, 64, 32, 16]
    assert output.shape == (1, 3, 256, 256)


def test_codes_must_fit_the_scales() -> None:
    generator = SkipGenerator(SMALL)
    with pytest.raises(ValueError, match="multiple of 8"):
        generator(torch.zeros(1, 32, 20, 20))
    with pytest.raises(ValueError, match=r"expected a code \(1, 32, H, W\)"):
        generator(torch.zeros(2, 32, 16, 16))
    with pytest.raises(ValueError, match="one entry per scale"):
        SkipConfig(channels_up=(16,))


def test_members_start_as_a_lone_generator_with_the_same_seed_would() -> None:
    alone, group = seeded(SMALL, 1, seed=4), seeded(SMALL, 3, seed=4)
    for member in range(3):
        for name, tensor in group.member_state_dict(member).items():
            assert torch.equal(tensor, alone.state_dict()[name]), name
    other = seeded(SMALL, 1, seed=5)
    assert not torch.equal(other.head.weight, alone.head.weight)
    conv = alone.body.down1.conv
    assert conv.weight.abs().max() <= conv.weight[0].numel() ** -0.5  # U(-1/sqrt(fan_in), ..)


def test_each_member_computes_and_learns_what_it_would_alone() -> None:
    group = seeded(SMALL, 2)
    with torch.no_grad():  # make the members differ
        for parameter in group.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    code = torch.rand(2, 32, 32, 32, generator=torch.Generator().manual_seed(2))
    output = group(code)
    (output[1] ** 2).mean().backward()
    alone = SkipGenerator(SMALL)
    alone.load_state_dict(group.member_state_dict(1))
    expected = alone(code[1:])
    (expected**2).mean().backward()
    torch.testing.assert_close(output[1:], expected, rtol=1e-4, atol=1e-5)
    rows = group.head.weight.shape[0] // 2
    torch.testing.assert_close(group.head.weight.grad[rows:], alone.head.weight.grad)
    assert group.head.weight.grad[:rows].abs().max() == 0  # member 0 untouched by member 1


def test_one_grouped_call_and_one_call_per_member_agree() -> None:
    group = seeded(SMALL, 3)
    code = torch.rand(3, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    assert group.grouped is None  # CPU: one call per member; CUDA: one grouped call
    per_member = group(code)
    group.grouped = True
    assert all(m.grouped for m in group.modules() if hasattr(m, "grouped"))
    torch.testing.assert_close(group(code), per_member, rtol=1e-4, atol=1e-5)
