"""Segmentation networks: output and feature shapes, input checks, residual U-Net features."""

from __future__ import annotations

import pytest
import torch

from segshift.nets import AttentionUNet, ResidualUNet, UNet

# (class, kwargs, input shape, logits shape, forward_features shapes (C, *spatial) deep to shallow)
CASES = [
    (
        UNet,
        {"out_channels": 4},
        (2, 1, 64, 64),
        (2, 4, 64, 64),
        [(256, 4, 4), (128, 8, 8), (64, 16, 16), (32, 32, 32), (16, 64, 64)],
    ),
    (
        UNet,
        {"in_channels": 2, "out_channels": 3, "features": (8, 16, 32), "norm": "instance"},
        (1, 2, 16, 24),
        (1, 3, 16, 24),
        [(32, 4, 6), (16, 8, 12), (8, 16, 24)],
    ),
    (
        UNet,
        {"out_channels": 3, "features": (4, 8, 16), "spatial_dims": 3},
        (1, 1, 8, 8, 12),
        (1, 3, 8, 8, 12),
        [(16, 2, 2, 3), (8, 4, 4, 6), (4, 8, 8, 12)],
    ),
    (
        ResidualUNet,
        {"out_channels": 4},
        (2, 1, 64, 64),
        (2, 4, 64, 64),
        [(256, 4, 4), (128, 8, 8), (64, 16, 16), (32, 32, 32), (16, 64, 64)],
    ),
    (
        ResidualUNet,
        {
            "out_channels": 2,
            "features": (4, 8, 16),
            "encoder_blocks": (1, 2, 2),
            "decoder_blocks": (1, 2),
            "feature_blocks": (3, 5),
            "spatial_dims": 3,
        },
        (1, 1, 8, 8, 8),
        (1, 2, 8, 8, 8),
        [(16, 2, 2, 2), (8, 4, 4, 4), (4, 8, 8, 8)],
    ),
    (
        AttentionUNet,
        {"out_channels": 4},
        (2, 1, 64, 64),
        (2, 4, 64, 64),
        [(128, 8, 8), (64, 16, 16), (32, 32, 32), (16, 64, 64)],
    ),
    (
        AttentionUNet,
        {"in_channels": 3, "out_channels": 2, "features": (8, 16, 32, 64), "dilations": (1, 2), "bins": (1, 2)},
        (1, 3, 32, 48),
        (1, 2, 32, 48),
        [(64, 4, 6), (32, 8, 12), (16, 16, 24), (8, 32, 48)],
    ),
    (
        AttentionUNet,
        {"out_channels": 3, "features": (4, 8, 16, 32), "spatial_dims": 3},
        (1, 1, 16, 16, 16),
        (1, 3, 16, 16, 16),
        [(32, 2, 2, 2), (16, 4, 4, 4), (8, 8, 8, 8), (4, 16, 16, 16)],
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "in_shape", "out_shape", "feat_shapes"), CASES)
def test_shapes(cls, kwargs, in_shape, out_shape, feat_shapes):
    torch.manual_seed(0)
    net = cls(**kwargs)
    x = torch.randn(in_shape)
    logits, feats = net.forward_features(x)
    assert logits.shape == out_shape
    assert [tuple(f.shape) for f in feats] == [(in_shape[0], *s) for s in feat_shapes]
    assert net.feature_channels == [s[0] for s in feat_shapes]
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.forward_features(x)[0])


@pytest.mark.parametrize(
    ("net", "shape", "multiple"),
    [
        (UNet(), (1, 1, 60, 64), 16),
        (UNet(features=(8, 16)), (1, 1, 16, 15), 2),
        (ResidualUNet(), (1, 1, 64, 72), 16),
        (AttentionUNet(), (1, 1, 36, 32), 8),
        (UNet(features=(4, 8, 16), spatial_dims=3), (1, 1, 8, 8, 6), 4),
    ],
)
def test_indivisible_input_raises(net, shape, multiple):
    with pytest.raises(ValueError, match=f"multiple of {multiple} "):
        net(torch.zeros(shape))


@pytest.mark.parametrize("net", [UNet(), ResidualUNet(), AttentionUNet()])
def test_wrong_dimensionality_raises(net):
    with pytest.raises(ValueError, match="4-dimensional input"):
        net(torch.zeros(1, 1, 16, 16, 16))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (UNet, {"features": (16,)}, "^UNet: features must be at least 2"),
        (ResidualUNet, {"features": (16,)}, "^ResidualUNet: features must be at least 2"),
        (AttentionUNet, {"features": (8, 0)}, "^AttentionUNet: features must be at least 2 positive"),
        (UNet, {"spatial_dims": 1}, "spatial_dims"),
        (UNet, {"norm": "group"}, "unknown norm"),
        (ResidualUNet, {"encoder_blocks": (1, 2)}, "encoder_blocks"),
        (ResidualUNet, {"decoder_blocks": (1, 1)}, "decoder_blocks"),
        (ResidualUNet, {"feature_blocks": (12,)}, r"1\.\.11"),
        (ResidualUNet, {"feature_blocks": (0,)}, "feature_blocks"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_resunet_is_asymmetric():
    net = ResidualUNet()
    assert net.encoder_blocks == (1, 2, 3, 3, 2)
    assert net.decoder_blocks == (1, 1, 1, 1)
    assert [len(level) for level in net.encoders] == [1, 2, 3, 3, 2]
    assert [len(level) for level in net.decoders] == [1, 1, 1, 1]


@pytest.mark.parametrize(("block", "location"), [(1, (0, 0)), (3, (1, 1)), (6, (2, 2)), (7, (3, 0)), (9, (3, 2)), (11, (4, 1))])
def test_resunet_block_location(block, location):
    assert ResidualUNet().block_location(block) == location


@pytest.mark.parametrize(
    ("feature_blocks", "shapes"),
    [
        ((7, 9), [(2, 128, 8, 8), (2, 128, 8, 8)]),  # Yan et al.: after the third pooling
        ((9, 7), [(2, 128, 8, 8), (2, 128, 8, 8)]),  # order-insensitive, ascending output
        ((1, 3, 11), [(2, 16, 64, 64), (2, 32, 32, 32), (2, 256, 4, 4)]),
    ],
)
def test_resunet_encoder_features(feature_blocks, shapes):
    torch.manual_seed(0)
    net = ResidualUNet(feature_blocks=feature_blocks).eval()
    x = torch.randn(2, 1, 64, 64)
    feats = net.encoder_features(x)
    assert [tuple(f.shape) for f in feats] == shapes


def test_resunet_encoder_features_are_the_blocks_outputs():
    torch.manual_seed(0)
    net = ResidualUNet(features=(4, 8, 16, 32), encoder_blocks=(1, 2, 3, 3)).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        f7, f9 = net.encoder_features(x)
        h = net.encoders[0](x)
        h = net.encoders[1](net.pool(h))
        h = net.encoders[2](net.pool(h))
        h = net.pool(h)
        h7 = net.encoders[3][0](h)
        h9 = net.encoders[3][2](net.encoders[3][1](h7))
    torch.testing.assert_close(f7, h7)
    torch.testing.assert_close(f9, h9)


def test_attention_maps_in_unit_interval():
    torch.manual_seed(0)
    net = AttentionUNet(features=(8, 16, 32, 64))
    with torch.no_grad():
        maps = net.attention_maps(torch.randn(2, 1, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 1, 8, 8), (2, 1, 16, 16), (2, 1, 32, 32)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)


def test_attention_unet_layout():
    net = AttentionUNet()
    dilated = net.bottleneck[0]
    assert [dilated[i][0].dilation for i in range(2)] == [(2, 2), (4, 4)]
    assert [b[0].output_size for b in net.bottleneck[1].branches] == [1, 2, 3, 6]
    assert len(net.gates) == len(net.ups) == 3
    assert net.feature_channels == [128, 64, 32, 16]


@pytest.mark.parametrize("cls", [UNet, ResidualUNet, AttentionUNet])
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(0)
    kwargs = {"features": (4, 8, 16, 32)}
    if cls is ResidualUNet:
        kwargs |= {"encoder_blocks": (1, 2, 3, 3)}
    net = cls(out_channels=3, **kwargs)
    logits, _feats = net.forward_features(torch.randn(2, 1, 32, 32))
    logits.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
