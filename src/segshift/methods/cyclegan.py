"""``cyclegan``: unpaired image translation between the domains, trained with the segmenter.

Zhu, Park, Isola and Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017; the "CycleGAN" row of Yan et al. 2019 (Fig. 2(b), eq. 1)
and of Li et al. 2021 (AttENT, ablation table). Two generators ``G_S2T``, ``G_T2S`` and two
PatchGAN discriminators ``D_S``, ``D_T``: adversarial losses make translated images look
like the other domain, the cycle loss ``|G_T2S(G_S2T(x_s)) - x_s|_1 + |G_S2T(G_T2S(x_t)) -
x_t|_1`` (weight ``lambda_cycle``) keeps the content.

One step, in three plainly separated updates
(:class:`~segshift.methods.translation.TranslationMethod`):

1. **Generators, with D_S and D_T frozen**: ``w * lambda_gan * L_GAN + lambda_cycle L_cyc``
   (``w``: the discriminator warm-up and ramp of
   :class:`~segshift.methods.alignment.AlignmentSchedule`);
2. **D_S and D_T on detached images**: real images label 1, translated ones label 0;
3. **the segmenter** on labelled source images (``direction: target_to_source``, the
   default; prediction segments ``G_T2S(x_t)``), or on source images translated to the
   target look (``source_to_target``; prediction segments target images as they are).

Warm start (``--init RUN``, a finished ``source-only`` run): the segmenter ``seg`` comes
from the init run; the generators and image discriminators start fresh. The ``best``
checkpoint holds the segmenter ``train.select`` picked and the final ``G_T2S``.

Defaults and CPU sizes: :data:`~segshift.methods.translation.TRANSLATION_HPARAMS`.
"""

from __future__ import annotations

from segshift.methods.base import register
from segshift.methods.translation import TRANSLATION_HPARAMS, TranslationMethod


@register
class CycleGAN(TranslationMethod):
    name = "cyclegan"
    paper = "Zhu et al. ICCV 2017; the CycleGAN row of yan2019 and li2021"
    summary = "Unpaired CycleGAN translation between the domains (target -> source by default), trained jointly with the segmenter."
    hparams = TRANSLATION_HPARAMS
