"""A small U-Net fits one toy image: the whole forward/backward path learns."""

from __future__ import annotations

import torch

from segshift.losses import HybridLoss
from segshift.nets import UNet


def test_unet_overfits_a_disc():
    torch.manual_seed(0)
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    label = (((i - 15.5) ** 2 + (j - 13.5) ** 2) < 8**2).long()[None]  # (1, 32, 32)
    image = (label.float() + 0.1 * torch.randn(1, 32, 32))[None]  # (1, 1, 32, 32)
    net = UNet(in_channels=1, out_channels=2, features=(8, 16, 32))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = HybridLoss({"ce": 0.5, "dice": 0.5})
    for _ in range(60):
        opt.zero_grad()
        total, _ = loss_fn(net(image), label)
        total.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(image).argmax(1)
    inter = ((pred == 1) & (label == 1)).sum()
    dice = float(2 * inter / ((pred == 1).sum() + (label == 1).sum()))
    assert dice > 0.9
