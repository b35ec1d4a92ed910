"""``sdnet``, ``sdnet-ss``, ``sdnet-fa``: SDNet with factor-based augmentation (Liu et al. 2020).

Liu, Thermos, Chartsias, O'Neil and Tsaftaris, "Disentangled Representations for
Domain-generalized Cardiac Segmentation", STACOM 2020 (M&Ms challenge); the model is SDNet
(Chartsias et al., MedIA 2019). Networks: :mod:`segshift.nets.sdnet`.

The objective (section 2.3, eq. 1)::

    L = l1 * L_rec + l2 * L_zrec + l3 * L_dice + l4 * L_focal  (+ kl_weight * KL)

* ``L_rec``: L1 between the image and ``D(E_a(x), z)``, ``z`` the reparameterised sample of
  ``E_m``'s posterior.
* ``L_zrec``: latent regression: L1 between ``z' ~ N(0, I)`` and ``E_m``'s mean for the
  image decoded from ``(E_a(x), z')``.
* ``L_dice`` (soft Dice over the foreground classes) and ``L_focal`` (gamma 2) on the
  segmentor's output for labelled images.
* ``KL``: the VAE term of the original SDNet. Eq. 1 leaves it out, but the text keeps "the
  original SDNet objective functions" and adds focal; without it the prior samples of
  ``L_zrec`` would not resemble encoded factors. ``method.kl_weight`` (SDNet's 0.01; 0 drops it).

Labelled images use ``l1 = l2 = l3 = l4 = 1``; unlabelled images ``l1 = l2 = 1``,
``l3 = l4 = 0`` (section 2.3). Modes, as three registered names (the engine needs to know
before building whether a target pool is read):

* ``sdnet``: fully supervised (FS SDNet): labelled source images only; no target.
* ``sdnet-ss``: semi-supervised (SS SDNet): unlabelled target images also train the
  reconstruction terms (their labels are never read).
* ``sdnet-fa``: SS SDNet + factor-based augmentation (section 2.1, Fig. 1(b)), one run in
  two stages: stage 1 (``method.pretrain_steps``) is ``sdnet-ss``; at the switch the model
  is copied and frozen (``nets["fa"]``, eval mode). Stage 2 (``train.steps``) continues
  training on batches in which a share ``method.fa_fraction`` of the labelled images is
  replaced by FA images: the pretrained decoder applied to the pretrained anatomy factor of
  a labelled image and the modality factor (posterior mean) of an image from *another*
  domain in the batch (another source domain or the target), keeping the anatomy image's
  label. Model selection (source validation Dice) runs in stage 2 only.

Batch norm (``train.norm_stats``): ``sdnet-ss`` and ``sdnet-fa`` run the labelled rows (FA
images included) and the unlabelled target rows through the SDNet in one pass under
``joint``, in one pass per domain otherwise (the rule of
:meth:`~segshift.methods.base.Method.segment`); under ``domain`` the target pass uses, and
trains, the SDNet's target-domain batch-norm statistics (``sdnet_target_norm``), which
prediction uses for target-domain inputs. Each term stays the mean over all rows of the step:
a pass's mean is weighted by its share of the rows. ``sdnet-fa``'s frozen copy takes the
target statistics with the weights (``fa_target_norm``) and encodes a target image's
modality factor with them.

Diagnostics (:mod:`segshift.methods.diagnostics`, on the logged steps), gradient norms at the
segmentation path (anatomy encoder and segmentor): ``grad_ratio_target``, the target rows'
share of the objective (reconstruction, latent regression, KL) over the segmentation loss;
``sdnet-fa`` also ``grad_ratio_fa``, the segmentation loss of the FA images over that of the
real labelled images (0 in stage 1).

Warm start (``--init RUN``): all three take the SDNet ``sdnet`` from the init run
(``init_nets = ("sdnet",)``). ``sdnet-fa`` started from a finished ``sdnet`` or ``sdnet-ss``
run skips its pretraining: that run *is* stage 1, so this run is stage 2 only
(``train.steps`` steps, ``method.pretrain_steps`` unused), and the frozen FA copy
``nets["fa"]`` is taken from the loaded weights at its first step (a resumed run loads
``fa`` from its own checkpoint instead).

Resolution augmentation is the engine's ``augment.resolution`` and works with any method.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.losses import FocalLoss, SoftDiceLoss
from segshift.methods.base import (
    TARGET_NORM,
    Batch,
    DomainNormStats,
    FigureSamples,
    Method,
    MethodFigure,
    make_optimizer,
    make_schedule,
    register,
)
from segshift.methods.diagnostics import gradient_ratios
from segshift.methods.hparams import choice, flag, integer, ints, number
from segshift.nets.sdnet import BINARISE, SDNet, SDNetOutput


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))``, summed over the factor, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()


UNSUPERVISED = ("rec", "zrec", "kl")
"""The terms of the objective that every image has, labelled or not."""


class Labelled(NamedTuple):
    """A step's labelled images ``(B, 1, H, W)``, their labels ``(B, H, W)``, the indices of
    the rows that are FA images (``None``: a step without FA) and what to log of them.
    """

    image: torch.Tensor
    label: torch.Tensor
    fa_rows: torch.Tensor | None = None
    log: dict[str, float] | None = None


def _rows_from(out: SDNetOutput, start: int) -> SDNetOutput:
    """Rows ``start:`` of every tensor of an SDNet pass."""
    return SDNetOutput(*(None if v is None else v[start:] for v in (getattr(out, f.name) for f in dataclasses.fields(out))))


@register
class SDNetMethod(Method):
    name = "sdnet"
    paper = "liu2020 (SDNet of Chartsias et al. 2019)"
    summary = "SDNet, fully supervised: binary anatomy factor + modality factor, AdaIN decoder, segmentor on the anatomy."
    uses_target = False
    semi_supervised = False
    init_nets = ("sdnet",)
    segmenter_net = "sdnet"
    hparams = {
        "lambda_rec": number(1.0, "eq. 1: L1 reconstruction"),
        "lambda_zrec": number(1.0, "eq. 1: L1 latent regression of the re-encoded modality factor"),
        "lambda_dice": number(1.0, "eq. 1: Dice (labelled images only)"),
        "lambda_focal": number(1.0, "eq. 1: focal (labelled images only)"),
        "kl_weight": number(0.01, "the original SDNet's KL term (eq. 1 omits it; 0 drops it)"),
        "focal_gamma": number(2.0, "focal loss exponent (Lin et al. 2017 default)"),
        "anatomy_channels": integer(8, "binary anatomy factor channels"),
        "z_dim": integer(8, "modality factor size"),
        "anatomy_features": ints(
            [16, 32, 64, 128, 256], "anatomy U-Net widths (4 down/up stages); the paper gives none, SDNet used 64-1024", min_length=2
        ),
        "modality_channels": ints([16, 32], "the two 4x4 stride-2 convolutions of the modality encoder", length=2),
        "segmentor_width": integer(64, "the segmentor's two 3x3 convolutions"),
        "decoder_width": integer(32, "the AdaIN decoder's three 3x3 convolutions"),
        "decoder_output": choice(
            "identity", ("identity", "tanh"), "images are z-scored, not in [0, 1]: no tanh (tanh: the paper's, for [-1, 1] images)"
        ),
        "modality_sees_anatomy": flag(True, "modality encoder input: image + anatomy factor (original SDNet); false: image only"),
        "binarise": choice(
            "onehot",
            BINARISE,
            "straight-through binarisation: onehot (argmax of the softmax) | round "
            "(the paper's literal rounding; stalls from the near-uniform softmax at initialisation) | none (ablation)",
        ),
    }

    # -- construction -----------------------------------------------------------------
    def make_sdnet(self) -> SDNet:
        hp = self.hp
        return SDNet(
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            anatomy_channels=int(hp["anatomy_channels"]),
            z_dim=int(hp["z_dim"]),
            anatomy_features=list(hp["anatomy_features"]),
            modality_channels=list(hp["modality_channels"]),
            segmentor_width=int(hp["segmentor_width"]),
            decoder_width=int(hp["decoder_width"]),
            decoder_output=hp["decoder_output"],
            modality_sees_anatomy=hp["modality_sees_anatomy"],
            binarise=hp["binarise"],
        )

    def build_nets(self) -> None:
        """SDNet replaces the segmenter (``model:`` is ignored)."""
        self.nets["sdnet"] = self.make_sdnet()

    def build_optimizers(self) -> None:
        self.weights = {k: float(self.hp[f"lambda_{k}"]) for k in ("rec", "zrec", "dice", "focal")}
        self.kl_weight = float(self.hp["kl_weight"])
        self.dice = SoftDiceLoss()
        self.focal = FocalLoss(gamma=float(self.hp["focal_gamma"]))
        opt = make_optimizer(self.nets["sdnet"].parameters(), self.cfg["train"])
        self.optimizers = {"sdnet": opt}
        self.schedulers = {"sdnet": make_schedule(opt, self.cfg["train"], self.total_steps())}

    def inference_nets(self):  # noqa: ANN201 - iterator of names
        yield "sdnet"

    # -- losses (section 2.3, eq. 1) ----------------------------------------------------------
    def unsupervised_terms(self, out: SDNetOutput, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rec``, ``zrec``, ``kl`` of a pass ``out`` of ``image`` (made with ``z_prior``), each a mean over the rows."""
        return {
            "rec": F.l1_loss(out.reconstruction.float(), image.float()),
            "zrec": F.l1_loss(out.mu_prior_rec.float(), out.z_prior),
            "kl": kl_normal(out.mu.float(), out.logvar.float()),
        }

    def supervised_terms(self, logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """``dice`` and ``focal`` of labelled rows' logits."""
        logits = logits.float()
        return {"dice": self.dice(logits, label), "focal": self.focal(logits, label)}

    def sdnet_losses(self, image: torch.Tensor, label: torch.Tensor | None, n_labelled: int) -> tuple[dict[str, torch.Tensor], SDNetOutput]:
        """One SDNet pass over ``image`` (the first ``n_labelled`` rows labelled by ``label``): every term of eq. 1, and the pass."""
        net = self.net("sdnet")
        z_prior = torch.randn(image.shape[0], self.nets["sdnet"].z_dim, device=image.device)
        out: SDNetOutput = self.call(net, image, z_prior)
        parts = self.unsupervised_terms(out, image)
        if n_labelled:
            parts.update(self.supervised_terms(out.logits[:n_labelled], label))
        return parts, out

    def objective_terms(
        self, image: torch.Tensor, label: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor] | None]:
        """Eq. 1's terms over the labelled rows ``image`` and the unlabelled rows ``target``, under ``train.norm_stats``.

        ``joint``: one pass over both. Otherwise one pass per domain, the target's with its own
        statistics (:meth:`~segshift.methods.base.Method.target_norm`: those of ``domain``, a
        no-op under the others), and each of ``rec``, ``zrec``, ``kl`` is the row-weighted mean
        of the two passes' (the mean over all rows, as in one pass). Returns the terms, the
        labelled rows' logits, and the target rows' own ``rec``, ``zrec``, ``kl`` (``None``
        without ``target``; under ``joint`` computed on the diagnosed steps only).
        """
        n_lab = image.shape[0]
        if target is None:
            parts, out = self.sdnet_losses(image, label, n_lab)
            return parts, out.logits[:n_lab], None
        if self.norm_stats == "joint":
            parts, out = self.sdnet_losses(torch.cat([image, target]), label, n_lab)
            on_target = self.unsupervised_terms(_rows_from(out, n_lab), target) if self.diagnostics else None
            return parts, out.logits[:n_lab], on_target
        parts, out = self.sdnet_losses(image, label, n_lab)
        with self.target_norm():
            on_target, _ = self.sdnet_losses(target, None, 0)
        n_tgt = target.shape[0]
        for k in UNSUPERVISED:
            parts[k] = (n_lab * parts[k] + n_tgt * on_target[k]) / (n_lab + n_tgt)
        return parts, out.logits[:n_lab], on_target

    def labelled_images(self, batch: Batch, step: int) -> Labelled:
        """The labelled images of this step and their labels (``sdnet-fa`` mixes in FA images)."""
        return Labelled(batch.source_image, batch.source_label)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        lab = self.labelled_images(batch, step)
        target = None
        if self.semi_supervised:
            if batch.target_image is None:
                raise SegshiftError(f"{self.name} is semi-supervised: it needs target batches (give --target)")
            target = batch.target_image  # no segmentation loss: its labels are never read
        opt = self.optimizers["sdnet"]
        opt.zero_grad(set_to_none=True)
        parts, logits, on_target = self.objective_terms(lab.image, lab.label, target)
        w = self.weights
        seg = w["dice"] * parts["dice"] + w["focal"] * parts["focal"]
        total = w["rec"] * parts["rec"] + w["zrec"] * parts["zrec"] + self.kl_weight * parts["kl"] + seg
        diagnosed = {}
        if self.diagnostics and "sdnet" not in self._wrapped:
            diagnosed = self.gradient_diagnostics(seg, lab, logits, on_target, 0 if target is None else target.shape[0])
        total.backward()
        opt.step()
        values = {"loss": float(total.detach()), "loss_seg": float(seg.detach())}
        values.update({k: float(v.detach()) for k, v in parts.items()})
        values.update(lab.log or {})
        return {**values, **diagnosed}

    def gradient_diagnostics(
        self, seg: torch.Tensor, lab: Labelled, logits: torch.Tensor, on_target: dict[str, torch.Tensor] | None, n_target: int
    ) -> dict[str, float]:
        """``grad_ratio_target`` (a step with target rows) and ``grad_ratio_fa`` (a step of ``sdnet-fa``): see the module docstring.

        :func:`~segshift.methods.diagnostics.gradient_ratios` over the parameters of the
        segmentation path, on the step's graph (the update is unchanged). ``grad_ratio_fa`` is
        0 in a step without FA images, and missing where every labelled row is one.
        """
        net = self.nets["sdnet"]
        params = [*net.anatomy.parameters(), *net.segmentor.parameters()]
        w, ratios = self.weights, {}
        if on_target is not None:
            share = n_target / (n_target + lab.image.shape[0])
            unsup = share * (w["rec"] * on_target["rec"] + w["zrec"] * on_target["zrec"] + self.kl_weight * on_target["kl"])
            ratios.update(gradient_ratios(seg, {"target": unsup}, params))
        if lab.fa_rows is not None:
            fa = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
            fa[lab.fa_rows] = True
            if not fa.any():
                ratios["fa"] = 0.0
            elif not fa.all():

                def seg_loss(rows: torch.Tensor) -> torch.Tensor:
                    t = self.supervised_terms(logits[rows], lab.label[rows])
                    return w["dice"] * t["dice"] + w["focal"] * t["focal"]

                ratios.update(gradient_ratios(seg_loss(~fa), {"fa": seg_loss(fa)}, params))
        return {f"grad_ratio_{k}": v for k, v in ratios.items()}

    # -- prediction -----------------------------------------------------------------------
    tta_nets = ("sdnet",)

    def segmenter_logits(self, image: torch.Tensor) -> torch.Tensor:
        """``segmentor(E_a(x))`` (Fig. 1(a): the mask comes from the binary anatomy factor)."""
        net = self.nets["sdnet"]
        return self.call(lambda x: net.segmentor(net.anatomy(x)), image.to(self.device)).float()

    @torch.no_grad()
    def anatomy(self, image: torch.Tensor) -> torch.Tensor:
        """Binary anatomy factors ``(B, 8, H, W)`` of preprocessed images."""
        return self.call(self.nets["sdnet"].anatomy, image.to(self.device)).float()

    @torch.no_grad()
    def decode(
        self, anatomy: torch.Tensor, modality_images: torch.Tensor, net: str = "sdnet", target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images decoded by SDNet ``net`` from ``anatomy`` with the modality factors (posterior means) of ``modality_images``.

        ``target`` ``(B,)`` marks the modality images of the target domain: where ``net`` keeps
        trained target statistics (:meth:`~segshift.methods.base.Method.uses_target_norm`) they
        are encoded with those, in a pass of their own (eval mode: every row is its own), the
        others with the source statistics.
        """
        sdnet: SDNet = self.nets[net]

        def run(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            def decoded(m: torch.Tensor) -> torch.Tensor:
                _, mu, _ = sdnet.modality(m, sdnet.anatomy(m))
                return sdnet.decoder(a, mu)

            return self.call(decoded, x).float()

        a, x = anatomy.to(self.device), modality_images.to(self.device)
        if target is None or not bool(target.any()) or not self.uses_target_norm(net):
            return run(x, a)
        on_target = target.to(self.device).bool()
        out = torch.empty(len(x), *x.shape[1:], device=self.device)
        if not bool(on_target.all()):
            out[~on_target] = run(x[~on_target], a[~on_target])
        with self.target_norm(net):
            out[on_target] = run(x[on_target], a[on_target])
        return out

    # -- figures ------------------------------------------------------------------------------------
    def figures(self, samples: FigureSamples) -> list[MethodFigure]:
        """``anatomy`` (image, label, prediction and the anatomy channels of a case) and
        ``factor_grid`` (one anatomy decoded with the modality factor of every sample).
        """
        src = torch.as_tensor(np.asarray(samples.source_image, dtype=np.float32))[:, None]
        pool = (
            src
            if samples.target_image is None
            else torch.cat([src, torch.as_tensor(np.asarray(samples.target_image, dtype=np.float32))[:, None]])
        )
        names = ["source"] * len(src) + ["target"] * (len(pool) - len(src))
        a = self.anatomy(src[:1])
        pred = self.predict_logits(src[:1]).argmax(1)
        on_target = torch.arange(len(pool)) >= len(src)
        decoded = self.decode(a.expand(len(pool), -1, -1, -1), pool, target=on_target)
        anatomy = {
            "image": src[0, 0].numpy(),
            "label": np.asarray(samples.source_label[0]),
            "prediction": pred[0].cpu().numpy(),
            "anatomy": a[0].cpu().numpy(),
        }
        factors = {"anatomy_image": src[0, 0].numpy(), "modality_images": pool[:, 0].numpy(), "decoded": decoded[:, 0].cpu().numpy()}
        return [
            MethodFigure("anatomy", "sdnet_anatomy", anatomy),
            MethodFigure("factor_grid", "sdnet_factor_grid", factors, {"names": names}),
        ]


@register
class SDNetSemiSupervised(SDNetMethod):
    name = "sdnet-ss"
    summary = "SDNet, semi-supervised: unlabelled target images train the reconstruction and latent-regression terms."
    uses_target = True
    semi_supervised = True


@register
class SDNetFactorAugmentation(SDNetSemiSupervised):
    name = "sdnet-fa"
    summary = (
        "SS SDNet + factor-based augmentation: pretrain, then train on labelled images re-decoded with modality "
        "factors of other domains (target included); one run, two stages."
    )
    hparams = {
        **SDNetMethod.hparams,
        "pretrain_steps": integer(
            1000, "stage 1 (SS SDNet pretraining; from scratch only); the paper pretrains to convergence (50 epochs)"
        ),
        "fa_fraction": number(0.5, "share of each labelled batch replaced by FA images in stage 2 (not given in the paper)", high=1.0),
    }

    def build_nets(self) -> None:
        # stage 1 (SS pretraining) is the init run's when warm-started
        self.pretrain_steps = 0 if self.warm_started else int(self.hp["pretrain_steps"])
        self.fa_fraction = float(self.hp["fa_fraction"])
        super().build_nets()

    def build_optimizers(self) -> None:
        super().build_optimizers()
        fa = self.make_sdnet()  # the frozen pretrained copy (weights copied at the stage switch; kept for resume)
        fa.requires_grad_(False)
        self.nets["fa"] = fa

    def total_steps(self) -> int:
        return self.pretrain_steps + int(self.cfg["train"]["steps"])

    def train(self, mode: bool = True) -> None:
        super().train(mode)
        if "fa" in self.nets:  # built for training only
            self.nets["fa"].eval()  # "using this model at inference" (section 2.1)

    def validation_due(self, step: int) -> bool:
        return step > self.pretrain_steps  # select among FA-trained weights only

    def add_domain_norm(self) -> None:
        """The SDNet's target statistics, and under training those of the frozen copy ``fa``
        (its target images' modality factors are encoded with them).
        """
        super().add_domain_norm()
        if "sdnet" + TARGET_NORM in self.nets and "fa" in self.nets:
            self.nets["fa" + TARGET_NORM] = DomainNormStats(self.nets["fa"])

    def freeze_pretrained(self) -> None:
        """Stage switch: the pretrained SDNet, with its target statistics, becomes the fixed FA generator."""
        self.nets["fa"].load_state_dict(self.nets["sdnet"].state_dict())
        if "fa" + TARGET_NORM in self.nets:
            self.nets["fa" + TARGET_NORM].load_state_dict(self.nets["sdnet" + TARGET_NORM].state_dict())
        self.nets["fa"].eval()

    @torch.no_grad()
    def factor_augment(
        self, image: torch.Tensor, label: torch.Tensor, domain: torch.Tensor, pool: torch.Tensor, pool_domain: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FA images (section 2.1, Fig. 1(b)) and their labels.

        Image ``i`` keeps its anatomy factor and label; its modality factor is the posterior
        mean of a random ``pool`` image of a domain other than ``domain[i]`` (any pool image
        when there is none). Uses the frozen pretrained model ``nets["fa"]``, with its target
        statistics for a target image (where it keeps them).

        Args:
            image: ``(B, 1, H, W)`` labelled images; label: ``(B, H, W)``; domain: ``(B,)``.
            pool: ``(P, 1, H, W)`` images providing modality factors; pool_domain: ``(P,)``
                (the target domain is ``-1``).
        """
        fa: SDNet = self.nets["fa"]
        pick = []
        for d in domain.tolist():
            others = (pool_domain != d).nonzero().flatten()
            cands = others if len(others) else torch.arange(len(pool), device=pool.device)
            pick.append(cands[torch.randint(len(cands), (1,)).item()])
        a = self.call(fa.anatomy, image)
        chosen = torch.stack(pick)
        return self.decode(a, pool[chosen], net="fa", target=pool_domain[chosen] == -1), label

    def labelled_images(self, batch: Batch, step: int) -> Labelled:
        if step <= self.pretrain_steps:
            return Labelled(batch.source_image, batch.source_label, torch.zeros(0, dtype=torch.long), {"stage": 1.0})
        if step == self.pretrain_steps + 1:
            # the pretrained (or warm-start loaded) SDNet becomes the FA generator; a resumed
            # stage-2 run starts after this step and loads nets["fa"] from its checkpoint instead
            self.freeze_pretrained()
        image, label = batch.source_image.clone(), batch.source_label.clone()
        k = int(round(self.fa_fraction * len(image)))
        if k:
            idx = torch.randperm(len(image))[:k].to(image.device)
            pool, pool_domain = batch.source_image, batch.source_domain
            if batch.target_image is not None:
                pool = torch.cat([pool, batch.target_image])
                pool_domain = torch.cat([pool_domain, torch.full((len(batch.target_image),), -1, device=pool_domain.device)])
            fa_img, _ = self.factor_augment(image[idx], label[idx], batch.source_domain[idx], pool, pool_domain)
            image[idx] = fa_img.to(image.dtype)
        else:
            idx = torch.zeros(0, dtype=torch.long)
        return Labelled(image, label, idx, {"stage": 2.0, "fa_images": float(k)})
