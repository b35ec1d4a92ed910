"""PatchGAN discriminator: hand-computed score-map sizes and layout (Wang et al. 2019)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segshift.nets import PatchDiscriminator


# Each 4x4 convolution with padding 1 maps a size s to (s + 2 - 4) // stride + 1:
# stride 2 halves an even size, stride 1 removes one.
@pytest.mark.parametrize(
    ("kwargs", "in_shape", "out_shape"),
    [
        ({"in_channels": 4}, (2, 4, 128, 128), (2, 1, 14, 14)),  # 128 -> 64 -> 32 -> 16 -> 15 -> 14
        ({"in_channels": 4}, (1, 4, 64, 96), (1, 1, 6, 10)),  # 64->32->16->8->7->6, 96->48->24->12->11->10
        ({"in_channels": 1, "norm": "instance"}, (2, 1, 32, 32), (2, 1, 2, 2)),  # 32->16->8->4->3->2
        ({"in_channels": 2, "spatial_dims": 3}, (1, 2, 32, 32, 40), (1, 1, 2, 2, 3)),
        (
            {"in_channels": 3, "channels": (8, 16, 1), "strides": (2, 2, 1)},
            (1, 3, 128, 128),
            (1, 1, 31, 31),  # 128 -> 64 -> 32 -> 31
        ),
    ],
)
def test_output_shape(kwargs, in_shape, out_shape):
    disc = PatchDiscriminator(**kwargs)
    assert disc(torch.randn(in_shape)).shape == out_shape
    assert disc.output_size(in_shape[2:]) == out_shape[2:]


def test_paper_layout():
    disc = PatchDiscriminator(4)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 1]
    assert [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)] * 2
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    leaky = [m for m in disc.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 4 and all(m.negative_slope == 0.2 for m in leaky)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in disc.modules())
    assert isinstance(disc.layers[-1][-1], nn.Identity)  # no activation after the last layer


def test_norm_skips_first_and_last_layer():
    disc = PatchDiscriminator(4, norm="instance")
    norms = [isinstance(layer[1], nn.InstanceNorm2d) for layer in disc.layers]
    assert norms == [False, True, True, True, False]


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({"in_channels": 1}, (1, 1, 8, 8), "too small"),
        ({"in_channels": 1}, (1, 1, 8, 8, 8), "4-dimensional"),
    ],
)
def test_bad_input(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        PatchDiscriminator(**kwargs)(torch.zeros(shape))


def test_bad_arguments():
    with pytest.raises(ValueError, match="same non-zero length"):
        PatchDiscriminator(1, channels=(8, 1), strides=(2, 2, 1))
