"""Preprocessing: physical resampling, heart-centred crops, intensity steps, exact inversion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segshift.data.volume import Volume
from segshift.errors import SegshiftError
from segshift.transforms import PreprocessConfig, Preprocessor, intensity, spatial
from tests.conftest import oblique_affine, toy_case


def vol(array, spacing=(0.75, 0.75, 8.0), angle=20.0):
    return Volume(array=array, affine=oblique_affine(spacing=spacing, angle_deg=angle))


@pytest.mark.parametrize(("spacing", "target", "n_in", "n_out"), [(0.75, 1.25, 400, 240), (1.5625, 1.25, 192, 240), (1.25, 1.25, 256, 256)])
def test_resampled_size_preserves_field_of_view(spacing, target, n_in, n_out):
    assert spatial.resampled_size(n_in, spacing, target) == n_out


def test_resize_maps_pixel_centres():
    # a linear ramp stays a linear ramp on the new grid: value at output pixel u is (u+0.5)*r-0.5
    ramp = np.tile(np.arange(12, dtype=np.float32), (1, 6, 1))  # (1, 6, 12)
    out = spatial.resize_inplane(ramp, (6, 24), order=1)
    expected = np.clip((np.arange(24) + 0.5) * 0.5 - 0.5, 0, 11)
    np.testing.assert_allclose(out[0, 3], expected, atol=1e-5)


def test_label_areas_in_mm2_survive_resampling():
    img, lab = toy_case(shape=(80, 96, 3), scale=2.5)  # heart-sized at 0.75 mm
    pre = Preprocessor(PreprocessConfig(target_spacing=1.25, crop_size=None))
    p = pre.apply(vol(img), vol(lab))
    assert p.image.shape == (3, 48, 58)  # 80*0.75/1.25, 96*0.75/1.25 rounded
    for k in (1, 2, 3):
        mm2_in = (lab == k).sum() * 0.75**2
        mm2_out = (p.label == k).sum() * 1.25**2
        assert abs(mm2_out / mm2_in - 1) < 0.03, (k, mm2_out / mm2_in)


def test_default_crop_is_the_image_centre_labelled_or_not():
    """Labelled and unlabelled cases are cropped alike: the crop position tells no domain apart."""
    img, lab = toy_case(shape=(60, 60, 2))
    lab = np.roll(lab, (12, -9), axis=(0, 1))
    img = np.roll(img, (12, -9), axis=(0, 1))
    pre = Preprocessor(PreprocessConfig(target_spacing=None, crop_size=(32, 32)))
    with_label, without = pre.apply(vol(img), vol(lab)), pre.apply(vol(img))
    assert with_label.geometry.center_source == without.geometry.center_source == "image"
    assert with_label.geometry.corner == without.geometry.corner == (14, 14)
    np.testing.assert_array_equal(with_label.image, without.image)


def test_legacy_label_policy_centres_on_the_label_then_falls_back_to_image_centre():
    img, lab = toy_case(shape=(60, 60, 2))
    lab = np.roll(lab, (12, -9), axis=(0, 1))
    img = np.roll(img, (12, -9), axis=(0, 1))
    pre = Preprocessor(PreprocessConfig(target_spacing=None, crop_size=(32, 32), crop_center="label"))
    p = pre.apply(vol(img), vol(lab))
    assert p.geometry.center_source == "label"
    ii, jj = np.nonzero(p.label[0])
    assert abs(ii.mean() - 15.5) < 1.5 and abs(jj.mean() - 15.5) < 1.5
    q = pre.apply(vol(img))
    assert q.geometry.center_source == "image" and q.geometry.corner == (14, 14)
    r = pre.apply(vol(img), localiser=lambda s: (42.0, 21.0))
    assert r.geometry.center_source == "localiser" and r.geometry.corner == (26, 5)


def test_invert_restores_the_input_grid_exactly():
    img, lab = toy_case(shape=(70, 64, 4), scale=2.0)
    image, label = vol(img, spacing=(0.8, 0.8, 10)), vol(lab, spacing=(0.8, 0.8, 10))
    pre = Preprocessor(PreprocessConfig(target_spacing=1.25, crop_size=(40, 40), crop_center="label"))
    p = pre.apply(image, label)
    back = pre.invert(p.label, p.geometry)
    assert back.shape == lab.shape and back.dtype == lab.dtype
    probs = np.eye(4, dtype=np.float32)[p.label].transpose(3, 0, 1, 2)
    back_p = pre.invert(probs, p.geometry)
    assert back_p.shape == (4,) + lab.shape
    np.testing.assert_allclose(back_p.sum(0), 1.0, atol=1e-5)
    for k in (1, 2, 3):
        for pred in (back, back_p.argmax(0)):
            dice = 2 * ((pred == k) & (lab == k)).sum() / ((pred == k).sum() + (lab == k).sum())
            assert dice > 0.95, (k, dice)
    np.testing.assert_allclose(np.asarray(p.geometry.affine), image.affine)


def test_intensity_steps():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 20, (10, 30, 30)).astype(np.float32)
    x[0, 0, 0] = 1e6  # outlier removed by clipping
    pre = Preprocessor(PreprocessConfig(target_spacing=None, crop_size=None))
    p = pre.apply(Volume(np.transpose(x, (1, 2, 0)), np.eye(4)))
    assert abs(p.image.mean()) < 1e-4 and abs(p.image.std() - 1) < 1e-3
    assert p.image.max() < 4.0


def test_histogram_matching_removes_a_monotone_contrast_change():
    rng = np.random.default_rng(0)
    ref = [rng.gamma(2.0, 30.0, (20, 20, 5)) for _ in range(3)]
    target = 5.0 * np.sqrt(rng.gamma(2.0, 30.0, (20, 20, 5))) + 7.0  # same law, monotone remap
    pre = Preprocessor(PreprocessConfig(target_spacing=None, crop_size=None, histmatch=True, normalise="none", clip_percentiles=None))
    pre.fit_histogram_reference(ref)
    matched = intensity.match_histogram(target, pre.reference)
    q = np.linspace(0.05, 0.95, 10)
    ref_q = np.mean([np.quantile(intensity.minmax(r), q) for r in ref], axis=0)
    np.testing.assert_allclose(np.quantile(matched, q), ref_q, atol=0.02)
    assert intensity.match_histogram(np.zeros((4, 4)), pre.reference).std() == 0


def test_histmatch_without_reference_is_an_error():
    pre = Preprocessor(PreprocessConfig(histmatch=True))
    with pytest.raises(SegshiftError, match="no reference was fitted"):
        pre.apply(vol(np.ones((20, 20, 2), np.float32)))


def test_serialisation_roundtrip_repeats_preprocessing_exactly(tmp_path):
    img, lab = toy_case()
    pre = Preprocessor(PreprocessConfig(target_spacing=1.1, crop_size=(32, 36), histmatch=True))
    pre.fit_histogram_reference([img])
    pre.save(tmp_path / "preprocess.json")
    again = Preprocessor.load(tmp_path / "preprocess.json")
    assert again.to_dict() == pre.to_dict() and again.fingerprint() == pre.fingerprint()
    a, b = pre.apply(vol(img), vol(lab)), again.apply(vol(img), vol(lab))
    np.testing.assert_array_equal(a.image, b.image)
    doc = json.loads((tmp_path / "preprocess.json").read_text())
    doc["config"]["evil"] = "__import__('os')"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(SegshiftError, match="unknown preprocessing fields"):
        Preprocessor.load(tmp_path / "bad.json")
    (tmp_path / "trunc.json").write_text((tmp_path / "preprocess.json").read_text()[:50])
    with pytest.raises(SegshiftError, match=r"trunc\.json: is not valid JSON"):
        Preprocessor.load(tmp_path / "trunc.json")


@pytest.mark.parametrize(
    "kwargs",
    [dict(target_spacing=0), dict(crop_size=(0, 10)), dict(crop_center="heart"), dict(clip_percentiles=(50, 10)), dict(normalise="l2")],
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(SegshiftError, match="preprocess"):
        PreprocessConfig(**kwargs)


def test_nan_and_4d_rejected():
    a = np.ones((10, 10, 2), np.float32)
    a[0, 0, 0] = np.nan
    with pytest.raises(SegshiftError, match="NaN/Inf"):
        Preprocessor().apply(Volume(a, np.eye(4)))
    with pytest.raises(SegshiftError, match="3D volume"):
        Preprocessor().apply(Volume(np.ones((4, 4, 2, 2)), np.eye(4)))
