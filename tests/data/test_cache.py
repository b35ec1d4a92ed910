"""Slice cache: built once, served without touching NIfTI, memory-mapped, keyed on inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from segshift.data.cache import SliceCache
from segshift.data.domain import CARDIAC_LABELS, Domain, DomainSpec, DomainWriter
from segshift.data.sampling import BatchStream
from segshift.transforms import PreprocessConfig, Preprocessor
from segshift.utils.atomic import atomic_dir
from tests.conftest import oblique_affine, toy_case


@pytest.fixture
def domain(tmp_path):
    with atomic_dir(tmp_path / "dom") as tmp:
        w = DomainWriter(tmp, DomainSpec(name="toy", labels=dict(CARDIAC_LABELS)))
        for n in range(3):
            img, lab = toy_case(shape=(40, 48, 4 + n), seed=n)
            w.add(f"c{n}", img, oblique_affine(spacing=(1.0, 1.0, 8.0)), lab if n < 2 else None)
        w.close()
    return Domain(tmp_path / "dom")


PRE = Preprocessor(PreprocessConfig(target_spacing=1.25, crop_size=(32, 32)))


def test_cache_holds_every_slice_and_is_reused(domain, tmp_path):
    cache = SliceCache.build(domain, PRE, tmp_path / "cache")
    assert cache.cases == ["c0", "c1"] and len(cache) == 4 + 5
    assert cache.images.shape == (9, 32, 32) and cache.labels.dtype == np.uint8
    assert isinstance(cache.images, np.memmap)
    again = SliceCache.build(domain, PRE, tmp_path / "cache")
    assert again.root == cache.root
    other = SliceCache.build(domain, Preprocessor(PreprocessConfig(target_spacing=1.0, crop_size=(32, 32))), tmp_path / "cache")
    assert other.root != cache.root


def test_epochs_never_reopen_nifti(domain, tmp_path, monkeypatch):
    cache = SliceCache.build(domain, PRE, tmp_path / "cache", in_memory=True)
    import nibabel

    def boom(*a, **k):
        raise AssertionError("NIfTI re-read during an epoch")

    monkeypatch.setattr(nibabel, "load", boom)
    for idx in itertools.islice(BatchStream(len(cache), 4, seed=0), 6):  # three epochs, drawn as training draws them
        images, labels = cache.batch(idx)
        assert images.shape == labels.shape == (4, 32, 32) and images.dtype == np.float32 and labels.dtype == np.uint8
    images, labels = cache.batch(np.arange(len(cache)))
    assert images.shape == (9, 32, 32) and labels.any(axis=(1, 2)).all()
    # a rebuilt cache object with the same key is served from disk without reading NIfTI either
    assert len(SliceCache.build(domain, PRE, tmp_path / "cache")) == 9


def test_unlabelled_cache_never_opens_label_files(domain, tmp_path):
    for p in (domain.root / "labels").iterdir():
        p.chmod(0o000)
        p.write_bytes(b"") if False else None
    # even unreadable label files are not touched when labels are not requested
    (domain.root / "labels" / "c0.nii.gz").rename(domain.root / "labels" / "c0.nii.gz")
    cache = SliceCache.build(domain, PRE, tmp_path / "cache", with_labels=False)
    assert cache.labels is None and len(cache) == 4 + 5 + 6
    images, labels = cache.batch(np.array([0, 14]))
    assert images.shape == (2, 32, 32) and labels is None


def test_changed_input_invalidates_the_cache(domain, tmp_path):
    a = SliceCache.build(domain, PRE, tmp_path / "cache")
    img, lab = toy_case(shape=(40, 48, 4), seed=9)
    from segshift.data.volume import write_nifti

    write_nifti(domain.image_path("c0"), img, oblique_affine(spacing=(1.0, 1.0, 8.0)))
    b = SliceCache.build(Domain(domain.root), PRE, tmp_path / "cache")
    assert a.root != b.root
    assert not np.array_equal(np.asarray(a.images[:4]), np.asarray(b.images[:4]))


def test_labelled_request_on_unlabelled_case_is_an_error(domain, tmp_path):
    with pytest.raises(Exception, match="without labels requested with labels: c2"):
        SliceCache.build(domain, PRE, tmp_path / "cache", cases=["c0", "c2"])
