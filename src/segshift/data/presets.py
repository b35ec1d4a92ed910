"""Import presets for the public cardiac datasets in ``../shared/data/cardiac``.

One preset per dataset (nnU-Net keeps one converter per public dataset; here a converter is
a declarative :class:`ImportConfig`). Each states the dataset's own naming rule and label
codes; the output uses the canonical ids (0 background, 1 LV, 2 MYO, 3 RV).

=============  ===================================  ==============================  ============
preset         raw layout                            label codes -> canonical        cases
=============  ===================================  ==============================  ============
acdc           images/patientNNN_frameMM.nii.gz,      1 RV, 2 MYO, 3 LV                60 labelled
               labels/patientNNN_frameMM_gt.nii.gz
mscmr_bssfp    images/image_N, labels/label_N         200 MYO, 500 LV, 600 RV          20 labelled
mscmr_lge      images/subjectN_DE,                    1 RV, 2 MYO, 3 LV                5 labelled +
               labels/subjectN_DE_manual,                                              25 unlabelled
               unlabeled/subjectN_DE
nnunet         any nnU-Net v2 raw dataset: dataset.json,  by name (LV/MYO/RV -> canonical;  imagesTr +
               imagesTr/CASE_0000, labelsTr/CASE,       any other set kept)               imagesTs
               imagesTs/CASE_0000                       (:mod:`segshift.data.nnunet`)
=============  ===================================  ==============================  ============

MS-CMRSeg bSSFP ``image_N`` and LGE ``subjectN`` are the same patient N; both presets name
the case ``patientNN`` so the correspondence is visible.
"""

from __future__ import annotations

import dataclasses

from segshift.data.importer import ImportConfig
from segshift.errors import SegshiftError


def _presets() -> dict[str, ImportConfig]:
    return {
        "acdc": ImportConfig(
            name="acdc",
            images=("images",),
            labels="labels",
            image_pattern=r"(?P<case>patient\d{3}_frame\d{2})",
            label_suffix="_gt",
            label_map={1: "RV", 2: "MYO", 3: "LV"},
            require_labels=True,
            sequence="bSSFP cine",
            vendor="Siemens",
            centre="Dijon (ACDC challenge)",
            description="ACDC cine bSSFP, ED and ES frames; spacing taken from pixdim (the affine lacks it).",
        ),
        "mscmr_bssfp": ImportConfig(
            name="mscmr_bssfp",
            images=("images",),
            labels="labels",
            image_pattern=r"image_(?P<case>\d+)",
            label_pattern=r"label_(?P<case>\d+)",
            case_template="patient{case:0>2}",
            label_map={200: "MYO", 500: "LV", 600: "RV"},
            require_labels=True,
            sequence="bSSFP cine (C0)",
            centre="Shanghai (MS-CMRSeg 2019)",
            description="MS-CMRSeg 2019 bSSFP, resampled by the publisher to 1.25 mm in-plane.",
        ),
        "mscmr_lge": ImportConfig(
            name="mscmr_lge",
            images=("images",),
            labels="labels",
            unlabelled=("unlabeled",),
            image_pattern=r"subject(?P<case>\d+)_DE",
            label_suffix="_manual",
            case_template="patient{case:0>2}",
            label_map={1: "RV", 2: "MYO", 3: "LV"},
            sequence="LGE",
            centre="Shanghai (MS-CMRSeg 2019)",
            description="MS-CMRSeg 2019 LGE; 5 labelled cases and an unlabelled pool.",
        ),
    }


PRESET_NAMES = ("acdc", "mscmr_bssfp", "mscmr_lge")
"""The public datasets of ``../shared/data/cardiac``."""
IMPORT_PRESETS = PRESET_NAMES + ("nnunet",)
"""What ``segshift import --preset`` takes: the public datasets, and ``nnunet``, whose rule comes from the
dataset's own ``dataset.json`` (:func:`segshift.data.nnunet.nnunet_import_config`)."""


def get_preset(preset: str, **overrides: object) -> ImportConfig:
    """The import configuration of a public dataset, with optional field overrides (``None`` skipped)."""
    presets = _presets()
    if preset == "nnunet":
        raise SegshiftError("the nnunet preset reads dataset.json: use segshift.data.nnunet.nnunet_import_config(raw, name)")
    if preset not in presets:
        raise SegshiftError(f"unknown import preset {preset!r}; available: {', '.join(IMPORT_PRESETS)}")
    cfg = presets[preset]
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
