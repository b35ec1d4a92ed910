"""``source-only``: supervised training on labelled source data, no adaptation.

The "S2T" / "w/o adaptation" row of every paper's table (Wang et al. 2019, Table 1; Yan et
al. 2019, Table 1 "clean Unet"; Li et al. 2021, "No adaptation"). The loss is the weighted
sum configured in ``train.loss`` (CE + soft Dice by default).

Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run and trains on for
``train.steps`` steps (the same holds for ``histmatch``, ``noise-aug`` and ``target-oracle``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from segshift.methods.base import Batch, Method, make_loss, make_optimizer, make_schedule, register
from segshift.methods.diagnostics import gradient_ratios


@register
class SourceOnly(Method):
    name = "source-only"
    paper = "baseline (S2T) of wang2019, yan2019, li2021, liu2020"
    summary = "Train the segmenter on labelled source data only; no adaptation."
    supports_view_consistency = True

    def build_optimizers(self) -> None:
        super().build_optimizers()
        self.loss = make_loss(self.cfg["train"])
        opt = make_optimizer(self.nets["seg"].parameters(), self.cfg["train"])
        self.optimizers = {"seg": opt}
        self.schedulers = {"seg": make_schedule(opt, self.cfg["train"], self.total_steps())}

    def source_input(self, batch: Batch) -> torch.Tensor:
        """The image the segmenter sees (subclasses perturb it)."""
        return batch.source_image

    def segmenter_update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        batch: Batch | None = None,
        terms: Mapping[str, tuple[torch.Tensor | None, Any]] | None = None,
    ) -> dict[str, float]:
        """One update of the segmenter (every method of this family makes it the same way).

        The loss is ``train.loss`` on ``(logits, labels)``, plus GIN-IPA's view consistency
        when ``batch`` carries views, plus each extra ``terms[name] = (term or None, value to
        log)``: a ``None`` term (e.g. a weight of 0) is logged, not added. Then backward into
        the segmenter's parameters only (:meth:`~segshift.methods.base.Method.backward`; the
        graph is kept where :meth:`segmenter_keeps_graph` says a later update shares a pass
        with a term) and one step of the ``seg`` optimiser. Logs ``loss`` (the total), ``loss_seg``
        (supervised) and its parts; on a diagnostics step (not under DDP) also
        ``grad_ratio_<name>`` for each term that is a loss (its value to log a tensor; ``<name>``
        without ``adv_``): the norm of its gradient reaching the segmenter over the supervised
        loss's (:func:`~segshift.methods.diagnostics.gradient_ratios`; 0 while its weight is 0).
        """
        opt = self.optimizers["seg"]
        opt.zero_grad(set_to_none=True)
        total, parts = self.loss(logits.float(), labels)
        supervised = total
        values: dict[str, Any] = {"loss_seg": total.detach(), **parts}
        cons = self.view_consistency(batch, logits) if batch is not None else None
        if cons is not None:
            total, values["consistency"] = total + cons, cons.detach()
        for name, (term, logged) in (terms or {}).items():
            if term is not None:
                total = total + term.float()
            values[name] = logged.detach() if isinstance(logged, torch.Tensor) else logged
        losses = {name.removeprefix("adv_"): term for name, (term, logged) in (terms or {}).items() if isinstance(logged, torch.Tensor)}
        if self.diagnostics and losses and "seg" not in self._wrapped:
            params = [p for g in opt.param_groups for p in g["params"]]
            values.update({f"grad_ratio_{k}": v for k, v in gradient_ratios(supervised, losses, params).items()})
        self.backward(total, "seg", retain_graph=self.segmenter_keeps_graph())
        opt.step()
        values["loss"] = total.detach()
        return {k: float(v) for k, v in values.items()}

    def segmenter_keeps_graph(self) -> bool:
        """Whether a later update of this step back-propagates through a forward pass of the
        segmenter update's terms (a discriminator sharing its target scores; none here).
        """
        return False

    def train_step(self, batch: Batch, step: int) -> dict[str, Any]:
        (logits,) = self.segment(self.source_input(batch))
        return self.segmenter_update(logits, batch.source_label, batch)
