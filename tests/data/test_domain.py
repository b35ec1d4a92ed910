"""The domain contract: domain.json validation, label ids, geometry of label vs image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segshift.data.domain import CARDIAC_LABELS, Domain, DomainSpec, DomainWriter, parse_label_names
from segshift.data.volume import write_nifti
from segshift.errors import InputFileError, SegshiftError
from segshift.utils.atomic import atomic_dir
from tests.conftest import oblique_affine, toy_case


def make_domain(root, n=2, labelled=1):
    with atomic_dir(root) as tmp:
        w = DomainWriter(tmp, DomainSpec(name="toy", sequence="bSSFP"))
        for k in range(n):
            img, lab = toy_case(seed=k)
            w.add(f"case{k}", img, oblique_affine(), lab if k < labelled else None)
        w.close()
    return Domain(root)


def test_written_domain_reads_back(tmp_path):
    dom = make_domain(tmp_path / "d", n=3, labelled=2)
    assert dom.cases == ["case0", "case1", "case2"]
    assert dom.labelled_cases == ["case0", "case1"] and dom.unlabelled_cases == ["case2"]
    img, lab = dom.load("case1")
    np.testing.assert_array_equal(lab.array, toy_case(seed=1)[1])
    np.testing.assert_allclose(img.affine, oblique_affine(), atol=1e-5)
    assert dom.load("case2")[1] is None
    assert dom.spec.structures == {"LV": 1, "MYO": 2, "RV": 3}
    facts = dom.validate()
    assert "3 cases (2 labelled, 1 unlabelled)" in facts[0]


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"labels": CARDIAC_LABELS}, "'name'"),
        ({"name": "x"}, "'labels'"),
        ({"name": "x", "labels": {"background": 0, "LV": 1, "RV": 1}}, "not unique"),
        ({"name": "x", "labels": {"LV": 0}}, "id 0 must be 'background'"),
        ({"name": "x", "labels": {"LV": -1}}, "non-negative"),
        ({"name": "x", "labels": {"LV": "one"}}, "non-negative integer"),
        ({"name": "x", "labels": CARDIAC_LABELS, "format": "other"}, "format"),
        ({"name": "x", "labels": CARDIAC_LABELS, "version": 99}, "newer"),
    ],
)
def test_bad_domain_json(tmp_path, doc, message):
    make_domain(tmp_path / "d")
    (tmp_path / "d" / "domain.json").write_text(json.dumps(doc))
    with pytest.raises(SegshiftError, match=message):
        Domain(tmp_path / "d")


def test_label_problems_are_named(tmp_path):
    dom = make_domain(tmp_path / "d", n=2, labelled=1)
    write_nifti(dom.label_path("case0"), np.full((40, 48, 6), 9, np.uint8), oblique_affine())
    with pytest.raises(InputFileError, match=r"case0\.nii\.gz: label ids \[9\] are not declared"):
        dom.load("case0")
    write_nifti(dom.label_path("case0"), np.zeros((40, 48, 6), np.uint8), oblique_affine(angle_deg=3))
    with pytest.raises(InputFileError, match=r"case0\.nii\.gz: geometry differs"):
        dom.load("case0")
    write_nifti(tmp_path / "d" / "labels" / "ghost.nii.gz", np.zeros((2, 2, 2), np.uint8), np.eye(4))
    with pytest.raises(InputFileError, match="labels without an image: ghost"):
        Domain(tmp_path / "d")


def test_missing_parts(tmp_path):
    with pytest.raises(InputFileError, match="is not a folder"):
        Domain(tmp_path / "none")
    (tmp_path / "e").mkdir()
    with pytest.raises(InputFileError, match="domain.json"):
        Domain(tmp_path / "e")
    (tmp_path / "e" / "domain.json").write_text(json.dumps({"name": "e", "labels": CARDIAC_LABELS}))
    with pytest.raises(InputFileError, match="images/"):
        Domain(tmp_path / "e")
    (tmp_path / "e" / "images").mkdir()
    with pytest.raises(InputFileError, match="holds no .nii"):
        Domain(tmp_path / "e")


def test_4d_image_in_a_domain_is_rejected(tmp_path):
    dom = make_domain(tmp_path / "d")
    write_nifti(dom.image_path("case1"), np.zeros((4, 4, 3, 2), np.float32), np.eye(4))
    with pytest.raises(InputFileError, match=r"case1\.nii\.gz: domain images must be 3D"):
        dom.load_image("case1")


def test_parse_label_names():
    assert parse_label_names("LV=1,MYO=2,RV=3") == CARDIAC_LABELS
    assert parse_label_names("liver=1") == {"background": 0, "liver": 1}
    with pytest.raises(SegshiftError, match="NAME=ID"):
        parse_label_names("LV")
    with pytest.raises(SegshiftError, match="not an integer"):
        parse_label_names("LV=a")


def test_writer_rejects_duplicates_and_bad_ids(tmp_path):
    w = DomainWriter(tmp_path / "w", DomainSpec(name="w"))
    img, lab = toy_case()
    w.add("a", img, np.eye(4), lab)
    with pytest.raises(SegshiftError, match="duplicate case id"):
        w.add("a", img, np.eye(4))
    with pytest.raises(SegshiftError, match="invalid case id"):
        w.add("../x", img, np.eye(4))
