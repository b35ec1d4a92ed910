"""The supervised loss built from ``train:``: ``loss`` weights and ``dice_background`` (the GIN-IPA authors' balance)."""

from __future__ import annotations

import pytest
import torch

from segshift.engine.config import resolve
from segshift.errors import SegshiftError
from segshift.losses import HybridLoss, cross_entropy, one_hot
from segshift.methods.base import make_loss

AUTHORS = ["train.loss={ce: 1, dice: 1}", "train.dice_background=true"]


def _inputs(seed: int = 0, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, classes, 12, 10, generator=g) * 2, torch.randint(0, classes, (3, 12, 10), generator=g)


def _dice(logits: torch.Tensor, target: torch.Tensor, c: int, smooth: float = 1.0) -> torch.Tensor:
    """Batch soft Dice of class ``c``, written out."""
    p = torch.softmax(logits, 1)[:, c]
    y = one_hot(target, logits.shape[1])[:, c]
    return (2 * (p * y).sum() + smooth) / (p.sum() + y.sum() + smooth)


def test_default_loss_is_unchanged():
    cfg = resolve("source-only")["train"]
    assert cfg["loss"] == {"ce": 0.5, "dice": 0.5} and cfg["dice_background"] is False
    logits, target = _inputs()
    total, parts = make_loss(cfg)(logits, target)
    ref, ref_parts = HybridLoss({"ce": 0.5, "dice": 0.5})(logits, target)
    assert torch.equal(total, ref) and parts.keys() == ref_parts.keys()
    assert all(torch.equal(parts[k], ref_parts[k]) for k in parts)


def test_dice_background_adds_exactly_the_background_dice_term():
    logits, target = _inputs()
    fg = make_loss(resolve("gin-ipa", sets=AUTHORS[:1])["train"])
    bg = make_loss(resolve("gin-ipa", sets=AUTHORS)["train"])
    (t_fg, p_fg), (t_bg, p_bg) = fg(logits, target), bg(logits, target)
    ce = cross_entropy(logits, target)
    dices = torch.stack([_dice(logits, target, c) for c in range(4)])
    assert torch.allclose(p_fg["dice"], 1 - dices[1:].mean()) and torch.allclose(p_bg["dice"], 1 - dices.mean())
    assert torch.allclose(t_fg, ce + 1 - dices[1:].mean()) and torch.allclose(t_bg, ce + 1 - dices.mean())
    # with C classes the background term enters as (1 - Dice_0) / C, the foreground mean with weight (C - 1) / C
    c = 4
    assert torch.allclose(t_bg - ce, (c - 1) / c * (t_fg - ce) + (1 - dices[0]) / c, atol=1e-6)
    assert float((t_bg - t_fg).abs()) > 1e-3  # the option changes the loss


def test_dice_background_needs_a_dice_term():
    with pytest.raises(SegshiftError, match=r"train\.dice_background: true needs a dice term in train\.loss"):
        resolve("source-only", sets=["train.loss={ce: 1}", "train.dice_background=true"])
    with pytest.raises(SegshiftError, match="expected true/false"):
        resolve("source-only", sets=["train.dice_background=yes please"])


def test_a_config_without_dice_background_builds_the_foreground_dice():
    train = dict(resolve("source-only")["train"])
    train.pop("dice_background")  # a run's config.yaml without the key
    logits, target = _inputs(1)
    assert torch.equal(make_loss(train)(logits, target)[0], HybridLoss({"ce": 0.5, "dice": 0.5})(logits, target)[0])
