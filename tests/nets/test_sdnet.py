"""SDNet parts (Liu et al. 2020, section 2.2): rounding, factor shapes, AdaIN, modality sampling."""

from __future__ import annotations

import pytest
import torch

from segshift.nets import SDNet, round_ste
from segshift.nets.sdnet import AdaINDecoder, AnatomyEncoder, ModalityEncoder, onehot_ste


def test_round_ste_rounds_forward_and_passes_gradients_unchanged():
    x = torch.tensor([0.1, 0.49, 0.51, 0.9], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    (y * w).sum().backward()
    assert torch.equal(x.grad, w)  # identity backward, although round() has zero gradient almost everywhere


def test_onehot_ste_keeps_one_channel_per_pixel_and_passes_gradients_unchanged():
    p = torch.tensor([[0.2, 0.3, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7]], requires_grad=True)  # (pixels, channels)
    y = onehot_ste(p, dim=1)
    assert y.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]  # round() would leave the first pixel all-zero
    w = torch.arange(8.0).view(2, 4)
    (y * w).sum().backward()
    assert torch.equal(p.grad, w)


@pytest.mark.parametrize("binarise", ["round", "onehot"])
def test_anatomy_factor_is_binary_and_the_encoder_gets_gradients_through_the_rounding(binarise):
    torch.manual_seed(0)
    enc = AnatomyEncoder(anatomy_channels=8, features=(4, 8, 16), binarise=binarise)
    a = enc(torch.randn(2, 1, 16, 16))
    assert a.shape == (2, 8, 16, 16) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert float(a.detach().sum(1).max()) <= 1.0  # a rounded softmax has at most one active channel per pixel
    (a * torch.randn_like(a)).sum().backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    if binarise == "onehot":
        assert torch.equal(a.detach().sum(1), torch.ones(2, 16, 16))
    with pytest.raises(ValueError, match="binarise"):
        AnatomyEncoder(binarise="sigmoid")


def test_modality_encoder_samples_while_training_and_gives_the_mean_in_eval():
    torch.manual_seed(0)
    enc = ModalityEncoder(anatomy_channels=8, z_dim=8)
    x, a = torch.randn(3, 1, 16, 16), torch.zeros(3, 8, 16, 16)
    z, mu, logvar = enc(x, a)
    assert z.shape == mu.shape == logvar.shape == (3, 8) and not torch.allclose(z, mu)
    enc.eval()
    z, mu, _ = enc(x, a)
    assert torch.equal(z, mu)


def test_adain_decoder_output_depends_on_the_modality_factor():
    torch.manual_seed(0)
    dec = AdaINDecoder(anatomy_channels=8, z_dim=8, width=8)
    a = (torch.rand(1, 8, 16, 16) > 0.5).float()
    y1, y2 = dec(a, torch.zeros(1, 8)), dec(a, 3 * torch.ones(1, 8))
    assert y1.shape == (1, 1, 16, 16) and float((y1 - y2).abs().mean()) > 1e-3
    assert float(y2.abs().max()) > 1.0  # identity output: z-scored intensities are not squashed into [-1, 1]
    with pytest.raises(ValueError, match="identity or tanh"):
        AdaINDecoder(output="sigmoid")


def test_sdnet_latent_regression_pass():
    torch.manual_seed(0)
    net = SDNet(num_classes=4, anatomy_features=(4, 8, 16))
    out = net(torch.randn(2, 1, 16, 16), z_prior=torch.randn(2, 8))
    assert out.logits.shape == (2, 4, 16, 16) and out.reconstruction.shape == (2, 1, 16, 16)
    assert out.mu_prior_rec.shape == (2, 8)
