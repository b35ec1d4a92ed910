"""``adanet``: the multi-sequence adversarial domain adaptation network of Wang et al. 2019.

Wang, Huang, Chen, Ma, Huang and Ding, "Multi-sequence Cardiac MR Segmentation with
Adversarial Domain Adaptation Network", STACOM (MS-CMRSeg) 2019. Labelled source domains
(the paper: bSSFP and T2, given as several ``--source``; the engine mixes them in every
batch) and an unlabelled target (LGE).

The parts, each one row of the paper's Table 1:

* **S2T**: an attention U-Net with dilated convolutions and pyramid pooling
  (``model.name: attention_unet``) trained on the sources with ``0.5 CE + 0.5 Jaccard``
  (``train.loss``, eqs. 1-2), SGD with Nesterov momentum 0.9, weight decay 1e-4, lr 0.01
  decayed to a tenth of it (see "Schedule" below).
* **HM**: histogram matching of every image (source and target) to the source's intensity
  histogram. HM is *preprocessing* (fitted once, saved with the model and applied again at
  prediction), so its switch is the preprocessing key ``data.preprocess.histmatch`` (true
  in this method's YAML), not a ``method`` key: one switch, one place, recorded in the
  run's ``preprocess.json``.
* **MDA** (``method.mda``): a mask-level PatchGAN ``D_m`` on softmax maps (eqs. 5-6),
  weights ``lambda_g_mask`` = lambda_Gm 0.005 and ``lambda_d_mask`` = lambda_Dm 1.0.
* **FDA** (``method.fda``): a feature-level PatchGAN ``D_f`` (eqs. 3-4), weights
  ``lambda_g_feat`` = lambda_Gf 0.05 and ``lambda_d_feat`` = lambda_Df 1.0. Without GFRM,
  ``D_f`` sees one feature, the "empirically selected" one of earlier work: the deepest
  (pyramid-pooled bottleneck) feature, bilinearly upsampled to full resolution.
* **GFRM** (``method.gfrm``, needs ``fda``): ``D_f`` sees every decoder level
  (``forward_features``: bottleneck and each decoder stage), fused and recalibrated by
  :class:`~segshift.nets.GroupFeatureRecalibration` (``gfrm_channels`` per level,
  ``gfrm_groups`` groups, default the number of classes).
* ``fda_downsample`` (segshift's, default 1 = the paper's full resolution): ``D_f`` sees its
  input at 1/k of full resolution, so GFRM fuses the levels there (levels finer than that
  are bilinearly downsampled before GFRM's 1x1 projection, which commutes with it). GFRM and
  ``D_f`` at full resolution are most of an ``adanet`` step on a CPU; 2 cuts
  their work about 4x. Its effect on accuracy has not been measured.

One step (:class:`~segshift.methods.alignment.AdversarialMethod`): **Step 1: update the
segmenter with D_m and D_f (and GFRM) frozen** on
``L_seg(source) + w (lambda_Gm BCE(D_m(p_t), 1) + lambda_Gf BCE(D_f(R(f_t)), 1))``;
**Step 2: update D_m and D_f (and GFRM) on detached inputs** (source 1, target 0). ``w`` is
the alignment schedule (discriminator warm-up, then a sigmoid ramp; segshift's, not the
paper's: ``d_warmup_steps=0 ramp_steps=0`` gives the paper's full weights from step 1). The
segmenter's ``forward_features`` sees source and target in one pass under
``train.norm_stats=joint``.

Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run (an ``adanet``
S2T or +HM row, or any run with the same attention U-Net); ``D_m``, ``D_f`` and GFRM start fresh.

Reading of the paper where it is not explicit:

* The GFRM (``R``, parameters ``Theta_r``) belongs to the *discriminator side*: it is
  updated with ``D_f`` in step 2 and frozen in step 1. Trained with the segmenter's
  adversarial loss instead, its attention could simply switch all features off (identical
  zero features fool any ``D_f``), which would remove feature alignment altogether.
* Labels: source 1, target 0; eq. 3 and 5's ``(1 - log D)`` is read as the usual
  ``log(1 - D)``, and eq. 6's ``D_f`` as ``D_m`` (typos); BCE with logits, see
  :mod:`segshift.losses.adversarial`.
* Schedule: the paper drops the lr from 0.01 to 0.001 (a tenth) after 80 of 150 epochs;
  here the segmenter's lr follows ``train.schedule`` (poly by default) with a floor at
  ``method.seg_lr_floor`` (0.1) times the initial ``train.lr``, so it decays to a tenth of
  its initial value and stays there, whatever the optimiser and its lr (SGD 0.01 -> 0.001,
  Adam 0.001 -> 0.0001). ``seg_lr_floor`` 0 is the plain ``train.schedule``.
* Discriminators: Adam at a fixed lr 2e-4, weight decay 5e-5 (paper); betas (0.9, 0.99)
  (not given; AdaptSegNet's).

Table 1 rows (:data:`ABLATIONS`; every row trains this same segmenter, optimiser, schedule
and loss, so the rows differ only in what the row names)::

    segshift train -m adanet -s SRC [-s SRC2] -t TGT -o runs/s2t  --set data.preprocess.histmatch=false --set method.mda=false --set method.fda=false
    segshift train -m adanet ... -o runs/hm   --set method.mda=false --set method.fda=false
    segshift train -m adanet ... -o runs/mda  --set method.fda=false
    segshift train -m adanet ... -o runs/fda  --set method.gfrm=false
    segshift train -m adanet ... -o runs/full                       # S2T+HM+MDA+FDA+GFRM

(``source-only`` and ``histmatch`` are the engine's own S2T and +HM baselines, with their
own network and optimiser defaults.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segshift.errors import SegshiftError
from segshift.methods.alignment import SCHEDULE_HPARAMS, AdversarialAlignment, AdversarialMethod, Tensors, discriminator_hparams, softmax
from segshift.methods.base import Batch, register
from segshift.methods.hparams import flag, integer, number
from segshift.nets import GroupFeatureRecalibration
from segshift.nets.blocks import resize_to

ABLATIONS: dict[str, list[str]] = {
    "S2T": ["data.preprocess.histmatch=false", "method.mda=false", "method.fda=false"],
    "S2T+HM": ["method.mda=false", "method.fda=false"],
    "S2T+HM+MDA": ["method.fda=false"],
    "S2T+HM+MDA+FDA": ["method.gfrm=false"],
    "S2T+HM+MDA+FDA+GFRM": [],
}
"""The ``--set`` overrides of ``adanet`` that give each row of Wang et al. 2019, Table 1."""


class _ForwardFeatures(nn.Module):
    """``forward`` = the segmenter's ``forward_features``, so DDP can wrap that call."""

    def __init__(self, seg: nn.Module) -> None:
        super().__init__()
        self.seg = seg

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.seg.forward_features(x)


@register
class AdaNet(AdversarialMethod):
    name = "adanet"
    paper = "wang2019 (full method; Table 1 rows via switches)"
    summary = "Attention U-Net + histogram matching + mask-level (MDA) and GFRM feature-level (FDA) adversarial alignment."
    hparams = {
        "mda": flag(True, "mask-level discriminator D_m on softmax maps"),
        "fda": flag(True, "feature-level discriminator D_f"),
        "gfrm": flag(True, "D_f sees GFRM(all decoder levels); false: the deepest feature, upsampled"),
        "lambda_g_mask": number(0.005, "lambda_Gm: the segmenter's mask-level adversarial weight"),
        "lambda_d_mask": number(1.0, "lambda_Dm: D_m's loss weight"),
        "lambda_g_feat": number(0.05, "lambda_Gf: the segmenter's feature-level adversarial weight"),
        "lambda_d_feat": number(1.0, "lambda_Df: D_f's loss weight"),
        **discriminator_hparams(lr=0.0002, weight_decay=0.00005),
        "gfrm_channels": integer(16, "channels per level after GFRM's 1x1 convolution (a multiple of the groups)"),
        "gfrm_groups": integer(None, "GFRM groups; null: the number of classes", nullable=True),
        "gfrm_reduction": integer(2, "GFRM's channel-attention bottleneck ratio"),
        "fda_downsample": integer(
            1,
            "D_f's input at 1/k of full resolution: GFRM fuses there (without GFRM the deepest "
            "feature is upsampled to it); 1: full resolution (the paper's reading); 2 or 4 cut "
            "GFRM's and D_f's cost (segshift's, accuracy not measured)",
        ),
        "seg_lr_floor": number(0.1, "floor of the segmenter's lr schedule, a fraction of train.lr (paper: 0.01 -> 0.001)", high=1.0),
        **SCHEDULE_HPARAMS,
    }

    def build_optimizers(self) -> None:
        floor = float(self.hp["seg_lr_floor"])
        super().build_optimizers()
        # segmenter schedule: train.schedule, floored at seg_lr_floor x the initial lr (paper: 0.01 -> 0.001)
        base = self.schedulers["seg"].lr_lambdas[0]
        warm = int(self.cfg["train"]["warmup_steps"])

        def factor(step: int) -> float:
            f = base(step)
            return f if step < warm else max(f, floor)

        self.schedulers["seg"] = torch.optim.lr_scheduler.LambdaLR(self.optimizers["seg"], factor)
        self._seg_features = _ForwardFeatures(self.nets["seg"])

    def build_alignments(self) -> dict[str, AdversarialAlignment]:
        hp = self.hp
        seg = self.nets["seg"]
        if not hasattr(seg, "forward_features"):
            raise SegshiftError(f"adanet needs a segmenter with forward_features; {type(seg).__name__} has none")
        out: dict[str, AdversarialAlignment] = {}
        if hp["mda"]:  # D_m on softmax maps
            out["d_mask"] = self.align(
                "d_mask",
                {"d_mask": self.discriminator(self.num_classes, "D_m")},
                lambda_g=float(hp["lambda_g_mask"]),
                lambda_d=float(hp["lambda_d_mask"]),
            )
        if hp["fda"]:  # D_f on features: GFRM(all levels), or the deepest level alone
            chans = self.feature_channels()
            k, hint = int(hp["fda_downsample"]), ", a smaller method.fda_downsample"  # D_f sees the finest level / k
            if hp["gfrm"]:  # (GFRM only feeds D_f: without FDA it is not built)
                groups = int(hp["gfrm_groups"] or self.num_classes)
                gfrm = GroupFeatureRecalibration(
                    chans,
                    channels=int(hp["gfrm_channels"]),
                    groups=groups,
                    reduction=int(hp["gfrm_reduction"]),
                    spatial_dims=getattr(seg, "spatial_dims", 2),
                )
                path = {"gfrm": gfrm, "d_feat": self.discriminator(gfrm.out_channels, "D_f", k, hint)}
            else:
                path = {"d_feat": self.discriminator(chans[0], "D_f", k, hint)}
            out["d_feat"] = self.align("d_feat", path, lambda_g=float(hp["lambda_g_feat"]), lambda_d=float(hp["lambda_d_feat"]))
        return out

    def feature_channels(self) -> list[int]:
        """Channels of the segmenter's ``forward_features`` levels, deep to shallow."""
        seg = self.nets["seg"]
        if hasattr(seg, "feature_channels"):
            return [int(c) for c in seg.feature_channels]
        size = [int(s) for s in self.cfg["data"]["preprocess"]["crop_size"]]
        was = seg.training
        seg.eval()
        with torch.no_grad():
            _, feats = seg.forward_features(torch.zeros(1, self.in_channels, *size))
        seg.train(was)
        return [f.shape[1] for f in feats]

    # -- DDP: the segmenter is called through forward_features -------------------------
    def wrap(self, fn: Any) -> None:
        for name, module in self.nets.items():
            if name != "seg" and any(p.requires_grad for p in module.parameters()):
                self._wrapped[name] = fn(module)
        self._wrapped["seg_features"] = fn(self._seg_features)

    def net(self, name: str) -> nn.Module:
        """``seg_features``: the segmenter's ``forward_features`` as a module (DDP-wrapped under torchrun)."""
        if name == "seg_features":
            return self._wrapped.get(name, self._seg_features)
        return super().net(name)

    def target_norm(self, net: str = "seg") -> Any:
        """``seg_features`` is the segmenter: its target passes use the segmenter's target statistics."""
        return super().target_norm("seg" if net == "seg_features" else net)

    # -- forward passes ------------------------------------------------------------------
    def feature_input(self, feats: list[torch.Tensor]) -> Tensors:
        """What D_f's path receives: all levels (for GFRM), or the deepest one upsampled, at
        1/``fda_downsample`` of the finest level's size (levels finer than that downsampled).
        """
        k = int(self.hp["fda_downsample"])
        size = [max(1, s // k) for s in feats[-1].shape[2:]]
        if "gfrm" in self.nets:  # GFRM fuses at its largest input size
            return [f if all(a <= b for a, b in zip(f.shape[2:], size)) else resize_to(f, size) for f in feats]
        return resize_to(feats[0], size)

    def forward_passes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, tuple[Tensors, Tensors]]]:
        if not self.needs_target():  # S2T / +HM rows: no alignment, the target is not even forwarded
            ((src_logits, _),) = self.segment(batch.source_image, net="seg_features")
            return src_logits, None, {}
        (src_logits, src_feats), (tgt_logits, tgt_feats) = self.segment(batch.source_image, batch.target_image, net="seg_features")
        inputs: dict[str, tuple[Tensors, Tensors]] = {}
        if "d_mask" in self.alignments:
            inputs["d_mask"] = (softmax(src_logits), softmax(tgt_logits))
        if "d_feat" in self.alignments:
            inputs["d_feat"] = (self.feature_input(src_feats), self.feature_input(tgt_feats))
        return src_logits, tgt_logits, inputs
