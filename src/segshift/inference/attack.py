"""The adversarial-perturbation probe of Yan et al. 2019 (Fig. 1): Dice against FGSM epsilon.

Yan et al. 2019, section 1.1: "the perturbation was computed as equal to the sign of the
gradient of the loss function with respect to the input" (the fast gradient sign method of
Goodfellow et al., ICLR 2015): ``x_adv = x + eps * sign(grad_x L(S(x), y))``, with ``L``
the cross-entropy of the segmenter ``S`` against the reference label ``y``. As a control
the same budget is spent on a random sign pattern, ``x + eps * r`` with ``r`` uniform in
{-1, +1}: a network that collapses under FGSM but not under random signs of the same size
is vulnerable to *directed* perturbation, the paper's point.

Readings:

* ``eps`` is in the units of the preprocessed image (z-scored intensities, so 0.05 is 5% of
  the image's standard deviation), on the run's own preprocessed grid.
* The probe attacks the segmentation network itself (``nets["seg"]``) on the domain's
  preprocessed slices, one FGSM step per slice, like the paper's "well-trained Unet"; a
  translating method's translator is not part of it.
* It needs the domain's labels (it is an evaluation, like Dice): it never trains.
* Dice is per case in 3D over the preprocessed stack (as model-selection validation), then
  averaged over cases.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segshift.data.cache import SliceCache
from segshift.data.domain import Domain
from segshift.engine.validate import dice_3d
from segshift.errors import SegshiftError
from segshift.inference.predictor import Predictor
from segshift.utils.atomic import atomic_dir, check_disjoint, write_json, write_text

KINDS = ("fgsm", "random")


def perturb(seg: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, kind: str, gen: torch.Generator) -> torch.Tensor:
    """``x`` plus an ``eps``-sized FGSM (``kind="fgsm"``) or random-sign (``"random"``) perturbation."""
    if eps == 0:
        return x
    if kind == "random":
        return x + eps * (torch.randint(0, 2, x.shape, generator=gen, dtype=torch.int64).to(x) * 2 - 1)
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(seg(x).float(), y)
        (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).detach()


def _check_eps(eps: Sequence[float]) -> list[float]:
    out = sorted({float(e) for e in eps})
    if not out or any(not np.isfinite(e) or e < 0 for e in out):
        raise SegshiftError(f"--eps needs finite values >= 0, got {list(eps)}")
    return out


def attack_probe(
    run: str | Path,
    domain: str | Path,
    eps: Sequence[float],
    out: str | Path,
    cases: Sequence[str] | None = None,
    checkpoint: str = "best",
    device: str | None = None,
    batch_size: int = 16,
    n_examples: int = 3,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Dice of ``run``'s segmenter on ``domain`` under FGSM and random-sign perturbations.

    Writes ``OUT/attack.csv`` (one row per eps, kind and case), ``OUT/summary.json`` (mean
    Dice per eps and kind) and ``OUT/examples.png`` (a slice per eps: image, perturbation,
    prediction on clean and perturbed input). The folder appears complete or not at all.

    Returns:
        The summary: ``{"eps": [...], "fgsm": [mean Dice...], "random": [...], ...}``.
    """
    eps_list = _check_eps(eps)
    check_disjoint(out, [run, domain])
    pred = Predictor(run, checkpoint=checkpoint, device=device)
    dom = Domain(domain)
    if set(dom.spec.labels.values()) != set(pred.labels.values()):
        raise SegshiftError(f"{dom.root}: labels {dom.spec.labels} differ from the run's {pred.labels}")
    chosen = list(cases) if cases else dom.labelled_cases
    if not chosen:
        raise SegshiftError(f"{dom.root}: the probe needs labelled cases and there are none")
    seg = pred.method.nets["seg"]
    seg.eval()
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    examples: dict[float, tuple[np.ndarray, ...]] = {}
    with tempfile.TemporaryDirectory(prefix="segshift-attack-") as tmp:
        cache = SliceCache.build(dom, pred.pre, tmp, cases=chosen, with_labels=True, in_memory=True)
        for case in cache.cases:
            idx = cache.case_rows(case)
            img, lab = cache.batch(idx)
            mid = len(idx) // 2
            for e in eps_list:
                for kind in KINDS:
                    if e == 0 and kind == "random":
                        continue  # eps 0 is the clean image, once
                    preds = []
                    for i in range(0, len(idx), batch_size):
                        x = torch.from_numpy(img[i : i + batch_size].copy())[:, None].to(pred.device)
                        y = torch.from_numpy(lab[i : i + batch_size].astype(np.int64)).to(pred.device)
                        xp = perturb(seg, x, y, e, kind, gen)
                        with torch.no_grad():
                            p = seg(xp).argmax(1).cpu().numpy()
                        preds.append(p)
                        if case == cache.cases[0] and kind == "fgsm" and i <= mid < i + len(x):
                            j = mid - i
                            examples[e] = (img[mid], xp[j, 0].cpu().numpy() - img[mid], p[j], lab[mid])
                    scores = dice_3d(np.concatenate(preds), lab, pred.structures)
                    kinds = KINDS if e == 0 else (kind,)
                    for k in kinds:
                        rows.append({"eps": e, "kind": k, "case": case, **scores, "mean": float(np.mean(list(scores.values())))})
    names = list(pred.structures)
    summary: dict[str, Any] = {
        "run": str(Path(run).resolve()),
        "domain": str(dom.root.resolve()),
        "cases": list(chosen),
        "eps": eps_list,
        "units": "preprocessed (z-scored) intensity",
        "method": pred.method.name,
        "oracle": pred.oracle,
    }
    for kind in KINDS:
        summary[kind] = [float(np.mean([r["mean"] for r in rows if r["kind"] == kind and r["eps"] == e])) for e in eps_list]
        summary[f"{kind}_per_structure"] = {
            n: [float(np.mean([r[n] for r in rows if r["kind"] == kind and r["eps"] == e])) for e in eps_list] for n in names
        }
    header = ["eps", "kind", "case", *names, "mean"]
    csv = (
        "\n".join([",".join(header)] + [",".join(f"{r[h]:.6g}" if isinstance(r[h], float) else str(r[h]) for h in header) for r in rows])
        + "\n"
    )
    with atomic_dir(out, overwrite=overwrite) as folder:
        write_text(folder / "attack.csv", csv)
        write_json(folder / "summary.json", summary)
        if n_examples and examples:
            _examples_figure(examples, folder / "examples.png", n_examples)
    return summary


def _examples_figure(examples: dict[float, tuple[np.ndarray, ...]], path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = (
        sorted(examples)[: max(1, n)]
        if len(examples) <= n
        else [sorted(examples)[i] for i in np.linspace(0, len(examples) - 1, n).round().astype(int)]
    )
    fig, axes = plt.subplots(len(chosen), 4, figsize=(8, 2.1 * len(chosen)), squeeze=False)
    for r, e in enumerate(chosen):
        img, delta, p, lab = examples[e]
        for c, (a, title, kw) in enumerate(
            [
                (img + delta, f"eps {e:g}: perturbed", {"cmap": "gray"}),
                (delta, "perturbation", {"cmap": "coolwarm", "vmin": -max(e, 1e-6), "vmax": max(e, 1e-6)}),
                (p, "prediction", {"cmap": "viridis", "vmin": 0, "vmax": max(3, int(lab.max()))}),
                (lab, "reference", {"cmap": "viridis", "vmin": 0, "vmax": max(3, int(lab.max()))}),
            ]
        ):
            axes[r][c].imshow(a, interpolation="nearest", **kw)
            axes[r][c].set_title(title, fontsize=8)
            axes[r][c].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table: eps, FGSM Dice, random-sign Dice."""
    lines = ["eps        FGSM Dice  random-sign Dice"]
    for e, f, r in zip(summary["eps"], summary["fgsm"], summary["random"]):
        lines.append(f"{e:<10g} {f:<10.3f} {r:.3f}")
    return "\n".join(lines)
