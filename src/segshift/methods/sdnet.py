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

Warm start (``--init RUN``): all three take the SDNet ``sdnet`` from the init run
(``init_nets = ("sdnet",)``). ``sdnet-fa`` started from a finished ``sdnet`` or ``sdnet-ss``
run skips its pretraining: that run *is* stage 1, so this run is stage 2 only
(``train.steps`` steps, ``method.pretrain_steps`` unused), and the frozen FA copy
``nets["fa"]`` is taken from the loaded weights at its first step (a resumed run loads
``fa`` from its own checkpoint instead).

Resolution augmentation is the engine's ``augment.resolution`` and works with any method.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.losses import FocalLoss, SoftDiceLoss
from segshift.methods.base import Batch, FigureSamples, Method, MethodFigure, make_optimizer, make_schedule, register
from segshift.methods.hparams import choice, flag, integer, ints, number
from segshift.nets.sdnet import BINARISE, SDNet, SDNetOutput


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))``, summed over the factor, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()


@register
class SDNetMethod(Method):
    name = "sdnet"
    paper = "liu2020 (SDNet of Chartsias et al. 2019)"
    summary = "SDNet, fully supervised: binary anatomy factor + modality factor, AdaIN decoder, segmentor on the anatomy."
    uses_target = False
    semi_supervised = False
    init_nets = ("sdnet",)
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
    def sdnet_losses(self, image: torch.Tensor, label: torch.Tensor | None, n_labelled: int) -> dict[str, torch.Tensor]:
        """Every term of eq. 1 for ``image`` (the first ``n_labelled`` rows labelled by ``label``)."""
        net = self.net("sdnet")
        z_prior = torch.randn(image.shape[0], self.nets["sdnet"].z_dim, device=image.device)
        out: SDNetOutput = self.call(net, image, z_prior)
        parts = {
            "rec": F.l1_loss(out.reconstruction.float(), image.float()),
            "zrec": F.l1_loss(out.mu_prior_rec.float(), z_prior),
            "kl": kl_normal(out.mu.float(), out.logvar.float()),
        }
        if n_labelled:
            logits = out.logits[:n_labelled].float()
            parts["dice"] = self.dice(logits, label)
            parts["focal"] = self.focal(logits, label)
        return parts

    def labelled_images(self, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """The labelled images of this step and their labels (``sdnet-fa`` mixes in FA images)."""
        return batch.source_image, batch.source_label, {}

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        image, label, extra = self.labelled_images(batch, step)
        n_lab = image.shape[0]
        if self.semi_supervised:
            if batch.target_image is None:
                raise SegshiftError(f"{self.name} is semi-supervised: it needs target batches (give --target)")
            image = torch.cat([image, batch.target_image])  # one pass; the target rows get no segmentation loss
        opt = self.optimizers["sdnet"]
        opt.zero_grad(set_to_none=True)
        parts = self.sdnet_losses(image, label, n_lab)
        w = self.weights
        seg = w["dice"] * parts["dice"] + w["focal"] * parts["focal"]
        total = w["rec"] * parts["rec"] + w["zrec"] * parts["zrec"] + self.kl_weight * parts["kl"] + seg
        total.backward()
        opt.step()
        values = {"loss": float(total.detach()), "loss_seg": float(seg.detach())}
        values.update({k: float(v.detach()) for k, v in parts.items()})
        values.update(extra)
        return values

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
    def decode(self, anatomy: torch.Tensor, modality_images: torch.Tensor, net: SDNet | None = None) -> torch.Tensor:
        """Images decoded from ``anatomy`` with the modality factors (posterior means) of ``modality_images``."""
        net = net if net is not None else self.nets["sdnet"]

        a = anatomy.to(self.device)

        def decoded(x: torch.Tensor) -> torch.Tensor:
            _, mu, _ = net.modality(x, net.anatomy(x))
            return net.decoder(a, mu)

        return self.call(decoded, modality_images.to(self.device)).float()

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
        decoded = self.decode(a.expand(len(pool), -1, -1, -1), pool)
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

    def freeze_pretrained(self) -> None:
        """Stage switch: the pretrained SDNet becomes the fixed FA generator."""
        self.nets["fa"].load_state_dict(self.nets["sdnet"].state_dict())
        self.nets["fa"].eval()

    @torch.no_grad()
    def factor_augment(
        self, image: torch.Tensor, label: torch.Tensor, domain: torch.Tensor, pool: torch.Tensor, pool_domain: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FA images (section 2.1, Fig. 1(b)) and their labels.

        Image ``i`` keeps its anatomy factor and label; its modality factor is the posterior
        mean of a random ``pool`` image of a domain other than ``domain[i]`` (any pool image
        when there is none). Uses the frozen pretrained model ``nets["fa"]``.

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
        return self.decode(a, pool[torch.stack(pick)], net=fa), label

    def labelled_images(self, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        if step <= self.pretrain_steps:
            return batch.source_image, batch.source_label, {"stage": 1.0}
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
        return image, label, {"stage": 2.0, "fa_images": float(k)}
