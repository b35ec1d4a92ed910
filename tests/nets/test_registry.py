"""Network registry: names, keyword forwarding and errors."""

from __future__ import annotations

import pytest

from segshift.nets import NETS, AttentionUNet, ResidualUNet, UNet, build_net


@pytest.mark.parametrize(("name", "cls"), [("unet", UNet), ("resunet", ResidualUNet), ("attention_unet", AttentionUNet)])
def test_build_by_name(name, cls):
    net = build_net(name, in_channels=2, out_channels=3, features=(4, 8, 16, 32, 64), norm="instance")
    assert type(net) is cls
    assert net.head.in_channels == 4 and net.head.out_channels == 3


def test_names():
    assert set(NETS) == {"unet", "resunet", "attention_unet"}


def test_unknown_name_lists_names():
    with pytest.raises(ValueError, match="attention_unet, resunet, unet"):
        build_net("vnet", 1, 4)


@pytest.mark.parametrize(("name", "kwarg"), [("unet", "dilations"), ("attention_unet", "encoder_blocks")])
def test_unknown_kwarg_names_the_net(name, kwarg):
    with pytest.raises(TypeError, match=rf"network '{name}'.*{kwarg}"):
        build_net(name, 1, 4, **{kwarg: 1})
