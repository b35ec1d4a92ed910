"""The synthetic multi-domain phantom: determinism, anatomy, geometry, domain gap, I/O, CLI, figure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from segshift.data.domain import Domain
from segshift.data.phantom import PRESETS, case_seed, generate_domain, generate_phantom, make_case, sample_anatomy
from segshift.errors import SegshiftError

SEEDS = (0, 1, 2, 3)
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)[:, :, None]


@pytest.fixture(scope="module")
def cases() -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """A few rendered cases per preset (same seeds, hence same anatomies, in every preset)."""
    return {name: [make_case(name, s) for s in SEEDS] for name in PRESETS}


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_phantom(tmp_path_factory.mktemp("phantom"), presets=list(PRESETS), n_cases=3, seed=7)


def test_deterministic_in_the_seed() -> None:
    a = make_case("bssfp", 11)
    b = make_case("bssfp", 11)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = make_case("bssfp", 12)
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
    assert a[1].shape != c[1].shape or not np.array_equal(a[1], c[1])
    assert sample_anatomy(11) == sample_anatomy(11) != sample_anatomy(12)
    assert a[0].dtype == np.float32 and a[1].dtype == np.uint8
    assert np.all(np.isfinite(a[0])) and a[0].min() >= 0


@pytest.mark.parametrize(
    ("seed", "preset", "index", "paired", "expected"),
    [
        (0, "bssfp", 3, False, 3211504502),
        (0, "lge", 3, False, 637518585),
        (1, "bssfp", 3, False, 2819669813),
        (0, "bssfp", 3, True, 4259218793),
        (0, "lge", 3, True, 4259218793),
    ],
)
def test_case_seeds_are_fixed_numbers(seed, preset, index, paired, expected) -> None:
    # literals: the same phantom in every process and on every machine (a str hash() would vary per process)
    assert case_seed(seed, preset, index, paired=paired) == expected


@pytest.mark.parametrize("name", list(PRESETS))
def test_labels_are_anatomically_sane(cases, name: str) -> None:
    for _, lab, _ in cases[name]:
        assert set(np.unique(lab).tolist()) <= {0, 1, 2, 3}
        lv, myo, rv = lab == 1, lab == 2, lab == 3
        assert lv.any() and myo.any() and rv.any()
        # the myocardium surrounds the LV cavity: the LV never touches background or RV
        ring = ndi.binary_dilation(lv, structure=_CROSS, iterations=2) & ~lv
        assert (myo[ring].mean()) > 0.97
        assert not (ndi.binary_dilation(lv, structure=_CROSS) & (lab == 0)).any()
        # the RV is attached to the myocardium (septum) in every slice where it is present
        for k in np.flatnonzero(rv.any(axis=(0, 1))):
            assert (ndi.binary_dilation(rv[:, :, k], iterations=1) & myo[:, :, k]).any()
        # cavities shrink towards the apex; the RV ends before the LV; the apex is myocardium
        lv_area, rv_area = lv.sum(axis=(0, 1)), rv.sum(axis=(0, 1))
        labelled = np.flatnonzero(lab.any(axis=(0, 1)))
        with_lv = np.flatnonzero(lv_area)
        assert lv_area[with_lv[-1]] < 0.5 * lv_area[with_lv[0]]
        assert lv_area[: len(lv_area) // 2].max() > lv_area[len(lv_area) // 2 :].max()
        assert np.flatnonzero(rv_area).max() <= with_lv.max()
        assert myo[:, :, labelled[-1]].any()
        assert rv_area[-1] <= rv_area[labelled[0]]


@pytest.mark.parametrize("name", list(PRESETS))
def test_affine_matches_the_preset(cases, name: str) -> None:
    p = PRESETS[name]
    for img, lab, aff in cases[name]:
        assert img.shape == lab.shape and img.shape[:2] == tuple(p.matrix)
        np.testing.assert_allclose(np.diag(aff)[:3], [p.spacing_mm, p.spacing_mm, p.slice_thickness_mm])
        np.testing.assert_allclose(aff[:3, :3], np.diag(np.diag(aff)[:3]))
        assert np.abs(aff[:3, 3]).max() > 1.0  # a real origin, not the identity
        assert img.shape[2] >= 5


def _ratio(img: np.ndarray, lab: np.ndarray, a: int, b: int, stat=np.median) -> float:
    return float(stat(img[lab == a]) / stat(img[lab == b]))


def _noise(img: np.ndarray, lab: np.ndarray) -> float:
    """Robust noise / signal inside the LV blood pool (MAD of neighbour differences)."""
    inner = ndi.binary_erosion(lab == 1, structure=np.ones((3, 3, 1)), iterations=3)
    d = np.diff(img, axis=0)[inner[1:] & inner[:-1]]
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2) / np.median(img[inner]))


def test_domain_gap_is_real(cases) -> None:
    myo_lv = {n: [_ratio(i, lab, 2, 1) for i, lab, _ in cs] for n, cs in cases.items()}
    # bSSFP: bright blood, dark myocardium
    assert max(myo_lv["bssfp"]) < 0.45
    # LGE: healthy myocardium nulled (much darker relative to blood than bSSFP); bright scar in some cases
    assert max(myo_lv["lge"]) < 0.7 * min(myo_lv["bssfp"])
    scar = [np.percentile(i[lab == 2], 99.5) / np.median(i[lab == 1]) for i, lab, _ in cases["lge"]]
    assert max(scar) > 1.2
    assert max(np.percentile(i[lab == 2], 99.5) / np.median(i[lab == 1]) for i, lab, _ in cases["bssfp"]) < 0.9
    # T2 dark blood: the myocardium/blood contrast is inverted
    assert min(myo_lv["t2"]) > 1.5
    # vendor B: a different contrast curve (flatter myocardium/blood contrast)
    assert min(myo_lv["bssfp_vendorB"]) > max(myo_lv["bssfp"]) + 0.1
    # vendors B and C: noisier than vendor A, and on another intensity scale
    ref_noise = max(_noise(i, lab) for i, lab, _ in cases["bssfp"])
    for vendor in ("bssfp_vendorB", "bssfp_vendorC"):
        assert min(_noise(i, lab) for i, lab, _ in cases[vendor]) > 1.4 * ref_noise
    scale = {n: np.median([np.percentile(i, 99) for i, _, _ in cs]) for n, cs in cases.items()}
    assert scale["bssfp_vendorB"] > 2 * scale["bssfp"] > 4 * scale["bssfp_vendorC"]
    # while the anatomy is the same: equal seeds give the same volumes (mm^3) in every preset
    for name, cs in cases.items():
        for (_, lab, aff), (_, ref, ref_aff) in zip(cs, cases["bssfp"]):
            for c in (1, 2, 3):
                v = (lab == c).sum() * abs(np.linalg.det(aff[:3, :3]))
                v_ref = (ref == c).sum() * abs(np.linalg.det(ref_aff[:3, :3]))
                assert abs(v / v_ref - 1) < 0.08, (name, c)


def test_same_seed_same_geometry_gives_identical_labels() -> None:
    ref = PRESETS["bssfp"]
    lge_on_bssfp_grid = dataclasses.replace(
        PRESETS["lge"], spacing_mm=ref.spacing_mm, matrix=ref.matrix, slice_thickness_mm=ref.slice_thickness_mm
    )
    img_a, lab_a, aff_a = make_case(ref, 5)
    img_b, lab_b, aff_b = make_case(lge_on_bssfp_grid, 5)
    np.testing.assert_array_equal(lab_a, lab_b)
    np.testing.assert_array_equal(aff_a, aff_b)
    assert not np.allclose(img_a, img_b)


def test_domain_folders_open_and_validate(phantom_root: dict[str, Path]) -> None:
    assert list(phantom_root) == list(PRESETS)
    for name, path in phantom_root.items():
        dom = Domain(path)
        assert dom.name == name and dom.cases == ["case000", "case001", "case002"]
        assert dom.labelled_cases == dom.cases
        facts = dom.validate()
        assert facts[0].startswith(f"{name}: 3 cases")
        img, lab = dom.load("case001")
        assert img.spacing == pytest.approx((PRESETS[name].spacing_mm, PRESETS[name].spacing_mm, PRESETS[name].slice_thickness_mm))
        assert set(np.unique(lab.array).tolist()) == {0, 1, 2, 3}
        meta = json.loads((path / "domain.json").read_text())
        assert meta["sequence"] == PRESETS[name].sequence
        assert meta["provenance"]["generator"] == "segshift.phantom"
        assert meta["provenance"]["seed"] == 7
        assert meta["provenance"]["preset"]["spacing_mm"] == PRESETS[name].spacing_mm
    # unpaired: different patients in different domains
    seeds = {n: json.loads((p / "domain.json").read_text())["provenance"]["case_seeds"] for n, p in phantom_root.items()}
    assert seeds["bssfp"] != seeds["lge"]


def test_generation_is_reproducible_and_paired(tmp_path: Path) -> None:
    paths = generate_phantom(tmp_path / "a", presets=["bssfp", "t2"], n_cases=2, seed=3, paired=True)
    again = generate_domain(tmp_path / "b", "bssfp", n_cases=2, seed=3, paired=True)
    other = generate_domain(tmp_path / "c", "bssfp", n_cases=2, seed=4, paired=True)
    a, b, c = Domain(paths["bssfp"]), Domain(again), Domain(other)
    np.testing.assert_array_equal(a.load_image("case001").array, b.load_image("case001").array)
    assert not np.array_equal(a.load_label("case001").array, c.load_label("case001").array)
    t2 = Domain(paths["t2"])
    for case in a.cases:  # same patient in both sequences: same world geometry and volumes
        la, lt = a.load_label(case), t2.load_label(case)
        for cls in (1, 2, 3):
            va = (la.array == cls).sum() * np.prod(la.spacing)
            vt = (lt.array == cls).sum() * np.prod(lt.spacing)
            assert abs(vt / va - 1) < 0.08
    # existing folders are refused without overwrite, replaced with it
    with pytest.raises(SegshiftError, match="overwrite"):
        generate_domain(tmp_path / "b", "bssfp", n_cases=1, seed=3)
    generate_domain(tmp_path / "b", "bssfp", n_cases=1, seed=3, overwrite=True)
    assert Domain(tmp_path / "b").cases == ["case000"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_unknown_preset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SegshiftError, match="available: bssfp"):
        make_case("flair", 0)
    with pytest.raises(SegshiftError):
        generate_phantom(tmp_path, presets=["bssfp", "flair"], n_cases=1)
    assert not (tmp_path / "bssfp").exists()  # checked before anything is written


def test_comparison_figure(phantom_root: dict[str, Path], tmp_path: Path) -> None:
    from segshift.report.figures import domain_comparison_figure

    out = domain_comparison_figure([Domain(p) for p in phantom_root.values()], tmp_path / "fig" / "domains.png", n_cases=2)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert [p.name for p in out.parent.iterdir()] == ["domains.png"]


def _cli(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    """Run ``segshift.cli.main.main`` with an app that holds only the phantom command."""
    import typer

    from segshift.cli import main as cli_main
    from segshift.cli.phantom import register

    def build_app() -> typer.Typer:
        app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        app.callback()(lambda: None)  # keep the group form: ``segshift phantom ...``
        register(app)
        return app

    monkeypatch.setattr(cli_main, "build_app", build_app)
    return cli_main.main(argv)


def test_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(monkeypatch, ["phantom", "--out", str(tmp_path), "--domains", "bssfp,flair"]) == 2
    err = capsys.readouterr().err
    assert "flair" in err and "bssfp_vendorB" in err and "lge" in err
    assert not any(tmp_path.iterdir())
    argv = ["phantom", "--out", str(tmp_path), "--domains", "t2", "--cases", "1", "--seed", "2", "--paired"]
    assert _cli(monkeypatch, argv) == 0
    meta = json.loads((tmp_path / "t2" / "domain.json").read_text())
    assert meta["provenance"]["paired"] is True and meta["provenance"]["seed"] == 2
    assert _cli(monkeypatch, argv) == 2  # exists
    assert _cli(monkeypatch, argv + ["--overwrite"]) == 0
