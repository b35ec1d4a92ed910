"""``source-only``: supervised training on labelled source data, no adaptation.

The "S2T" / "w/o adaptation" row of every paper's table (Wang et al. 2019, Table 1; Yan et
al. 2019, Table 1 "clean Unet"; Li et al. 2021, "No adaptation"). The loss is the weighted
sum configured in ``train.loss`` (CE + soft Dice by default).

Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run and trains on for
``train.steps`` steps (the same holds for ``histmatch``, ``noise-aug`` and ``target-oracle``).
"""

from __future__ import annotations

from typing import Any

import torch

from segshift.losses import HybridLoss
from segshift.methods.base import Batch, Method, make_optimizer, make_schedule, register


@register
class SourceOnly(Method):
    name = "source-only"
    paper = "baseline (S2T) of wang2019, yan2019, li2021, liu2020"
    summary = "Train the segmenter on labelled source data only; no adaptation."
    supports_view_consistency = True

    def build(self) -> None:
        super().build()
        self.loss = HybridLoss(dict(self.cfg["train"]["loss"]))
        opt = make_optimizer(self.nets["seg"].parameters(), self.cfg["train"])
        self.optimizers = {"seg": opt}
        self.schedulers = {"seg": make_schedule(opt, self.cfg["train"], self.total_steps())}

    def source_input(self, batch: Batch) -> torch.Tensor:
        """The image the segmenter sees (subclasses perturb it)."""
        return batch.source_image

    def train_step(self, batch: Batch, step: int) -> dict[str, Any]:
        opt = self.optimizers["seg"]
        opt.zero_grad(set_to_none=True)
        (logits,) = self.segment(self.source_input(batch))
        total, parts = self.loss(logits.float(), batch.source_label)
        cons = self.view_consistency(batch, logits)
        if cons is not None:
            total, parts = total + cons, {**parts, "consistency": cons.detach()}
        total.backward()
        opt.step()
        return {"loss": float(total.detach()), **{k: float(v) for k, v in parts.items()}}
