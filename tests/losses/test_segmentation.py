"""Segmentation losses and entropy maps: hand-computed values on toy inputs."""

from __future__ import annotations

import math

import pytest
import torch

from segshift.losses import (
    CrossEntropyLoss,
    FocalLoss,
    HybridLoss,
    SoftDiceLoss,
    SoftJaccardLoss,
    cross_entropy,
    entropy_map,
    mean_entropy,
    one_hot,
)

# 2x2 toy, two classes. Foreground probabilities p and the reference y:
#   p = [[0.8, 0.4],    y = [[1, 0],
#        [0.1, 0.6]]         [0, 1]]
# Probabilities of the true class: 0.8, 0.6 (=1-0.4), 0.9 (=1-0.1), 0.6.
P_FG = torch.tensor([[0.8, 0.4], [0.1, 0.6]])
TARGET = torch.tensor([[[1, 0], [0, 1]]])
LOGITS = torch.stack([(1 - P_FG).log(), P_FG.log()])[None]  # (1, 2, 2, 2); softmax gives p
P_TRUE = (0.8, 0.6, 0.9, 0.6)
CE = -sum(math.log(p) for p in P_TRUE) / 4  # 0.33754
# Foreground: sum(y p) = 1.4, sum(p) = 1.9, sum(y) = 2.  Background: 1.5, 2.1, 2.
DICE_FG, DICE_BG = 2 * 1.4 / (1.9 + 2), 2 * 1.5 / (2.1 + 2)  # 0.71795, 0.73171
JAC_FG, JAC_BG = 1.4 / (1.9 + 2 - 1.4), 1.5 / (2.1 + 2 - 1.5)  # 0.56, 0.57692


def confident(target: torch.Tensor, num_classes: int, scale: float = 30.0) -> torch.Tensor:
    """Logits that put (almost) all mass on the target class."""
    return scale * (2 * one_hot(target, num_classes) - 1)


def test_toy_logits_give_the_probabilities():
    torch.testing.assert_close(torch.softmax(LOGITS, 1)[0, 1], P_FG)


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (lambda x, y: cross_entropy(x, y), CE),
        (CrossEntropyLoss(), CE),
        (SoftDiceLoss(smooth=0), 1 - DICE_FG),  # 0.28205
        (SoftDiceLoss(smooth=0, include_background=True), 1 - (DICE_FG + DICE_BG) / 2),  # 0.27517
        (SoftDiceLoss(smooth=1), 1 - (2 * 1.4 + 1) / (1.9 + 2 + 1)),  # 0.22449
        (SoftJaccardLoss(smooth=0), 1 - JAC_FG),  # 0.44
        (SoftJaccardLoss(smooth=0, include_background=True), 1 - (JAC_FG + JAC_BG) / 2),  # 0.43154
        (SoftJaccardLoss(smooth=1), 1 - (1.4 + 1) / (2.5 + 1)),  # 0.31429
        (FocalLoss(gamma=0), CE),
        (FocalLoss(gamma=2), -sum((1 - p) ** 2 * math.log(p) for p in P_TRUE) / 4),  # 0.04336
        (
            FocalLoss(gamma=1, alpha=(1.0, 3.0)),
            -(3 * 0.2 * math.log(0.8) + 3 * 0.4 * math.log(0.6) + 0.4 * math.log(0.6) + 0.1 * math.log(0.9)) / 8,
        ),
    ],
)
def test_toy_values(loss, expected):
    assert float(loss(LOGITS, TARGET)) == pytest.approx(expected, abs=1e-6)


def test_uniform_logits_cross_entropy_is_ln_c():
    target = torch.tensor([[[0, 1], [1, 0]]])
    assert float(cross_entropy(torch.zeros(1, 2, 2, 2), target)) == pytest.approx(math.log(2))
    assert float(cross_entropy(torch.zeros(1, 4, 2, 2), target)) == pytest.approx(math.log(4))


def test_weighted_cross_entropy():
    # Weighted mean: (w1 (-ln .8) + w0 (-ln .6) + w0 (-ln .9) + w1 (-ln .6)) / (2 w0 + 2 w1)
    w0, w1 = 1.0, 3.0
    expected = -(w1 * math.log(0.8) + w0 * math.log(0.6) + w0 * math.log(0.9) + w1 * math.log(0.6)) / (2 * w0 + 2 * w1)
    assert float(cross_entropy(LOGITS, TARGET, weight=[w0, w1])) == pytest.approx(expected, abs=1e-6)
    assert float(FocalLoss(gamma=0, alpha=[w0, w1])(LOGITS, TARGET)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 3, 4, 4, 4)])
def test_focal_gamma_zero_equals_cross_entropy(shape):
    torch.manual_seed(0)
    logits = torch.randn(shape)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    torch.testing.assert_close(FocalLoss(gamma=0)(logits, target), cross_entropy(logits, target))


@pytest.mark.parametrize(
    "loss",
    [
        CrossEntropyLoss(),
        SoftDiceLoss(),
        SoftDiceLoss(include_background=True, smooth=0),
        SoftJaccardLoss(),
        SoftJaccardLoss(include_background=True, smooth=0, batch=False),
        FocalLoss(),
    ],
)
@pytest.mark.parametrize("dims", [2, 3])
def test_perfect_prediction_gives_zero(loss, dims):
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, *(6,) * dims))
    assert float(loss(confident(target, 4), target)) == pytest.approx(0.0, abs=1e-5)


def test_absent_class_correctly_empty_costs_nothing():
    # Three classes, class 2 absent from the batch and not predicted: no loss.
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = confident(target, 3)
    for loss in (SoftDiceLoss(), SoftJaccardLoss(), SoftDiceLoss(batch=False), SoftJaccardLoss(batch=False)):
        assert float(loss(logits, target)) == pytest.approx(0.0, abs=1e-5)
    # Unsmoothed, the absent class scores 0 (documented): mean over classes 1, 2 = 0.5.
    assert float(SoftDiceLoss(smooth=0)(logits, target)) == pytest.approx(0.5, abs=1e-5)


def test_absent_class_false_positive_is_penalised():
    # Class 2 absent from the reference but predicted everywhere on a 16x16 image.
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    logits = confident(torch.full_like(target, 2), 3)
    # Class 1 and class 2 both score ~0 (smooth / (mass + smooth) with mass >= 64): loss ~1.
    assert float(SoftDiceLoss()(logits, target)) > 0.98
    assert float(SoftJaccardLoss()(logits, target)) > 0.98


def test_batch_versus_per_image_dice():
    # Image 0 perfect on class 1, image 1 misses its only class-1 pixel entirely.
    target = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]]])
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    logits = confident(pred, 2, scale=50.0)
    # Batch: 2*2 / (2 + 3) = 0.8; per image: mean(1, 0) = 0.5.
    assert float(SoftDiceLoss(smooth=0)(logits, target)) == pytest.approx(0.2, abs=1e-6)
    assert float(SoftDiceLoss(smooth=0, batch=False)(logits, target)) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        CrossEntropyLoss(),
        SoftDiceLoss(),
        SoftJaccardLoss(),
        FocalLoss(),
        FocalLoss(alpha=[0.2, 1, 1]),
        lambda x, y: HybridLoss({"ce": 0.5, "jaccard": 0.5})(x, y)[0],
        lambda x, y: mean_entropy(x),
    ],
)
def test_gradients_flow(loss):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    loss(logits, target).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_saturated_logits_have_finite_gradients():
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = (1e4 * (2 * one_hot(target, 2) - 1)).requires_grad_()
    for fn in (SoftDiceLoss(smooth=0), SoftJaccardLoss(smooth=0), FocalLoss(), CrossEntropyLoss(), mean_entropy):
        logits.grad = None
        (fn(logits, target) if fn is not mean_entropy else fn(logits)).backward()
        assert torch.isfinite(logits.grad).all()


def test_bfloat16_logits_computed_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    for fn in (SoftDiceLoss(), FocalLoss(), CrossEntropyLoss()):
        out = fn(logits.bfloat16(), target)
        assert out.dtype == torch.float32
        assert float(out) == pytest.approx(float(fn(logits, target)), abs=2e-2)


def test_singleton_channel_target_accepted():
    torch.testing.assert_close(SoftDiceLoss()(LOGITS, TARGET[:, None]), SoftDiceLoss()(LOGITS, TARGET))


@pytest.mark.parametrize(
    ("logits", "target", "match"),
    [
        (torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long), "target must be"),
        (torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 2), r"in \[0, 1\]"),
        (torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), -1), r"in \[0, 1\]"),
        (torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2), "integer"),
        (torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "at least 2 classes"),
        (torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), r"\(B, C, \*spatial\)"),
    ],
)
@pytest.mark.parametrize("loss", [CrossEntropyLoss(), SoftDiceLoss(), SoftJaccardLoss(), FocalLoss()])
def test_bad_inputs(loss, logits, target, match):
    with pytest.raises(ValueError, match=match):
        loss(logits, target)


def test_bad_options():
    with pytest.raises(ValueError, match="one value per class"):
        cross_entropy(LOGITS, TARGET, weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="smooth"):
        SoftDiceLoss(smooth=-1)


def test_hybrid_loss_wang2019():
    loss = HybridLoss({"ce": 0.5, "jaccard": 0.5}, options={"jaccard": {"smooth": 0}})
    total, parts = loss(LOGITS, TARGET)
    assert set(parts) == {"ce", "jaccard"}
    assert float(parts["ce"]) == pytest.approx(CE, abs=1e-6)
    assert float(parts["jaccard"]) == pytest.approx(1 - JAC_FG, abs=1e-6)
    assert float(total) == pytest.approx(0.5 * CE + 0.5 * (1 - JAC_FG), abs=1e-6)
    assert not any(p.requires_grad for p in parts.values())


def test_hybrid_loss_options_reach_components():
    loss = HybridLoss({"dice": 1.0, "focal": 2.0}, options={"dice": {"include_background": True, "smooth": 0}})
    total, parts = loss(LOGITS, TARGET)
    assert float(parts["dice"]) == pytest.approx(1 - (DICE_FG + DICE_BG) / 2, abs=1e-6)
    assert float(total) == pytest.approx(float(parts["dice"]) + 2 * float(FocalLoss()(LOGITS, TARGET)), abs=1e-6)


@pytest.mark.parametrize(
    ("weights", "options", "match"),
    [
        ({}, None, "at least one"),
        ({"ce": 1.0, "lovasz": 1.0}, None, "unknown loss component.*lovasz.*ce, dice, jaccard, focal"),
        ({"ce": -0.5}, None, ">= 0"),
        ({"ce": 1.0}, {"dice": {"smooth": 0}}, "not in weights"),
    ],
)
def test_hybrid_loss_rejects(weights, options, match):
    with pytest.raises(ValueError, match=match):
        HybridLoss(weights, options)


@pytest.mark.parametrize(
    ("logits", "expected"),
    [
        (torch.zeros(2, 4, 3, 3), 1.0),  # uniform over 4 classes
        (torch.zeros(1, 2, 2, 2, 2), 1.0),  # 3D, 2 classes
        (torch.tensor([50.0, -50.0, -50.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2), 0.0),  # one-hot confident
        # p = (0.8, 0.2): -(0.8 ln 0.8 + 0.2 ln 0.2) / ln 2 = 0.72193
        (torch.tensor([math.log(0.8), math.log(0.2)]).view(1, 2, 1, 1), -(0.8 * math.log(0.8) + 0.2 * math.log(0.2)) / math.log(2)),
    ],
)
def test_entropy_map(logits, expected):
    ent = entropy_map(logits)
    assert ent.shape == (logits.shape[0], 1, *logits.shape[2:])
    torch.testing.assert_close(ent, torch.full_like(ent, expected), atol=1e-6, rtol=0)
    assert float(mean_entropy(logits)) == pytest.approx(expected, abs=1e-6)


def test_entropy_map_range_and_errors():
    torch.manual_seed(0)
    ent = entropy_map(10 * torch.randn(4, 5, 16, 16))
    assert float(ent.min()) >= 0 and float(ent.max()) <= 1
    with pytest.raises(ValueError, match="C >= 2"):
        entropy_map(torch.zeros(1, 1, 4, 4))
