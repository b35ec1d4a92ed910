"""``self-train``: mean-teacher self-training on the unlabelled target, on top of ``adabn``.

The teacher is the exponential moving average of the student segmenter (mean teacher:
Tarvainen and Valpola, "Mean teachers are better role models", NeurIPS 2017), used for
domain adaptation as in French, Mackiewicz and Fisher, "Self-ensembling for visual domain
adaptation", ICLR 2018, and in DAFormer's self-training (Hoyer, Dai and Van Gool, "DAFormer:
Improving network architectures and training strategies for domain-adaptive semantic
segmentation", CVPR 2022). One step:

1. **The ``adabn`` pass**: the student segments the source batch and the target batch under
   ``train.norm_stats`` (:meth:`~segshift.methods.base.Method.segment`); under ``domain`` (the
   default) the target pass moves the target's own batch-norm statistics, which prediction
   uses for target inputs (AdaBN, Li et al. 2018).
2. **Pseudo-labels**: the teacher segments the target batch as the engine gave it (no GIN);
   the pseudo-label is the argmax of its softmax, weighted by its confidence: ``weighting:
   quality`` (DAFormer) weighs the whole batch by the fraction of pixels whose top
   probability is at least ``tau`` (0.968, DAFormer's); ``threshold`` keeps only those pixels
   (a hard mask, as FixMatch).
3. **The student's target view**: with ``augment.gin`` on (this method's YAML), one GIN + IPA
   re-rendering of the target batch (:func:`~segshift.transforms.gin.gin_views`, Ouyang et
   al. 2022), drawn from a generator seeded by the run's seed, the step and the process
   rank (so a resumed run draws the same views); with GIN off, the target batch of step 1.
4. **The student's update**: ``source-only``'s supervised loss (plus GIN-IPA's view
   consistency on the source when ``augment.gin`` is on) plus ``lambda_st`` x ramp x the
   confidence-weighted cross-entropy of the student's target view against the pseudo-labels
   (:meth:`~segshift.methods.source_only.SourceOnly.segmenter_update`).
5. **The teacher's update**: ``teacher = ema teacher + (1 - ema) student`` for every
   parameter; its buffers are copied from the student.

Batch norm: the teacher's pass (2.) and the student's pass on a GIN view (3.) normalise the
target with the statistics of the batch they see (under ``joint``, of that batch joined with
the source batch, as the policy does) and move no running statistics, so the target
statistics used at prediction are estimated on target images as prediction sees them, by
pass 1 alone. The teacher is never in train mode otherwise (no dropout).

``lambda_st: 0`` is ``adabn``'s training exactly (same weights, same statistics: the extra
passes change nothing), the control for this method's self-training term.

Logged per step: ``loss_st`` (the confidence-weighted pseudo-label cross-entropy, before
``lambda_st``), ``st_confident`` (the fraction of target pixels whose teacher probability is
at least ``tau``), ``st_agreement`` (the fraction of target pixels where the student's
prediction of its view equals the pseudo-label).

Networks: ``seg`` (the student, the model that predicts), its target statistics
``seg_target_norm``, and the training-only ``teacher`` (saved in ``last`` for a bit-exact
resume, not in ``best``). Warm start (``--init RUN``): ``seg`` comes from the init run (a
``gin-ipa`` or ``source-only`` run), the target statistics start as a copy of its source
statistics, and the teacher starts as a copy of the warm-started ``seg`` at the first step.

Cost: one teacher forward pass on the target batch and, with GIN, one student pass on the
target view, on top of ``adabn``'s step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segshift.methods.adabn import AdaBN
from segshift.methods.alignment import AlignmentSchedule
from segshift.methods.base import Batch, register
from segshift.methods.hparams import choice, integer, number
from segshift.transforms.gin import GinConfig, gin_views


@contextlib.contextmanager
def batch_statistics(net: nn.Module) -> Iterator[None]:
    """Within: every batch-norm layer of ``net`` normalises with its batch's own statistics
    and updates no running statistics (whatever the mode of ``net``); restored on exit.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved):
            m.training, m.track_running_stats = training, track


class MeanTeacher(nn.Module):
    """The exponential moving average of a network (Tarvainen and Valpola 2017).

    ``started`` (a buffer, saved with it) says whether it has been set from the student yet:
    :meth:`start` copies the student once, so a teacher built before a warm start loaded the
    student still starts from the loaded weights.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(student)
        self.net.requires_grad_(False)
        self.register_buffer("started", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(x)

    @torch.no_grad()
    def start(self, student: nn.Module) -> None:
        """Copy ``student`` (once: a started teacher is left as it is)."""
        if not bool(self.started):
            self.net.load_state_dict(student.state_dict())
            self.started.fill_(1)

    @torch.no_grad()
    def update(self, student: nn.Module, ema: float) -> None:
        """``teacher = ema teacher + (1 - ema) student`` for every parameter; buffers copied."""
        for t, s in zip(self.net.parameters(), student.parameters()):
            t.mul_(ema).add_(s.detach(), alpha=1.0 - ema)
        for t, s in zip(self.net.buffers(), student.buffers()):
            t.copy_(s)


@register
class SelfTrain(AdaBN):
    name = "self-train"
    paper = "mean teacher (Tarvainen & Valpola NeurIPS 2017) for UDA as French et al. ICLR 2018 and DAFormer (Hoyer et al. CVPR 2022)"
    summary = (
        "adabn plus self-training: confidence-weighted pseudo-labels of an EMA teacher on target images, "
        "learnt by the student on GIN-IPA re-renderings of them."
    )
    hparams = {
        "lambda_st": number(1.0, "weight of the pseudo-label cross-entropy on target images (0: adabn's training exactly)"),
        "ramp_steps": integer(
            0,
            "the pseudo-label weight ramps up as exp(-5 (1-t)^2) (Laine & Aila 2017) over this many first steps "
            "(0: full weight from step 1, as DAFormer; set it for a run from scratch)",
            low=0,
        ),
        "ema": number(0.99, "teacher = ema teacher + (1 - ema) student after every step (1: the teacher stays the init)", high=1.0),
        "tau": number(0.968, "confidence threshold on the teacher's top probability (DAFormer's)", high=1.0),
        "weighting": choice(
            "quality",
            ("quality", "threshold"),
            "quality: every pseudo-label weighted by the fraction of target pixels at or above tau (DAFormer); "
            "threshold: only those pixels count",
        ),
    }

    def build_optimizers(self) -> None:
        super().build_optimizers()  # adabn's checks, the supervised loss, the segmenter's optimiser
        self.nets["teacher"] = MeanTeacher(self.nets["seg"])
        self.ramp = AlignmentSchedule(d_warmup_steps=0, ramp_steps=int(self.hp["ramp_steps"]))
        aug = self.cfg["augment"]
        gin = GinConfig.from_dict(aug.get("gin"))
        self.target_gin = dataclasses.replace(gin, views=1, consistency=0.0) if aug.get("enabled", True) and gin.enabled else None
        """GIN + IPA settings of the student's target view (one view), or None: the student sees the target batch."""

    def inference_nets(self):  # noqa: ANN201 - iterator of names
        yield "seg"  # the teacher is training-only

    def train(self, mode: bool = True) -> None:
        super().train(mode)
        if "teacher" in self.nets:
            self.nets["teacher"].eval()  # no dropout; its batch norm is set per pass (batch_statistics)

    # -- the parts of a step ------------------------------------------------------------
    def target_pass(self, net: str, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``net``'s logits (float32) of a target batch normalised with the batch's statistics
        (under ``joint``, with the source batch joined), moving no running statistics.
        """
        with batch_statistics(self.nets[net]):
            if self.norm_stats == "joint":
                return self.segment(source, target, net=net)[1].float()
            return self.call(net, target).float()

    def target_view(self, target: torch.Tensor, step: int) -> torch.Tensor:
        """One GIN + IPA re-rendering of ``target``, from a generator seeded by (seed, step, rank)."""
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        seed = (int(self.cfg["seed"]) * 1_000_003 + step) * 1024 + rank
        gen = torch.Generator().manual_seed(seed % 2**63)
        return gin_views(target, self.target_gin, gen)[0]

    def pseudo_label_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        """The confidence-weighted cross-entropy of ``student`` logits against the argmax of
        ``teacher`` logits, with the confident fraction and the agreement (see the module docstring).
        """
        conf, pseudo = torch.softmax(teacher, dim=1).max(dim=1)
        confident = (conf >= float(self.hp["tau"])).float()
        ce = F.cross_entropy(student, pseudo, reduction="none")
        frac = confident.mean()
        loss = frac * ce.mean() if self.hp["weighting"] == "quality" else (confident * ce).mean()
        agree = (student.detach().argmax(dim=1) == pseudo).float().mean()
        return {"loss_st": loss, "st_confident": frac, "st_agreement": agree}

    def train_step(self, batch: Batch, step: int) -> dict[str, Any]:
        seg = self.nets["seg"]
        src_logits, tgt_logits = self.segment(batch.source_image, batch.target_image)  # adabn's pass
        self.nets["teacher"].start(seg)
        with torch.no_grad():
            teacher = self.target_pass("teacher", batch.target_image, batch.source_image)
        if self.target_gin is not None:
            student = self.target_pass("seg", self.target_view(batch.target_image, step), batch.source_image)
        else:
            student = tgt_logits.float()
        st = self.pseudo_label_loss(student, teacher)
        weight = float(self.hp["lambda_st"]) * self.ramp(step)
        terms = {
            "loss_st": (weight * st["loss_st"] if weight > 0 else None, st["loss_st"]),
            "st_confident": (None, float(st["st_confident"])),  # logged numbers, not loss terms (no grad_ratio_)
            "st_agreement": (None, float(st["st_agreement"])),
        }
        values = self.segmenter_update(src_logits, batch.source_label, batch, terms)
        self.nets["teacher"].update(seg, float(self.hp["ema"]))
        return values
