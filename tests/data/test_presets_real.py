"""The three public presets import ../shared/data/cardiac as its data card describes.

Skipped, with the reason printed, where ../shared is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.data.importer import run_import
from segshift.data.presets import PRESET_NAMES, get_preset

pytestmark = pytest.mark.real_data

# (cases, labelled, in-plane spacing range mm, slice spacing range mm) from the data card
CARD = {
    "acdc": (60, 60, (0.7, 1.95), (5.0, 10.0)),
    "mscmr_bssfp": (20, 20, (1.24, 1.26), (7.9, 8.1)),
    "mscmr_lge": (30, 5, (0.72, 0.77), (4.9, 5.1)),
}


@pytest.fixture(scope="module")
def imported(shared_cardiac, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    return {name: (run_import(shared_cardiac / name, out / name, get_preset(name)), Domain(out / name)) for name in PRESET_NAMES}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_counts_ids_and_spacing_match_the_data_card(imported, name):
    report, dom = imported[name]
    n_cases, n_labelled, inplane, through = CARD[name]
    assert len(dom) == n_cases and len(dom.labelled_cases) == n_labelled
    assert report.unmatched == []
    assert dom.spec.labels == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    for case in dom.labelled_cases[:: max(1, n_labelled // 6)]:
        img, lab = dom.load(case)
        si, sj, sk = img.spacing
        assert inplane[0] <= si <= inplane[1] and abs(si - sj) < 1e-3
        assert through[0] <= sk <= through[1]
        assert set(np.unique(lab.array).tolist()) == {0, 1, 2, 3}
        # anatomy check that catches a wrong label map: the LV blood pool is ringed by MYO
        lv = lab.array == 1
        ring = ndi.binary_dilation(lv, structure=np.ones((3, 3, 1), bool)) & ~lv
        assert np.mean(lab.array[ring] == 2) > 0.8, case
        # ... and the RV never touches the LV blood pool directly
        rv_ring = ndi.binary_dilation(lab.array == 3, structure=np.ones((3, 3, 1), bool))
        assert np.mean(lab.array[rv_ring] == 1) < 0.01, case


def test_acdc_spacing_comes_from_pixdim(imported):
    report, dom = imported["acdc"]
    assert sum("pixdim" in n for n in dom.spec.provenance["notes"]) == 60
    img = dom.load_image("patient071_frame01")
    np.testing.assert_allclose(img.spacing, (1.5625, 1.5625, 10.0), atol=1e-4)


def test_case_names_link_bssfp_and_lge_patients(imported):
    _, bssfp = imported["mscmr_bssfp"]
    _, lge = imported["mscmr_lge"]
    assert bssfp.cases == [f"patient{n:02d}" for n in range(1, 21)]
    assert lge.labelled_cases == ["patient01", "patient08", "patient29", "patient36", "patient41"]


@pytest.mark.slow  # ~5 s; the presets' import of the real data is checked by the module's fixture, the CLI import on the phantom
def test_cli_one_line_import(shared_cardiac, tmp_path, capsys):
    assert main(["import", str(shared_cardiac / "mscmr_bssfp"), str(tmp_path / "b"), "--preset", "mscmr_bssfp"]) == 0
    assert "20 cases (20 labelled, 0 unlabelled)" in capsys.readouterr().out
    # the same import spelled out without the preset
    args = [
        "import",
        str(shared_cardiac / "mscmr_bssfp"),
        str(tmp_path / "b2"),
        "--images",
        "images",
        "--labels",
        "labels",
        "--image-pattern",
        r"image_(?P<case>\d+)",
        "--label-pattern",
        r"label_(?P<case>\d+)",
        "--case-template",
        "patient{case:0>2}",
        "--label-map",
        "500=LV,200=MYO,600=RV",
        "--require-labels",
    ]
    assert main(args) == 0
    a, b = Domain(tmp_path / "b"), Domain(tmp_path / "b2")
    assert a.cases == b.cases
    np.testing.assert_array_equal(a.load_label("patient07").array, b.load_label("patient07").array)
