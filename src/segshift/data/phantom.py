"""A synthetic multi-domain cardiac MR phantom: the embedded default dataset.

The phantom needs no data, no download and no GPU. It produces short-axis cine-like stacks
with exact labels (0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool; see
:data:`segshift.data.domain.CARDIAC_LABELS`) under several *domain presets*, so that every
adaptation method can be exercised end to end on a real, controllable domain gap.

What is modelled
----------------
*Anatomy* (:func:`sample_anatomy`, one random draw per case, in physical millimetres):

* the LV as two nested truncated ellipsoids (endocardium and epicardium) from base to apex:
  cavities shrink towards the apex, the last slices may hold only the apical myocardial cap;
  radii carry low-order Fourier perturbations (ellipticity, irregularity), the wall thickness
  varies around the ring and from base to apex; three phenotypes (normal, dilated,
  hypertrophic) widen the range of cavity sizes and wall thicknesses;
* papillary muscles inside the LV cavity (myocardial signal, labelled LV as in ACDC);
* the RV as a bent ellipse attached to the septal side, cut by the LV epicardium so that it
  wraps around the LV as a crescent, with a thin (unlabelled) free wall; it is shorter than
  the LV, so it vanishes before the apex;
* epicardial fat, the body (ellipse) with a subcutaneous fat layer and chest-wall muscle,
  lungs (with a few vessels), mediastinum, the descending aorta, a vertebra with its spinal
  canal, the liver rising into the lower part of the image towards the apex, air around;
* optionally an infarct territory (a myocardial sector over a range of slices, from the
  endocardium out to a random transmurality, with patchy borders). It does not change the
  labels (scar is myocardium), only the appearance in sequences that show it.

Position (offset from the image centre), in-plane rotation of the whole scene, heart axis
drift across slices, sizes and shapes are random per case but do **not** depend on the
preset: the label statistics are the same in every domain, only the appearance and the
sampling grid change.

*Rendering* under a :class:`DomainPreset`: each tissue class gets an intensity (the
sequence's contrast), modulated by smooth low-frequency texture fields; the tissue map is
evaluated on a supersampled in-plane grid and at several positions through the slice
thickness and area-averaged, so edges carry partial-volume effects; then a Gaussian PSF,
optional k-space truncation (Gibbs ringing), a smooth multiplicative bias field (coil
sensitivity), a gamma contrast curve, Rician noise ``|s + N(0, sigma) + i N(0, sigma)|``
and a per-case global scale (scanner auto-scaling; values are rounded to integers as a
scanner stores them, which also keeps the files small). Labels are the label of each output
pixel centre at the slice centre. The affine is ``diag(spacing)`` with a non-zero origin
(voxel order ``(i, j, k)``, slice axis last, as in :mod:`segshift.data.volume`); displayed
as ``array[:, :, k].T`` the heart appears as in a usual short-axis view (anterior up, RV on
the viewer's left) up to the random rotation.

Presets (:data:`PRESETS`)
-------------------------
``bssfp``
    Cine balanced SSFP, "vendor A", 1.4 mm in-plane, 10 mm slices: bright blood, dark
    myocardium, bright fat, mild noise and bias. The reference (source) domain, like the
    ACDC / M&Ms vendor-A training data.
``bssfp_vendorB``
    Same sequence on another vendor: 1.0 mm, a different contrast curve (gamma 0.7, flatter
    blood/myocardium contrast), much stronger coil bias field, higher Rician noise and a
    different intensity scale -- the classic multi-vendor shift of M&Ms.
``bssfp_vendorC``
    Same sequence, a third vendor: 1.8 mm, low SNR, a blurrier PSF with k-space truncation
    (ringing), a steep contrast curve (gamma 1.4) and 8-bit-like scaling.
``lge``
    Late gadolinium enhancement (inversion recovery): healthy myocardium nulled (black),
    blood moderately bright (not the brightest tissue, as in bSSFP), bright scar patches in a
    random subset of cases (scar brighter than blood: an inversion of the healthy-tissue
    ordering), different fat/liver/muscle contrast; 0.9 mm in-plane, 7 mm slices, lower
    SNR -- the MS-CMRSeg / Emidec LGE domain.
``t2``
    T2-weighted (dark-blood): myocardium mid-grey, blood dark with a bright slow-flow rim
    (the myocardium/blood contrast is inverted w.r.t. bSSFP), fat and fluid bright, oedema
    brighter than myocardium; 1.6 mm in-plane, 12 mm slices, lower resolution and SNR --
    the MS-CMRSeg T2 domain.

:func:`make_case` renders one case; :func:`generate_domain` writes a domain folder
(atomically), :func:`generate_phantom` several. Everything is deterministic in the seed
(stable ``zlib.crc32`` hashing, never Python's ``hash``). Importing this module does no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from segshift.errors import SegshiftError

TISSUES: tuple[str, ...] = ("air", "lung", "muscle", "fat", "liver", "blood", "myocardium", "scar", "marrow", "fluid")
"""Tissue classes of the phantom, in the order of :meth:`TissueContrast.values`."""

(AIR, LUNG, MUSCLE, FAT, LIVER, BLOOD, MYOCARDIUM, SCAR, MARROW, FLUID) = range(len(TISSUES))

# Relative texture amplitude per tissue for the coarse (~12 mm) and medium (~4 mm) fields.
_TEX_COARSE = np.array([0.0, 1.2, 0.6, 0.5, 0.6, 1.0, 0.5, 0.6, 0.5, 0.3], np.float32)
_TEX_MEDIUM = np.array([0.0, 0.8, 0.7, 0.5, 0.7, 0.35, 0.6, 1.2, 0.9, 0.2], np.float32)


@dataclasses.dataclass(frozen=True)
class TissueContrast:
    """Signal of each tissue class before the contrast curve, on a 0..1 scale.

    Attributes:
        air: outside the body (noise only).
        lung: lung parenchyma.
        muscle: chest wall, paraspinal muscles, mediastinal soft tissue.
        fat: subcutaneous and epicardial fat.
        liver: liver.
        blood: LV, RV and aortic blood (also lung vessels).
        myocardium: healthy myocardium (LV, RV free wall, papillary muscles).
        scar: infarcted myocardium (LGE) or oedema (T2).
        marrow: vertebral body.
        fluid: cerebrospinal fluid in the spinal canal.
    """

    air: float = 0.0
    lung: float = 0.05
    muscle: float = 0.3
    fat: float = 0.8
    liver: float = 0.35
    blood: float = 0.9
    myocardium: float = 0.25
    scar: float = 0.25
    marrow: float = 0.5
    fluid: float = 0.9

    def values(self) -> np.ndarray:
        """Intensities in the order of :data:`TISSUES` (float32)."""
        return np.array([getattr(self, t) for t in TISSUES], np.float32)


@dataclasses.dataclass(frozen=True)
class DomainPreset:
    """How one imaging domain renders the phantom anatomy.

    Attributes:
        name: preset (and domain) name.
        sequence: MR sequence written to ``domain.json``.
        vendor: vendor label written to ``domain.json``.
        description: one line on what the preset mimics.
        spacing_mm: in-plane pixel size in mm.
        slice_thickness_mm: slice thickness and spacing in mm (no gap).
        matrix: in-plane matrix size ``(n_i, n_j)``.
        contrast: per-tissue signal before the contrast curve.
        gamma: contrast curve exponent applied to the (bias-modulated) signal.
        noise_sigma: Rician noise sigma on the 0..1 signal scale.
        bias_strength: scale of the log bias field (0 = none; 0.5 = roughly x0.6..x1.6).
        psf_fwhm_mm: in-plane Gaussian point-spread FWHM in mm (0 = none).
        kspace_fraction: fraction of k-space kept per axis (1 = no truncation; < 1 rings).
        texture: amplitude of the smooth per-tissue texture.
        blood_rim: relative brightening of the LV blood next to the endocardium (slow flow).
        scar_probability: fraction of cases with a (visible) infarct.
        output_scale: typical stored intensity of a signal of 1.0.
        supersample: in-plane supersampling factor (partial-volume effects).
        through_plane_samples: samples through the slice thickness.
    """

    name: str
    sequence: str
    vendor: str
    description: str
    spacing_mm: float
    slice_thickness_mm: float
    matrix: tuple[int, int]
    contrast: TissueContrast
    gamma: float = 1.0
    noise_sigma: float = 0.03
    bias_strength: float = 0.2
    psf_fwhm_mm: float = 0.0
    kspace_fraction: float = 1.0
    texture: float = 0.08
    blood_rim: float = 0.0
    scar_probability: float = 0.5
    output_scale: float = 1000.0
    supersample: int = 2
    through_plane_samples: int = 2

    def __post_init__(self) -> None:
        problems = []
        if not (self.spacing_mm > 0 and self.slice_thickness_mm > 0):
            problems.append("spacing_mm and slice_thickness_mm must be positive")
        if len(self.matrix) != 2 or min(self.matrix) < 16:
            problems.append(f"matrix must be two sizes >= 16, got {self.matrix}")
        if not 0 < self.kspace_fraction <= 1:
            problems.append("kspace_fraction must be in (0, 1]")
        if self.noise_sigma < 0 or self.bias_strength < 0 or self.psf_fwhm_mm < 0 or self.gamma <= 0:
            problems.append("noise_sigma, bias_strength, psf_fwhm_mm must be >= 0 and gamma > 0")
        if self.supersample < 1 or self.through_plane_samples < 1:
            problems.append("supersample and through_plane_samples must be >= 1")
        if problems:
            raise SegshiftError(f"phantom preset {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (for provenance)."""
        d = dataclasses.asdict(self)
        d["matrix"] = list(self.matrix)
        return d


PRESETS: dict[str, DomainPreset] = {
    p.name: p
    for p in (
        DomainPreset(
            name="bssfp",
            sequence="bSSFP",
            vendor="phantom vendor A",
            description="Cine bSSFP, reference vendor: bright blood, dark myocardium, 1.4 mm, 10 mm slices.",
            spacing_mm=1.4,
            slice_thickness_mm=10.0,
            matrix=(224, 224),
            contrast=TissueContrast(
                air=0.0,
                lung=0.06,
                muscle=0.28,
                fat=0.82,
                liver=0.34,
                blood=0.92,
                myocardium=0.25,
                scar=0.27,
                marrow=0.55,
                fluid=0.95,
            ),
            gamma=1.0,
            noise_sigma=0.025,
            bias_strength=0.15,
            psf_fwhm_mm=1.2,
            texture=0.08,
            output_scale=1000.0,
        ),
        DomainPreset(
            name="bssfp_vendorB",
            sequence="bSSFP",
            vendor="phantom vendor B",
            description="Cine bSSFP, second vendor: 1.0 mm, flatter contrast curve, strong bias field, more noise.",
            spacing_mm=1.0,
            slice_thickness_mm=10.0,
            matrix=(256, 256),
            contrast=TissueContrast(
                air=0.0,
                lung=0.1,
                muscle=0.36,
                fat=0.95,
                liver=0.46,
                blood=0.8,
                myocardium=0.33,
                scar=0.35,
                marrow=0.65,
                fluid=0.9,
            ),
            gamma=0.7,
            noise_sigma=0.06,
            bias_strength=0.5,
            psf_fwhm_mm=0.8,
            texture=0.1,
            output_scale=2600.0,
        ),
        DomainPreset(
            name="bssfp_vendorC",
            sequence="bSSFP",
            vendor="phantom vendor C",
            description="Cine bSSFP, third vendor: 1.8 mm, low SNR, blurry with ringing, steep contrast curve.",
            spacing_mm=1.8,
            slice_thickness_mm=10.0,
            matrix=(176, 176),
            contrast=TissueContrast(
                air=0.0,
                lung=0.06,
                muscle=0.34,
                fat=0.72,
                liver=0.36,
                blood=0.95,
                myocardium=0.3,
                scar=0.32,
                marrow=0.5,
                fluid=0.9,
            ),
            gamma=1.4,
            noise_sigma=0.05,
            bias_strength=0.25,
            psf_fwhm_mm=3.0,
            kspace_fraction=0.75,
            texture=0.08,
            output_scale=255.0,
        ),
        DomainPreset(
            name="lge",
            sequence="LGE",
            vendor="phantom vendor A",
            description="Late gadolinium enhancement (IR): nulled myocardium, grey blood, bright scar; 0.9 mm, 7 mm slices.",
            spacing_mm=0.9,
            slice_thickness_mm=7.0,
            matrix=(256, 240),
            contrast=TissueContrast(
                air=0.0,
                lung=0.04,
                muscle=0.18,
                fat=0.5,
                liver=0.3,
                blood=0.5,
                myocardium=0.04,
                scar=0.95,
                marrow=0.4,
                fluid=0.12,
            ),
            gamma=1.0,
            noise_sigma=0.05,
            bias_strength=0.3,
            psf_fwhm_mm=1.2,
            texture=0.12,
            scar_probability=0.7,
            output_scale=600.0,
        ),
        DomainPreset(
            name="t2",
            sequence="T2",
            vendor="phantom vendor A",
            description="T2-weighted dark-blood: grey myocardium, dark blood, bright fat/fluid/oedema; 1.6 mm, 12 mm slices.",
            spacing_mm=1.6,
            slice_thickness_mm=12.0,
            matrix=(192, 192),
            contrast=TissueContrast(
                air=0.0,
                lung=0.05,
                muscle=0.28,
                fat=0.85,
                liver=0.32,
                blood=0.1,
                myocardium=0.45,
                scar=0.7,
                marrow=0.6,
                fluid=1.0,
            ),
            gamma=1.0,
            noise_sigma=0.045,
            bias_strength=0.35,
            psf_fwhm_mm=2.2,
            texture=0.1,
            blood_rim=2.5,
            scar_probability=0.7,
            output_scale=1500.0,
        ),
    )
}
"""The named domain presets (see the module docstring)."""

FAST_SETTINGS: tuple[str, ...] = (
    "data.preprocess.crop_size=[80,80]",
    "data.preprocess.target_spacing=2.5",
    "model.kwargs={features: [8,16,32,64]}",
    "train.lr=0.003",
    "train.warmup_steps=10",
    "train.log_every=10",
)
"""The "FAST settings" of phantom runs on a CPU (``--set`` values): 2.5 mm pixels, 80x80 crops (200 mm field
of view), a narrow U-Net. The tests train with them (``tests/conftest.py``), and so do the phantom tables of
docs/translation.md and docs/training.md (``scripts/phantom_table.py``)."""


def get_preset(preset: DomainPreset | str) -> DomainPreset:
    """Return a preset by name (or the preset itself).

    Raises:
        SegshiftError: when the name is unknown; the message lists the available presets.
    """
    if isinstance(preset, DomainPreset):
        return preset
    if preset not in PRESETS:
        raise SegshiftError(f"unknown phantom preset {preset!r} (available: {', '.join(PRESETS)})")
    return PRESETS[preset]


# --------------------------------------------------------------------------- anatomy


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """Random anatomy of one phantom case (mm; angles in radians).

    The *body frame* has its origin at the LV centre of the basal slice, ``u`` towards the
    viewer's right and ``v`` down (posterior) before the in-plane scene rotation; depth ``z``
    runs from the LV base (0) towards the apex.
    """

    phenotype: str
    heart_x: float
    heart_y: float
    rotation: float
    drift_u: float
    drift_v: float
    lv_length: float
    lv_radius: float
    taper: float
    wall: float
    wall_apex: float
    wall_slope: float
    wall_harm: tuple[complex, complex]
    endo_harm: tuple[complex, ...]
    epi_harm: tuple[complex, ...]
    rv_angle: float
    rv_offset: float
    rv_width: float
    rv_depth: float
    rv_bend: float
    rv_length: float
    rv_wall: float
    rv_harm: tuple[complex, complex]
    pap_angles: tuple[float, float]
    pap_size: float
    epi_fat: float
    fat_harm: tuple[complex, complex]
    body_u: float
    body_v: float
    body_a: float
    body_b: float
    body_harm: tuple[complex, complex]
    subcut_fat: float
    chest_wall: float
    liver_u: float
    liver_v: float
    liver_a: float
    liver_b: float
    liver_rise: float
    aorta_radius: float
    scar_u: float
    scar_angle: float
    scar_width: float
    scar_t0: float
    scar_t1: float
    scar_transmural: float
    scar_harm: tuple[complex, complex]
    z_start: float
    z_beyond: float
    table: tuple[float, float, float]

    @property
    def epi_length(self) -> float:
        """Base-to-epicardial-apex distance (mm)."""
        return self.lv_length + self.wall_apex

    def heart_radius(self) -> float:
        """A bound (mm) on the distance of any heart/epicardial-fat point from the LV axis at the base."""
        rad0 = self.lv_radius + self.wall
        lv = 1.1 * self.lv_radius + 1.5 * self.wall
        rv = 1.05 * rad0 * max(self.rv_offset + self.rv_depth, math.hypot(self.rv_width, 0.5 * self.rv_offset)) + self.rv_wall
        return max(lv, rv) + 1.6 * self.epi_fat + 3.0


def _cn(rng: np.random.Generator, scale: float) -> complex:
    return complex(rng.normal(0.0, scale), rng.normal(0.0, scale))


def _u64(seed: int) -> int:
    return int(seed) & 0xFFFF_FFFF_FFFF_FFFF


def sample_anatomy(seed: int) -> Anatomy:
    """Draw the anatomy of one case; the same seed gives the same anatomy in every preset.

    Args:
        seed: any integer.

    Returns:
        The case's :class:`Anatomy`.
    """
    rng = np.random.default_rng([_u64(seed), 0xA7A])
    phenotype = str(rng.choice(["normal", "dilated", "hypertrophic"], p=[0.5, 0.25, 0.25]))
    if phenotype == "normal":
        radius, wall, length = rng.uniform(21, 27), rng.uniform(7, 10), rng.uniform(72, 90)
    elif phenotype == "dilated":
        radius, wall, length = rng.uniform(28, 34), rng.uniform(5.5, 8), rng.uniform(82, 98)
    else:
        radius, wall, length = rng.uniform(16, 22), rng.uniform(11, 15), rng.uniform(66, 84)
    ell = rng.uniform(0.0, 0.12) * np.exp(1j * rng.uniform(0, 2 * np.pi))
    endo = (complex(ell) + _cn(rng, 0.02), _cn(rng, 0.03 / 3), _cn(rng, 0.03 / 4), _cn(rng, 0.03 / 5))
    epi = (_cn(rng, 0.02), _cn(rng, 0.01), _cn(rng, 0.006), _cn(rng, 0.004))
    rv_angle = np.pi + 0.35 + rng.normal(0, 0.15)
    lateral = rv_angle + np.pi
    gap = rng.uniform(0.7, 1.1)
    return Anatomy(
        phenotype=phenotype,
        heart_x=float(np.clip(rng.normal(6, 10), -20, 30)),
        heart_y=float(np.clip(rng.normal(-6, 10), -30, 20)),
        rotation=float(np.deg2rad(rng.uniform(-25, 25))),
        drift_u=float(rng.normal(0, 4)),
        drift_v=float(rng.normal(0, 4)),
        lv_length=float(length),
        lv_radius=float(radius),
        taper=float(rng.uniform(1.7, 2.6)),
        wall=float(wall),
        wall_apex=float(rng.uniform(5, 9)),
        wall_slope=float(rng.uniform(-0.3, 0.1)),
        wall_harm=(_cn(rng, 0.1), _cn(rng, 0.06)),
        endo_harm=endo,
        epi_harm=epi,
        rv_angle=float(rv_angle),
        rv_offset=float(rng.uniform(0.75, 0.92)),
        rv_width=float(rng.uniform(1.05, 1.4)),
        rv_depth=float(rng.uniform(0.5, 0.85)),
        rv_bend=float(rng.uniform(0.15, 0.4)),
        rv_length=float(rng.uniform(0.65, 0.88)),
        rv_wall=float(rng.uniform(2.5, 4.0)),
        rv_harm=(_cn(rng, 0.03), _cn(rng, 0.02)),
        pap_angles=(float(lateral - gap), float(lateral + gap * rng.uniform(0.8, 1.2))),
        pap_size=float(rng.uniform(0.09, 0.15)),
        epi_fat=float(rng.uniform(1.5, 5.0)),
        fat_harm=(_cn(rng, 0.7), _cn(rng, 0.6)),
        body_u=float(-28 + rng.normal(0, 6)),
        body_v=float(30 + rng.normal(0, 6)),
        body_a=float(rng.uniform(125, 150)),
        body_b=float(rng.uniform(88, 108)),
        body_harm=(_cn(rng, 0.03), _cn(rng, 0.02)),
        subcut_fat=float(rng.uniform(3, 10)),
        chest_wall=float(rng.uniform(12, 22)),
        liver_u=float(-75 + rng.normal(0, 8)),
        liver_v=float(150 + rng.normal(0, 8)),
        liver_a=float(rng.uniform(80, 100)),
        liver_b=float(rng.uniform(55, 70)),
        liver_rise=float(rng.uniform(50, 80)),
        aorta_radius=float(rng.uniform(10, 13)),
        scar_u=float(rng.uniform(0, 1)),
        scar_angle=float(rng.uniform(0, 2 * np.pi)),
        scar_width=float(rng.uniform(0.35, 0.9)),
        scar_t0=float(rng.uniform(0.0, 0.5)),
        scar_t1=float(rng.uniform(0.55, 1.1)),
        scar_transmural=float(rng.uniform(0.35, 1.0)),
        scar_harm=(_cn(rng, 0.25), _cn(rng, 0.25)),
        z_start=float(rng.uniform(-1, 4)),
        z_beyond=float(rng.uniform(-3, 10)),
        table=(float(rng.uniform(-20, 20)), float(rng.uniform(-30, 10)), float(rng.uniform(-90, -40))),
    )


def slice_positions(anat: Anatomy, slice_thickness_mm: float) -> np.ndarray:
    """Slice-centre depths (mm from the LV base, towards the apex) of the stack; at least 3."""
    n = int(math.floor((anat.epi_length + anat.z_beyond - anat.z_start) / slice_thickness_mm)) + 1
    return anat.z_start + slice_thickness_mm * np.arange(max(n, 3), dtype=np.float64)


def _taper(s: float, alpha: float) -> float:
    """Radius factor of a truncated ellipsoid at normalised depth ``s`` (1 at the base, 0 at the tip)."""
    s = max(s, 0.0)
    return math.sqrt(max(1.0 - s**alpha, 0.0))


def _body_frame(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates (mm from the image centre) -> body frame ``(u, v)`` (float32)."""
    c, s = math.cos(anat.rotation), math.sin(anat.rotation)
    px, py = x - anat.heart_x, y - anat.heart_y
    return (c * px + s * py).astype(np.float32), (-s * px + c * py).astype(np.float32)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float) -> np.ndarray:
    return ((u - cu) / a) ** 2 + ((v - cv) / b) ** 2 < 1.0


def _static_tissue(anat: Anatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Tissue map of everything that does not change from slice to slice (body, lungs, spine)."""
    bu, bv, a, b = anat.body_u, anat.body_v, anat.body_a, anat.body_b
    du, dv = u - bu, v - bv
    rb = np.sqrt((du / a) ** 2 + (dv / b) ** 2) + np.float32(1e-6)
    w = (du / a + 1j * dv / b).astype(np.complex64) / rb
    h = anat.body_harm
    outline = 1.0 + (h[0] * w * w + h[1] * w * w * w).real
    body = (rb < outline) & (dv < 0.86 * b)  # flattened back (patient lying on the table)
    tissue = np.where(body, np.uint8(FAT), np.uint8(AIR))
    fs = anat.subcut_fat * (1.0 + 0.5 * w.real**2)  # thicker laterally
    inner = (np.sqrt((du / (a - fs)) ** 2 + ((dv - 0.3 * fs) / (b - 1.2 * fs)) ** 2) < outline) & (dv < 0.86 * b - fs)
    tissue[inner] = MUSCLE
    spine_u, spine_v = bu + 4.0, bv + 0.86 * b - anat.subcut_fat - 38.0
    cw = anat.chest_wall
    cavity = _ellipse(u, v, bu + 6.0, bv - 4.0, a - anat.subcut_fat - cw, b - anat.subcut_fat - 1.3 * cw)
    cavity &= (u - spine_u) ** 2 + (v - spine_v) ** 2 > 32.0**2
    lungs = cavity & ~_ellipse(u, v, bu + 2.0, 0.5 * spine_v + 8.0, 22.0, 0.5 * spine_v + 40.0)
    tissue[lungs] = LUNG
    tissue[(u - spine_u) ** 2 + (v - spine_v) ** 2 < 15.0**2] = MARROW
    tissue[(u - spine_u) ** 2 + (v - spine_v - 23.0) ** 2 < 6.0**2] = FLUID
    ao_u, ao_v = spine_u + 30.0, spine_v - 8.0
    tissue[(u - ao_u) ** 2 + (v - ao_v) ** 2 < anat.aorta_radius**2] = BLOOD
    return tissue


@dataclasses.dataclass
class _Heart:
    """Masks of the heart at one depth (on one grid)."""

    lv: np.ndarray
    myo: np.ndarray
    rv: np.ndarray
    rv_wall: np.ndarray
    fat: np.ndarray
    papillary: np.ndarray
    scar: np.ndarray
    rim: np.ndarray | None  # rho / r_endo inside the LV cavity, else 0


class _HeartGeometry:
    """The depth-independent part of the heart geometry, on one grid (body-frame coordinates).

    Angular shape factors (Fourier perturbations) are evaluated once per case; :meth:`at`
    then evaluates the masks at any depth, on the whole grid or a window of it.
    """

    def __init__(self, anat: Anatomy, u: np.ndarray, v: np.ndarray) -> None:
        self.anat = anat
        self.uh, self.vh = u, v
        rho = np.sqrt(u * u + v * v) + np.float32(1e-4)
        self.rho = rho
        # cos/sin of k * angle by the Chebyshev recursion (real float32 arithmetic)
        c1, s1 = u / rho, v / rho
        cs = [(None, None), (c1, s1)]
        for _ in range(4):
            ck, sk = cs[-1]
            cs.append((ck * c1 - sk * s1, sk * c1 + ck * s1))

        def harm(coeffs: Sequence[complex], orders: Sequence[int]) -> np.ndarray:
            out = np.zeros_like(u)
            for co, k in zip(coeffs, orders):
                out += np.float32(co.real) * cs[k][0] - np.float32(co.imag) * cs[k][1]
            return out

        self.s_endo = 1.0 + harm(anat.endo_harm, (2, 3, 4, 5))
        self.s_epi = 1.0 + harm(anat.epi_harm, (2, 3, 4, 5))
        self.wall_mod = 1.0 + harm(anat.wall_harm, (1, 2))
        self.fat_w = anat.epi_fat * np.clip(harm(anat.fat_harm, (1, 2)), 0.0, 1.6)
        self.rv_shape = 1.0 + harm(anat.rv_harm, (2, 3))
        self.scar_ripple = 1.0 + harm(anat.scar_harm, (3, 5))
        ca, sa = math.cos(anat.rv_angle), math.sin(anat.rv_angle)
        self.along0 = u * ca + v * sa
        self.across = -u * sa + v * ca
        self.cos_scar = (u * math.cos(anat.scar_angle) + v * math.sin(anat.scar_angle)) / rho

    def at(self, z: float, scar: bool, need_rim: bool, win: tuple[slice, slice] = (slice(None), slice(None))) -> _Heart:
        """Masks at depth ``z`` (mm below the base), on the window ``win`` of the grid."""
        anat = self.anat
        t = z / anat.lv_length
        tc = min(max(t, 0.0), 1.2)
        g_endo = _taper(t, anat.taper)
        g_epi = _taper(z / anat.epi_length, anat.taper)
        rho, s_endo = self.rho[win], self.s_endo[win]
        uh, vh, across, fat_w, rv_shape = self.uh[win], self.vh[win], self.across[win], self.fat_w[win], self.rv_shape[win]
        r_endo = (anat.lv_radius * g_endo) * s_endo
        wall = (anat.wall * (1.0 + anat.wall_slope * tc)) * self.wall_mod[win]
        r_epi = (anat.lv_radius * s_endo + wall) * (g_epi * self.s_epi[win])
        if g_epi > 0:
            r_epi = np.maximum(r_epi, r_endo + 2.0)
        lv = rho < r_endo
        epi = rho < r_epi
        myo = epi & ~lv

        papillary = np.zeros(rho.shape, bool)
        bump = math.sin(math.pi * (t - 0.15) / 0.7) if 0.15 < t < 0.85 else 0.0
        if bump > 0:
            rp = anat.pap_size * anat.lv_radius * g_endo * bump
            for ang in anat.pap_angles:
                cu = 0.68 * anat.lv_radius * g_endo * math.cos(ang)
                cv = 0.68 * anat.lv_radius * g_endo * math.sin(ang)
                papillary |= (uh - cu) ** 2 + (vh - cv) ** 2 < rp * rp
            papillary &= lv

        # RV: a bent ellipse on the septal side, cut by the LV epicardium
        rad0 = anat.lv_radius + anat.wall
        g_rv = _taper(z / (anat.rv_length * anat.lv_length), 2.0)
        fat = (rho < r_epi + fat_w) if g_epi > 0 else np.zeros(rho.shape, bool)
        if g_rv > 0.05:
            a = anat.rv_width * rad0 * g_rv
            b = anat.rv_depth * rad0 * g_rv
            tw = anat.rv_wall
            along = self.along0[win] - anat.rv_offset * rad0 * g_epi
            along += (anat.rv_bend / a) * across**2
            qa2, qc2 = along * along, across * across
            rv = (qc2 / a**2 + qa2 / b**2 < rv_shape) & ~epi
            rv_outer = (qc2 / (a + tw) ** 2 + qa2 / (b + tw) ** 2 < rv_shape) & ~epi
            fat |= qc2 / (a + tw + fat_w) ** 2 + qa2 / (b + tw + fat_w) ** 2 < rv_shape
        else:
            rv = rv_outer = np.zeros(rho.shape, bool)
        rv_wall = rv_outer & ~rv
        fat &= ~(epi | rv_outer)

        scar_mask = np.zeros(rho.shape, bool)
        if scar and anat.scar_t0 <= t <= anat.scar_t1:
            mid = 0.5 * (anat.scar_t0 + anat.scar_t1)
            half = 0.5 * (anat.scar_t1 - anat.scar_t0)
            taper_t = math.sqrt(max(1.0 - ((t - mid) / half) ** 2, 0.0))
            ripple = self.scar_ripple[win]
            width = anat.scar_width * (0.5 + 0.5 * taper_t) * ripple
            frac = (rho - r_endo) / np.maximum(r_epi - r_endo, 1e-3)
            extent = anat.scar_transmural * (0.6 + 0.4 * taper_t) * ripple
            scar_mask = myo & (self.cos_scar[win] > np.cos(width)) & (frac < extent)

        rim = None
        if need_rim:
            rim = np.where(lv, rho / np.maximum(r_endo, 1e-3), 0.0).astype(np.float32)
        return _Heart(lv, myo, rv, rv_wall, fat, papillary, scar_mask, rim)


def _labels(hm: _Heart) -> np.ndarray:
    lab = np.zeros(hm.lv.shape, np.uint8)
    lab[hm.rv] = 3
    lab[hm.myo] = 2
    lab[hm.lv] = 1
    return lab


def _paint(tissue: np.ndarray, hm: _Heart) -> np.ndarray:
    tissue = tissue.copy()
    tissue[hm.fat] = FAT
    tissue[hm.rv_wall] = MYOCARDIUM
    tissue[hm.rv] = BLOOD
    tissue[hm.myo] = MYOCARDIUM
    tissue[hm.lv] = BLOOD
    tissue[hm.papillary] = MYOCARDIUM
    tissue[hm.scar] = SCAR
    return tissue


# --------------------------------------------------------------------------- appearance


def _smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, int], sigmas_px: Sequence[float]) -> np.ndarray:
    """Unit-variance Gaussian random fields, shape ``(len(sigmas), n, *shape)``, float32.

    Each field is white noise filtered by a Gaussian of ``sigma`` pixels, synthesised in the
    Fourier domain (random coefficients only where the filter is not negligible).
    """
    from scipy import fft as sfft

    nx, ny = shape
    kx = np.fft.fftfreq(nx)[:, None]
    ky = np.fft.rfftfreq(ny)[None, :]
    k2 = kx * kx + ky * ky
    out = np.empty((len(sigmas_px), n, nx, ny), np.float32)
    for f, sigma in enumerate(sigmas_px):
        transfer = np.exp(-2.0 * np.pi**2 * sigma**2 * k2)
        band = transfer > 1e-4
        spec = np.zeros((n, nx, ny // 2 + 1), np.complex64)
        count = int(band.sum())
        coef = rng.standard_normal((n, count, 2), dtype=np.float32)
        spec[:, band] = (coef[..., 0] + 1j * coef[..., 1]) * transfer[band].astype(np.float32)
        field = sfft.irfft2(spec, s=(nx, ny), axes=(-2, -1))
        std = float(field.std())
        out[f] = field / max(std, 1e-12)
    return out


def _grid(idx: np.ndarray, n: int, spacing: float, factor: int) -> np.ndarray:
    """Sample coordinates (mm from the image centre) of pixels ``idx`` of an ``n``-pixel axis.

    Each pixel holds ``factor`` samples at the centres of its equal sub-intervals.
    """
    centres = (np.asarray(idx, np.float64) - (n - 1) / 2.0) * spacing
    offsets = ((np.arange(factor) + 0.5) / factor - 0.5) * spacing
    return (centres[:, None] + offsets[None, :]).reshape(-1)


def _down(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a
    out = np.zeros((a.shape[0] // f, a.shape[1] // f), np.float32)
    for di in range(f):
        for dj in range(f):
            out += a[di::f, dj::f]
    return out * np.float32(1.0 / (f * f))


def _bias_field(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, z: np.ndarray, strength: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(strength * poly)``; coordinates in mm."""
    xn, yn = x / 150.0, y / 150.0
    c = rng.normal(0.0, 1.0, 2) / math.sqrt(2.0)
    q = rng.normal(0.0, 0.4, 3)
    poly = c[0] * xn + c[1] * yn + q[0] * xn * xn + q[1] * yn * yn + q[2] * xn * yn
    poly = poly - poly.mean()
    zslope = rng.normal(0.0, 0.1)
    zn = (z - z.mean()) / 100.0
    return np.exp(strength * (poly[:, :, None] + zslope * zn[None, None, :])).astype(np.float32)


def make_case(preset: DomainPreset | str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one phantom case.

    The anatomy depends on ``seed`` only (so the same seed gives the same patient under every
    preset); noise, texture, bias and scaling depend on ``seed`` and the preset name.

    Args:
        preset: a :class:`DomainPreset` or the name of one in :data:`PRESETS`.
        seed: the case seed (any integer).

    Returns:
        ``(image, label, affine)``: float32 image ``(n_i, n_j, n_slices)``, uint8 label map of
        the same shape (ids of :data:`~segshift.data.domain.CARDIAC_LABELS`), 4x4 affine
        ``diag(spacing, spacing, slice_thickness)`` with a non-zero origin.

    Raises:
        SegshiftError: unknown preset name.
    """
    preset = get_preset(preset)
    anat = sample_anatomy(seed)
    rng = np.random.default_rng([_u64(seed), zlib.crc32(preset.name.encode("utf-8")), 0xA99])
    nx, ny = preset.matrix
    sp, dz, f = float(preset.spacing_mm), float(preset.slice_thickness_mm), max(int(preset.supersample), 1)
    zs = slice_positions(anat, dz)
    n = len(zs)
    has_scar = anat.scar_u < preset.scar_probability
    rim_on = preset.blood_rim > 0
    m = max(int(preset.through_plane_samples), 1)
    sub = ((np.arange(m) + 0.5) / m - 0.5) * dz

    # body: static tissue on the supersampled grid, with its intensities precomputed
    gx, gy = _grid(np.arange(nx), nx, sp, f), _grid(np.arange(ny), ny, sp, f)
    us, vs = _body_frame(anat, *np.meshgrid(gx, gy, indexing="ij"))
    static = _static_tissue(anat, us, vs)
    lut = preset.contrast.values()
    lut_c, lut_m = lut * _TEX_COARSE, lut * _TEX_MEDIUM
    static_i, static_c, static_m = lut[static], lut_c[static], lut_m[static]
    # the liver covers a pixel for depths tc in (lo, hi): it rises by liver_rise * tc
    qu = 1.0 - ((us - anat.liver_u) / anat.liver_a) ** 2
    reach = anat.liver_b * np.sqrt(np.clip(qu, 0.0, None))
    liver_lo = np.where(qu > 0, (anat.liver_v - vs - reach) / anat.liver_rise, np.inf)
    liver_hi = (anat.liver_v - vs + reach) / anat.liver_rise
    liver_ok = (static == LUNG) | (static == MUSCLE)
    lung = static == LUNG

    # heart: geometry evaluated once on a window (output pixels wi x wj, may overhang the
    # image) around the heart; the long-axis drift shifts it by whole pixels per slice
    hp = int(math.ceil(1.1 * anat.heart_radius() / sp)) + 1
    wi = np.arange(-hp, hp + 1) + int(round(anat.heart_x / sp + (nx - 1) / 2.0))
    wj = np.arange(-hp, hp + 1) + int(round(anat.heart_y / sp + (ny - 1) / 2.0))
    geo_s = _HeartGeometry(anat, *_body_frame(anat, *np.meshgrid(_grid(wi, nx, sp, f), _grid(wj, ny, sp, f), indexing="ij")))
    geo_o = _HeartGeometry(anat, *_body_frame(anat, *np.meshgrid(_grid(wi, nx, sp, 1), _grid(wj, ny, sp, 1), indexing="ij")))
    cr, sr = math.cos(anat.rotation), math.sin(anat.rotation)

    fields = _smooth_fields(rng, n, (nx, ny), [12.0 / sp, 4.0 / sp, 1.0 / sp])
    rim_gain = np.float32(preset.blood_rim)
    base = np.empty((nx, ny, n), np.float32)
    tex_c = np.empty_like(base)
    tex_m = np.empty_like(base)
    label = np.zeros((nx, ny, n), np.uint8)
    for k, z in enumerate(zs):
        tc = min(max(z / anat.lv_length, 0.0), 1.2)
        liver = liver_ok & (liver_lo < tc) & (tc < liver_hi)
        vessels = lung & ~liver & np.repeat(np.repeat(fields[2, k] > 2.7, f, 0), f, 1)
        inten, acc_c, acc_m = static_i.copy(), static_c.copy(), static_m.copy()
        for mask, tis in ((liver, LIVER), (vessels, BLOOD)):
            inten[mask], acc_c[mask], acc_m[mask] = lut[tis], lut_c[tis], lut_m[tis]

        # window placement for this slice (drift rotated into image axes, whole output pixels)
        dj = int(round((anat.drift_u * tc * sr + anat.drift_v * tc * cr) / sp))
        di = int(round((anat.drift_u * tc * cr - anat.drift_v * tc * sr) / sp))
        i_lo, i_hi = max(wi[0] + di, 0), min(wi[-1] + di + 1, nx)
        j_lo, j_hi = max(wj[0] + dj, 0), min(wj[-1] + dj + 1, ny)
        if i_lo < i_hi and j_lo < j_hi:
            a_lo, b_lo = i_lo - wi[0] - di, j_lo - wj[0] - dj
            win_o = (slice(a_lo, a_lo + i_hi - i_lo), slice(b_lo, b_lo + j_hi - j_lo))
            win_s = (slice(a_lo * f, (a_lo + i_hi - i_lo) * f), slice(b_lo * f, (b_lo + j_hi - j_lo) * f))
            img_s = (slice(i_lo * f, i_hi * f), slice(j_lo * f, j_hi * f))
            crop_t = static[img_s].copy()
            crop_t[liver[img_s]] = LIVER
            crop_t[vessels[img_s]] = BLOOD
            a0 = np.zeros(crop_t.shape, np.float32)
            ac = np.zeros_like(a0)
            am = np.zeros_like(a0)
            for dzs in sub:
                hm = geo_s.at(float(z + dzs), has_scar, rim_on, win_s)
                tis = _paint(crop_t, hm)
                val = lut[tis]
                if rim_on:
                    val *= 1.0 + rim_gain * hm.rim**8
                a0 += val
                ac += val * _TEX_COARSE[tis]
                am += val * _TEX_MEDIUM[tis]
            inten[img_s], acc_c[img_s], acc_m[img_s] = a0 / m, ac / m, am / m
            label[i_lo:i_hi, j_lo:j_hi, k] = _labels(geo_o.at(float(z), False, False, win_o))
        base[:, :, k] = _down(inten, f)
        tex_c[:, :, k] = _down(acc_c, f)
        tex_m[:, :, k] = _down(acc_m, f)

    img = base + preset.texture * (np.moveaxis(fields[0], 0, -1) * tex_c + np.moveaxis(fields[1], 0, -1) * tex_m)
    if preset.psf_fwhm_mm > 0:
        from scipy.ndimage import gaussian_filter

        sigma = preset.psf_fwhm_mm / 2.3548 / sp
        img = gaussian_filter(img, sigma=(sigma, sigma, 0.0), mode="nearest")
    if preset.kspace_fraction < 1.0:
        from scipy import fft as sfft

        spec = sfft.rfft2(img, axes=(0, 1))
        keep = (np.abs(np.fft.fftfreq(nx))[:, None] <= 0.5 * preset.kspace_fraction) & (
            np.fft.rfftfreq(ny)[None, :] <= 0.5 * preset.kspace_fraction
        )
        img = sfft.irfft2(spec * keep[:, :, None], s=(nx, ny), axes=(0, 1))
    if preset.bias_strength > 0:
        xo, yo = np.meshgrid(_grid(np.arange(nx), nx, sp, 1), _grid(np.arange(ny), ny, sp, 1), indexing="ij")
        img = img * _bias_field(rng, xo, yo, zs, preset.bias_strength)
    img = np.clip(img, 0.0, None) ** np.float32(preset.gamma)
    s = np.float32(preset.noise_sigma)
    real = img + s * rng.standard_normal(img.shape, dtype=np.float32)
    imag = s * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt(real * real + imag * imag)
    # scanner auto-scaling, stored as integers (as scanners do), kept as float32
    img = np.rint(img * np.float32(preset.output_scale * math.exp(rng.normal(0.0, 0.1))))

    affine = np.diag([sp, sp, dz, 1.0])
    affine[:3, 3] = (
        -(nx - 1) / 2.0 * sp + anat.table[0],
        -(ny - 1) / 2.0 * sp + anat.table[1],
        anat.table[2] + zs[0],
    )
    return img.astype(np.float32), label, affine


# --------------------------------------------------------------------------- domains on disk


def case_seed(seed: int, preset_name: str, index: int, paired: bool = False) -> int:
    """Stable per-case seed: from ``(seed, preset, index)``, or ``(seed, index)`` when paired."""
    key = f"segshift.phantom:{int(seed)}:{'paired' if paired else preset_name}:{int(index)}"
    return zlib.crc32(key.encode("utf-8"))


def generate_domain(
    out_dir: str | Path,
    preset_name: str | DomainPreset,
    n_cases: int,
    seed: int,
    paired: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write one phantom domain folder (``domain.json``, ``images/``, ``labels/``) atomically.

    Args:
        out_dir: the domain folder to create.
        preset_name: a preset name from :data:`PRESETS` (or a :class:`DomainPreset`).
        n_cases: number of cases (ids ``case000``, ``case001``, ...).
        seed: dataset seed.
        paired: use the same anatomies as every other domain generated with this seed
            (same patients in several sequences); otherwise each domain has its own patients.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        ``out_dir``.

    Raises:
        SegshiftError: unknown preset, ``n_cases < 1``, or ``out_dir`` exists without ``overwrite``.
    """
    from segshift.data.domain import CARDIAC_LABELS, DomainSpec, DomainWriter
    from segshift.utils.atomic import atomic_dir

    preset = get_preset(preset_name)
    if int(n_cases) < 1:
        raise SegshiftError(f"phantom: the number of cases must be at least 1, got {n_cases}")
    out_dir = Path(out_dir)
    seeds = [case_seed(seed, preset.name, i, paired) for i in range(int(n_cases))]
    spec = DomainSpec(
        name=preset.name,
        labels=dict(CARDIAC_LABELS),
        modality="MR",
        sequence=preset.sequence,
        vendor=preset.vendor,
        centre="synthetic",
        description=preset.description,
        provenance={
            "generator": "segshift.phantom",
            "seed": int(seed),
            "paired": bool(paired),
            "n_cases": int(n_cases),
            "case_seeds": seeds,
            "preset": preset.to_dict(),
        },
    )
    workers = max(1, min(4, os.cpu_count() or 1, len(seeds)))
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writer = DomainWriter(tmp, spec)
        # cases are independent: render in threads (NumPy and zlib release the GIL) and
        # write in order from this thread; the result does not depend on the thread count
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, (image, label, affine) in enumerate(pool.map(lambda cs: make_case(preset, cs), seeds)):
                writer.add(f"case{i:03d}", image, affine, label)
        writer.close()
    return out_dir


def generate_phantom(
    out_root: str | Path,
    presets: Iterable[str | DomainPreset] = tuple(PRESETS),
    n_cases: int = 20,
    seed: int = 0,
    paired: bool = False,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write several phantom domains, one folder per preset under ``out_root``.

    Args:
        out_root: parent folder; each domain goes to ``out_root/<preset name>``.
        presets: preset names (or presets); default all of :data:`PRESETS`.
        n_cases: cases per domain.
        seed: dataset seed.
        paired: same anatomies across domains (see :func:`generate_domain`).
        overwrite: replace existing domain folders.

    Returns:
        Preset name -> domain folder, in the order given.

    Raises:
        SegshiftError: unknown preset (checked for all before anything is written),
            duplicate presets, or an existing folder without ``overwrite``.
    """
    resolved = [get_preset(p) for p in presets]
    names = [p.name for p in resolved]
    if not resolved:
        raise SegshiftError("phantom: no presets given")
    if len(set(names)) != len(names):
        raise SegshiftError(f"phantom: duplicate presets in {names}")
    out_root = Path(out_root)
    if not overwrite:
        for name in names:
            dest = out_root / name
            if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
                raise SegshiftError(f"{dest}: folder exists and is not empty (use --overwrite to replace it)")
    return {p.name: generate_domain(out_root / p.name, p, n_cases, seed, paired, overwrite) for p in resolved}
