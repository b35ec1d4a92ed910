"""Generators of the translation methods: shapes, attention gates, skips, residual output."""

from __future__ import annotations

import pytest
import torch

from segshift.nets import AttentionGate, ResnetGenerator


@pytest.mark.parametrize("kw", [{}, {"attention": True}, {"skips": True}, {"residual": True}, {"n_down": 3}])
def test_generator_keeps_the_image_shape(kw):
    g = ResnetGenerator(1, 1, ngf=8, n_blocks=2, **kw)
    assert g(torch.randn(2, 1, 48, 48)).shape == (2, 1, 48, 48)


def test_generator_3d_and_size_check():
    g = ResnetGenerator(1, 1, ngf=4, n_blocks=1, spatial_dims=3, attention=True)
    assert g(torch.randn(1, 1, 16, 16, 8)).shape == (1, 1, 16, 16, 8)
    with pytest.raises(ValueError):
        ResnetGenerator(1, 1, ngf=4)(torch.randn(1, 1, 30, 30))  # not a multiple of 2**n_down


def test_attention_generator_gates_every_skip_with_1x1_weights():
    g = ResnetGenerator(1, 1, ngf=8, n_down=2, n_blocks=1, attention=True)
    gates = [m for m in g.modules() if isinstance(m, AttentionGate)]
    assert len(gates) == 2
    assert all(c.kernel_size == (1, 1) for gate in gates for c in gate.modules() if isinstance(c, torch.nn.Conv2d))
    plain = ResnetGenerator(1, 1, ngf=8, n_down=2, n_blocks=1)
    assert not any(isinstance(m, AttentionGate) for m in plain.modules())
    assert sum(p.numel() for p in g.parameters()) > sum(p.numel() for p in plain.parameters())


def test_residual_generator_starts_as_the_identity():
    g = ResnetGenerator(1, 1, ngf=4, n_blocks=1, residual=True)
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(g(x), x)
