"""Building blocks: factories, shapes, attention coefficients, pyramid pooling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segshift.nets.blocks import (
    AttentionGate,
    ConvNormAct,
    DoubleConv,
    PyramidPooling,
    ResidualBlock,
    act_layer,
    layer_type,
    norm_layer,
)


@pytest.mark.parametrize(
    ("kind", "dims", "expected"),
    [
        ("conv", 2, nn.Conv2d),
        ("conv", 3, nn.Conv3d),
        ("convtranspose", 2, nn.ConvTranspose2d),
        ("convtranspose", 3, nn.ConvTranspose3d),
        ("batchnorm", 3, nn.BatchNorm3d),
        ("instancenorm", 2, nn.InstanceNorm2d),
        ("maxpool", 3, nn.MaxPool3d),
        ("avgpool", 2, nn.AvgPool2d),
        ("adaptiveavgpool", 3, nn.AdaptiveAvgPool3d),
        ("dropout", 2, nn.Dropout2d),
    ],
)
def test_layer_type(kind, dims, expected):
    assert layer_type(kind, dims) is expected


@pytest.mark.parametrize(("kind", "dims", "match"), [("conv", 1, "spatial_dims"), ("fancy", 2, "unknown layer kind")])
def test_layer_type_rejects(kind, dims, match):
    with pytest.raises(ValueError, match=match):
        layer_type(kind, dims)


@pytest.mark.parametrize(("norm", "expected"), [("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d), ("none", nn.Identity)])
def test_norm_layer(norm, expected):
    assert isinstance(norm_layer(norm, 2, 4), expected)


def test_instance_norm_is_affine():
    assert norm_layer("instance", 3, 4).affine


def test_bad_norm_and_act():
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        norm_layer("group", 2, 4)
    with pytest.raises(ValueError, match="unknown act 'gelu'"):
        act_layer("gelu")
    assert act_layer("leaky").negative_slope == 0.2


@pytest.mark.parametrize(
    ("dims", "kwargs", "in_shape", "out_shape"),
    [
        (2, {"kernel_size": 3}, (2, 3, 16, 16), (2, 8, 16, 16)),
        (2, {"kernel_size": 3, "stride": 2}, (2, 3, 16, 16), (2, 8, 8, 8)),
        (2, {"kernel_size": 3, "dilation": 4}, (1, 3, 16, 16), (1, 8, 16, 16)),
        (2, {"kernel_size": 1, "norm": "none", "act": "none"}, (1, 3, 5, 7), (1, 8, 5, 7)),
        (2, {"kernel_size": 4, "stride": 2, "padding": 1}, (1, 3, 16, 16), (1, 8, 8, 8)),
        (3, {"kernel_size": 3, "norm": "instance", "act": "leaky"}, (1, 3, 6, 8, 10), (1, 8, 6, 8, 10)),
        (3, {"kernel_size": 3, "stride": 2, "dilation": 2}, (1, 3, 8, 8, 8), (1, 8, 4, 4, 4)),
    ],
)
def test_conv_norm_act_shapes(dims, kwargs, in_shape, out_shape):
    block = ConvNormAct(dims, 3, 8, **kwargs)
    assert block(torch.randn(in_shape)).shape == out_shape


def test_conv_bias_only_without_norm():
    assert ConvNormAct(2, 1, 4, norm="none")[0].bias is not None
    assert ConvNormAct(2, 1, 4, norm="batch")[0].bias is None


@pytest.mark.parametrize(
    ("dims", "in_shape", "dilations"),
    [(2, (2, 3, 16, 16), (1, 1)), (2, (1, 3, 16, 16), (2, 4)), (3, (1, 3, 8, 8, 8), (1, 1))],
)
def test_double_conv_shapes(dims, in_shape, dilations):
    block = DoubleConv(dims, 3, 6, dilations=dilations)
    out = block(torch.randn(in_shape))
    assert out.shape == (in_shape[0], 6, *in_shape[2:])
    assert block[1][0].dilation == (dilations[1],) * dims


@pytest.mark.parametrize(
    ("dims", "cin", "cout", "stride", "in_shape", "out_shape", "projection"),
    [
        (2, 8, 8, 1, (2, 8, 16, 16), (2, 8, 16, 16), False),
        (2, 8, 16, 1, (2, 8, 16, 16), (2, 16, 16, 16), True),
        (2, 8, 8, 2, (1, 8, 16, 16), (1, 8, 8, 8), True),
        (3, 4, 8, 2, (1, 4, 8, 8, 8), (1, 8, 4, 4, 4), True),
    ],
)
def test_residual_block(dims, cin, cout, stride, in_shape, out_shape, projection):
    block = ResidualBlock(dims, cin, cout, stride=stride)
    assert block(torch.randn(in_shape)).shape == out_shape
    assert isinstance(block.shortcut, nn.Identity) is not projection


def test_residual_block_identity_path_carries_input():
    # With the residual branch zeroed, the block is act(x): ReLU of the input.
    block = ResidualBlock(2, 4, 4, norm="none")
    for p in block.conv2.parameters():
        nn.init.zeros_(p)
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize(
    ("dims", "skip_shape", "gate_shape"),
    [
        (2, (2, 16, 32, 32), (2, 32, 32, 32)),  # same size
        (2, (2, 16, 32, 32), (2, 32, 16, 16)),  # coarser gate: upsampled
        (3, (1, 8, 8, 8, 8), (1, 4, 4, 4, 4)),
    ],
)
def test_attention_gate(dims, skip_shape, gate_shape):
    torch.manual_seed(0)
    gate = AttentionGate(dims, skip_channels=skip_shape[1], gate_channels=gate_shape[1])
    x, g = torch.randn(skip_shape), torch.randn(gate_shape)
    with torch.no_grad():
        out, alpha = gate(x, g, return_attention=True)
    assert out.shape == x.shape
    assert alpha.shape == (skip_shape[0], 1, *skip_shape[2:])
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    torch.testing.assert_close(out, x * alpha)
    with torch.no_grad():
        torch.testing.assert_close(gate(x, g), out)


def test_attention_gate_follows_paper_layout():
    gate = AttentionGate(2, skip_channels=16, gate_channels=32)
    assert gate.theta[0].kernel_size == (3, 3) and gate.phi[0].kernel_size == (3, 3)
    assert gate.psi[0].kernel_size == (1, 1) and gate.psi[0].out_channels == 1
    assert gate.theta[0].out_channels == 8  # default: half the skip channels


@pytest.mark.parametrize(
    ("dims", "in_shape", "kwargs", "out_channels"),
    [
        (2, (2, 64, 16, 16), {}, 64),
        (2, (1, 32, 6, 6), {"out_channels": 16}, 16),
        (2, (1, 8, 4, 4), {"bins": (1, 2)}, 8),  # batch of one in training mode
        (3, (1, 16, 6, 6, 6), {"bins": (1, 2, 3)}, 16),
    ],
)
def test_pyramid_pooling(dims, in_shape, kwargs, out_channels):
    ppm = PyramidPooling(dims, in_shape[1], **kwargs).train()
    out = ppm(torch.randn(in_shape))
    assert out.shape == (in_shape[0], out_channels, *in_shape[2:])


def test_pyramid_pooling_layout():
    ppm = PyramidPooling(2, 64)
    assert [b[0].output_size for b in ppm.branches] == [1, 2, 3, 6]
    assert all(b[1][0].out_channels == 16 for b in ppm.branches)  # 64 // 4 bins
    assert ppm.fuse[0].in_channels == 64 + 4 * 16 and ppm.fuse[0].kernel_size == (1, 1)
    with pytest.raises(ValueError, match="bins"):
        PyramidPooling(2, 64, bins=())
