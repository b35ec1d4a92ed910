"""Augmentation presets: gin-authors draws the GIN-IPA authors' ranges; explicit keys override a preset."""

from __future__ import annotations

import math

import pytest
import torch

from segshift.cli.main import main
from segshift.engine.config import base_defaults, resolve
from segshift.errors import SegshiftError
from segshift.transforms.augment import AUGMENT_PRESETS, AugmentConfig, augment_batch, intensity, spatial_params
from segshift.transforms.ops import elastic_field, warp
from tests.transforms.test_augment_default_digest import _batch

GIN_AUTHORS = ["augment.preset=gin-authors"]


def _augment_section(*sets: str) -> dict:
    return resolve("source-only", sets=list(sets))["augment"]


def test_preset_fills_the_section_and_explicit_keys_win(tmp_path):
    default, preset = _augment_section(), _augment_section(*GIN_AUTHORS)
    base = base_defaults()["augment"]
    assert default == base and default["preset"] == "default"
    assert AugmentConfig.from_dict(base) == AugmentConfig()  # a config.yaml saved without the new keys reads as the defaults
    assert preset["preset"] == "gin-authors" and preset["translate"] == 15 / 192
    for key, value in AUGMENT_PRESETS["gin-authors"].items():
        assert preset[key] == value, key
    changed = {k for k, v in AUGMENT_PRESETS["gin-authors"].items() if base[k] != v}
    assert {k for k in base if preset[k] != base[k]} == changed | {"preset"}  # nothing else is touched
    # --set beats the preset wherever it is given; a --config file naming the preset is the same
    assert _augment_section("augment.rotate_deg=5", *GIN_AUTHORS)["rotate_deg"] == 5.0
    user = tmp_path / "u.yaml"
    user.write_text("augment:\n  preset: gin-authors\n  elastic_alpha: 0.0\n")
    cfg = resolve("gin-ipa", [user])
    assert cfg["augment"]["elastic_alpha"] == 0.0 and cfg["augment"]["shear_deg"] == 20.0
    assert cfg["augment"]["gin"]["enabled"] is True  # the method's YAML still applies
    assert AugmentConfig.from_dict(cfg["augment"]).preset == "gin-authors"


def test_unknown_preset_is_refused_with_the_known_names(tmp_path, capsys):
    with pytest.raises(SegshiftError, match=r"augment\.preset: unknown preset 'gin' \(known: default, gin-authors\)"):
        resolve("gin-ipa", sets=["augment.preset=gin"])
    with pytest.raises(SegshiftError, match="augment.preset: expected a string, got 3"):
        resolve("gin-ipa", sets=["augment.preset=3"])
    with pytest.raises(SegshiftError, match="unknown preset 'nope'"):  # an edited config.yaml, read by the trainer
        AugmentConfig.from_dict({"preset": "nope"})
    src = tmp_path / "src"
    src.mkdir()
    argv = ["train", "-m", "gin-ipa", "-s", str(src), "-o", str(tmp_path / "run"), "--set", "augment.preset=gin", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown preset 'gin' (known: default, gin-authors)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["augment.shear_deg=70"], r"augment\.shear_deg"),
        (["augment.elastic_sigma=0.1"], r"augment\.elastic_sigma"),
        (["augment.elastic_alpha=-1"], r"augment\.elastic_alpha"),
        (["augment.noise_std_min=-0.1"], r"augment\.noise_std_min"),
    ],
)
def test_new_keys_are_range_checked(sets, message):
    with pytest.raises(SegshiftError, match=message):
        resolve("source-only", sets=sets)


def test_noise_std_min_above_noise_std_is_refused():
    with pytest.raises(SegshiftError, match=r"augment\.noise_std_min must be in \[0, augment\.noise_std\]"):
        AugmentConfig.from_dict(_augment_section("augment.noise_std_min=0.3", "augment.noise_std=0.1"))


def _decompose(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rotation (deg), scale, shear (deg) and shift (crop fractions) of ``R(a) S(shear) / scale``."""
    lin = theta[:, :, :2].double()
    scale = 1 / torch.linalg.det(lin).sqrt()
    m = lin * scale.view(-1, 1, 1)
    angle = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    c, s = torch.cos(angle), torch.sin(angle)
    rot_t = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1)  # R(a)^T
    shear = rot_t @ m
    assert torch.allclose(shear[:, 0, 0], torch.ones_like(c)) and torch.allclose(shear[:, 1, 1], torch.ones_like(c))
    assert shear[:, 1, 0].abs().max() < 1e-6
    return {
        "angle": torch.rad2deg(angle),
        "scale": scale,
        "shear": torch.rad2deg(torch.atan(shear[:, 0, 1])),
        "shift": theta[:, :, 2].double().flatten() / 2,
    }


def test_gin_authors_spatial_draws_span_the_authors_ranges():
    cfg = AugmentConfig.from_dict(_augment_section(*GIN_AUTHORS))
    p = _decompose(spatial_params(2000, cfg, torch.Generator().manual_seed(0)))
    for key, half in (("angle", 20.0), ("shear", 20.0), ("shift", 15 / 192)):
        v = p[key]
        assert v.abs().max() <= half * (1 + 1e-6), key
        assert v.min() < -0.97 * half and v.max() > 0.97 * half, key  # covers the range
        assert abs(float(v.mean())) < 0.05 * half and float(v.std()) == pytest.approx(half / math.sqrt(3), rel=0.05), key
    s = p["scale"]
    assert 0.5 - 1e-6 <= s.min() < 0.51 and 1.49 < s.max() <= 1.5 + 1e-6
    assert float(s.mean()) == pytest.approx(1.0, abs=0.02)


def test_default_spatial_draws_have_no_shear():
    p = _decompose(spatial_params(500, AugmentConfig.from_dict(_augment_section()), torch.Generator().manual_seed(0)))
    assert p["shear"].abs().max() < 1e-4 and p["angle"].abs().max() <= 15 + 1e-4


def test_elastic_field_has_the_std_and_smoothness_alpha_and_sigma_imply():
    alpha, sigma, size = 20.0, 5.0, 128
    d = elastic_field(8, (size, size), alpha, sigma, torch.Generator().manual_seed(0)).double()
    inner = d[..., 20:-20, 20:-20]  # away from the replicated edges
    r = math.ceil(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = k / k.sum()
    expected = alpha / math.sqrt(3) * float((k**2).sum())  # U(-1, 1) has variance 1/3; the 2D kernel is k x k
    assert expected == pytest.approx(alpha / (2 * math.sqrt(3 * math.pi) * sigma), rel=0.01)  # the continuous limit
    assert float(inner.std()) == pytest.approx(expected, rel=0.05) and abs(float(inner.mean())) < 0.05 * expected
    # a Gaussian-smoothed white noise correlates as exp(-lag^2 / (4 sigma^2)): exp(-1/4) at lag sigma
    a, b = inner[..., :, : -int(sigma)].flatten(), inner[..., :, int(sigma) :].flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) == pytest.approx(math.exp(-0.25), abs=0.05)


def test_labels_follow_the_image_through_the_gin_authors_warp():
    sets = [*GIN_AUTHORS, "augment.gamma=[1, 1]", "augment.contrast=[1, 1]", "augment.brightness=0", "augment.noise_std=0"]
    sets.append("augment.noise_std_min=0")
    cfg = AugmentConfig.from_dict(_augment_section(*sets))
    _, lab = _batch()
    lab = torch.nn.functional.interpolate(lab[:, None].float(), size=(96, 96), mode="nearest")[:, 0].long()
    img = lab[:, None].float() * 10.0  # the image is its label map
    out, olab = augment_batch(img, lab, cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(olab, lab)  # the geometry changed ...
    agree = (torch.round(out[:, 0] / 10).long() == olab).float().mean()
    assert agree > 0.97, float(agree)  # ... and labels moved with the image (they differ at edges only)


def test_a_warp_and_its_inverse_give_the_label_back():
    cfg = AugmentConfig.from_dict(_augment_section(*GIN_AUTHORS, "augment.scale=[0.8, 1.25]"))
    _, lab = _batch()
    theta = spatial_params(len(lab), cfg, torch.Generator().manual_seed(2))
    full = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(len(lab), 1, 3)], 1)
    inverse = torch.linalg.inv(full.double()).float()[:, :2]
    img = lab[:, None].float()
    _, there = warp(img, theta, lab)
    _, back = warp(img, inverse, there)
    grid = torch.nn.functional.affine_grid(inverse, list(img.shape), align_corners=False)  # where each pixel went
    kept = (grid.abs() < 0.9).all(-1)
    assert not torch.equal(there, lab)
    assert (back == lab)[kept].float().mean() > 0.97


def test_gin_authors_intensity_noise_and_brightness():
    cfg = AugmentConfig.from_dict(_augment_section(*GIN_AUTHORS))
    flat = torch.zeros(400, 1, 32, 32)  # gamma and contrast leave a constant image alone
    out = intensity(flat, cfg, torch.Generator().manual_seed(0))
    shift = out.mean(dim=(1, 2, 3))
    assert shift.abs().max() < 10.1 and shift.min() < -9.5 and shift.max() > 9.5
    noise = out - out.mean(dim=(1, 2, 3), keepdim=True)
    assert float(noise.std(dim=(1, 2, 3)).min()) == pytest.approx(0.15, rel=0.1)
    assert float(noise.std(dim=(1, 2, 3)).max()) == pytest.approx(0.15, rel=0.1)  # a fixed std, not U(0, 0.15)


def test_gin_authors_augmentation_is_reproducible_and_resumable():
    cfg = AugmentConfig.from_dict(_augment_section(*GIN_AUTHORS))
    img, lab = _batch()
    g = torch.Generator().manual_seed(5)
    first = augment_batch(img, lab, cfg, g)
    state = g.get_state()  # what a checkpoint keeps
    second = augment_batch(img, lab, cfg, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    again = augment_batch(img, lab, cfg, resumed)
    assert torch.equal(second[0], again[0]) and torch.equal(second[1], again[1])
    assert not torch.equal(first[0], second[0]) and torch.isfinite(second[0]).all()
