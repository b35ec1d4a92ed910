"""What an alignment or translation step logs about itself on the engine's logging steps, so a null result explains itself.

Computed only when :attr:`~segshift.methods.base.Method.diagnostics` is set (the engine sets
it on the steps it writes to ``logs/train.csv``), from the step's own tensors; none of it
changes the update (no parameter gradient, no batch-norm statistics, no random draw):

* :func:`gradient_ratios`: ``||d term / d theta_seg|| / ||d L_sup / d theta_seg||`` for each
  extra term of the segmenter's loss (``grad_ratio_<name>``), by ``torch.autograd.grad`` on
  the retained graph: one extra backward pass per term, and one for the supervised loss;
* :func:`hard_dice`: mean foreground Dice of a batch's argmax prediction (``trans_dice``);
* :func:`intensity_distance`: how far two image batches' intensity distributions lie apart
  (``trans_stat_dist``);
* :func:`evaluating`: networks in eval mode for a look that must not touch their statistics.

The discriminators' accuracy (``d_acc_<name>``) needs no extra pass and is logged at every
step (:func:`segshift.losses.adversarial.d_accuracy`). docs/training.md, "Diagnostics",
says how to read each column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn


def gradient_ratios(supervised: torch.Tensor, terms: Mapping[str, torch.Tensor | None], params: Sequence[torch.Tensor]) -> dict[str, float]:
    """``{name: ||grad of term|| / ||grad of supervised||}`` over ``params`` (their global L2 norms).

    ``None`` terms (weight 0: no gradient reaches ``params``) give 0. The graph is kept
    (``retain_graph``), so the step's own backward runs afterwards unchanged; ``.grad`` is
    not touched. A supervised gradient of norm 0 leaves every ratio undefined: ``{}`` (a
    logged NaN would read as a diverged run).

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> gradient_ratios((w**2).sum(), {"a": 0.5 * (w**2).sum(), "b": None}, [w])  # ||(1, 2)|| / ||(2, 4)||
        {'a': 0.5, 'b': 0.0}
    """
    params = [p for p in params if p.requires_grad]
    if all(t is None for t in terms.values()):
        return dict.fromkeys(terms, 0.0)
    sup = _norm(torch.autograd.grad(supervised, params, retain_graph=True, allow_unused=True))
    if sup == 0:
        return {}
    return {
        k: 0.0 if t is None else _norm(torch.autograd.grad(t, params, retain_graph=True, allow_unused=True)) / sup for k, t in terms.items()
    }


def _norm(grads: Sequence[torch.Tensor | None]) -> float:
    sq = [g.float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


def hard_dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the foreground classes of the Dice of ``argmax(logits)`` against ``labels``, over the whole batch.

    ``logits`` ``(B, C, H, W)``, ``labels`` ``(B, H, W)``; a class absent from both counts
    as 1 (as in model selection, :mod:`segshift.engine.validate`).

    Example:
        >>> y = torch.tensor([[[0, 1], [1, 2]]])
        >>> hard_dice(torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float(), y)
        1.0
    """
    pred = logits.argmax(1)
    scores = []
    for c in range(1, logits.shape[1]):
        p, r = pred == c, labels == c
        denom = int(p.sum()) + int(r.sum())
        scores.append(1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom)
    return float(sum(scores) / len(scores)) if scores else 1.0


def intensity_distance(a: torch.Tensor, b: torch.Tensor, quantiles: int = 256) -> float:
    """``|mean(a) - mean(b)| + |std(a) - std(b)| + W1(a, b)`` over every pixel of two image batches.

    ``W1`` is the 1-D Wasserstein distance of the two intensity distributions, the mean
    absolute difference of their quantile functions at ``quantiles`` evenly spaced levels
    (exact for equal sample sizes that ``quantiles`` divides). In the images' units
    (z-scored intensities after preprocessing); 0 for identical distributions.

    Example:
        >>> x = torch.arange(8.0)
        >>> intensity_distance(x, x), intensity_distance(x, x + 1, quantiles=8)
        (0.0, 2.0)
    """
    a, b = a.detach().float().flatten(), b.detach().float().flatten()
    levels = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
    qa = a.sort().values[(levels * a.numel()).long().clamp(max=a.numel() - 1)]
    qb = b.sort().values[(levels * b.numel()).long().clamp(max=b.numel() - 1)]
    w1 = (qa - qb).abs().mean()
    return float((a.mean() - b.mean()).abs() + (a.std(unbiased=False) - b.std(unbiased=False)).abs() + w1)


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Within: every submodule of ``modules`` in eval mode (batch norm on its running statistics,
    which it leaves alone); on exit each submodule gets back its own mode.
    """
    subs = [s for m in modules for s in m.modules()]
    saved = [s.training for s in subs]
    try:
        for s in subs:
            s.training = False
        yield
    finally:
        for s, mode in zip(subs, saved):
            s.training = mode
