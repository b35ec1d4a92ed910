"""segshift export RUN --format onnx|torchscript, and prediction from the export without training code.

The export must give what ``segshift predict`` gives: logits and probabilities within 1e-4 and the
same masks, for source-only (ONNX Runtime and TorchScript) and for a translation method whose graph
is translator + segmenter. The runs here train in fp32, so ``segshift predict`` is fp32 too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.data.volume import read_volume
from segshift.errors import InputFileError
from segshift.inference.export import export_model
from segshift.inference.exported import ExportedModel, softmax
from segshift.inference.exported import main as exported_main
from segshift.inference.predictor import Predictor
from tests.conftest import FAST, train_argv

pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'segshift[export]')")
pytest.importorskip("onnxruntime", reason="running ONNX exports needs onnxruntime (pip install 'segshift[export]')")
pytest.importorskip("onnxscript", reason="ONNX export through torch.export needs onnxscript (pip install 'segshift[export]')")

REPO = Path(__file__).resolve().parents[2]
CASES = ("case000", "case005")


def _train(phantom, root: Path, method: str, steps: int, extra=()) -> Path:
    run = root / method
    target = None if method == "source-only" else phantom["lge"]
    sets = [f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}", "train.precision=fp32", *FAST, *extra]
    assert main(train_argv(method, phantom["bssfp"], run, target=target, sets=sets)) == 0
    return run


@pytest.fixture(scope="module")
def fp32_run(phantom, tmp_path_factory) -> Path:
    """source-only on phantom bSSFP in fp32, long enough to segment the heart (masks worth comparing)."""
    return _train(phantom, tmp_path_factory.mktemp("export"), "source-only", 150)


@pytest.fixture(scope="module")
def cyclegan_run(phantom, tmp_path_factory) -> Path:
    """cyclegan with tiny generators (2 steps) whose translator is not the identity (a residual one starts as it)."""
    tiny = [
        "method.g_ngf=4",
        "method.g_blocks=1",
        "method.d_channels=[8,16,1]",
        "method.g_batch=0",
        "method.g_residual=false",
    ]  # a plain generator: far from the identity from the start
    return _train(phantom, tmp_path_factory.mktemp("export"), "cyclegan", 2, tiny)


@pytest.fixture(scope="module")
def inputs(phantom, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lge_in")
    for c in CASES:
        shutil.copy(Domain(phantom["lge"]).image_path(c), folder / f"{c}.nii.gz")
    return folder


def _compare_with_predict(run: Path, export: Path, inputs: Path, out: Path, target_domain: str = "yes") -> None:
    """Logits and probabilities within 1e-4 of the run's Predictor; masks equal to `segshift predict`'s."""
    model = ExportedModel(export)
    pred = Predictor(run, target_domain=target_domain == "yes")
    assert pred.method.execution.precision == "fp32"
    assert main(["predict", str(run), str(inputs), "--out", str(out), "--target-domain", target_domain]) == 0
    for case in CASES:
        vol = read_volume(inputs / f"{case}.nii.gz")
        slices = pred.pre.apply(vol).image
        ours = model.logits(slices)
        with pred.method.target_norm() if pred.target_norm else contextlib.nullcontext():  # as Predictor._probs
            theirs = pred.method.predict_logits(torch.from_numpy(slices)[:, None]).numpy()
        assert ours.shape == theirs.shape == (slices.shape[0], len(pred.labels), *slices.shape[1:])
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
        np.testing.assert_allclose(softmax(ours), torch.softmax(torch.from_numpy(theirs), 1).numpy(), atol=1e-4, rtol=0)
        mask = model.predict_file(inputs / f"{case}.nii.gz", out.parent / f"{out.name}_{case}.nii.gz")
        reference = read_volume(out / f"{case}.nii.gz")
        np.testing.assert_array_equal(mask, reference.array)
        written = read_volume(out.parent / f"{out.name}_{case}.nii.gz")
        np.testing.assert_array_equal(written.array, mask)
        np.testing.assert_allclose(written.affine, vol.affine, atol=1e-6)


@pytest.mark.parametrize(("fmt", "model_file"), [("onnx", "model.onnx"), ("torchscript", "model.pt")])
def test_source_only_export_equals_segshift_predict(fp32_run, inputs, tmp_path, capsys, fmt, model_file):
    out = tmp_path / fmt
    assert main(["export", str(fp32_run), "--format", fmt, str(out)]) == 0
    assert f"wrote {out / model_file} ({fmt}, segmenter; source-only, fp32)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", "preprocess.json", model_file])
    m = json.loads((out / "manifest.json").read_text())
    run_info = json.loads((fp32_run / "run.json").read_text())
    assert m["labels"] == run_info["labels"] == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    assert (m["method"], m["translates"], m["target_norm"], m["precision"]) == ("source-only", False, False, "fp32")
    assert m["input"]["shape"] == ["batch", 1, 80, 80] and m["output"]["shape"] == ["batch", 4, 80, 80]
    assert m["spacing_mm"] == 2.5 and m["crop_size"] == [80, 80]
    assert m["parity"]["max_abs_diff"] <= 1e-4
    assert json.loads((out / "preprocess.json").read_text()) == json.loads((fp32_run / "preprocess.json").read_text())
    _compare_with_predict(fp32_run, out, inputs, tmp_path / "pred")
    assert (read_volume(tmp_path / "pred" / f"{CASES[0]}.nii.gz").array > 0).sum() > 100  # a heart, not an empty mask


def test_translation_method_exports_translator_then_segmenter(cyclegan_run, inputs, tmp_path, capsys):
    out = tmp_path / "cg"
    assert main(["export", str(cyclegan_run), "--format", "onnx", str(out)]) == 0
    assert "(onnx, translator + segmenter; cyclegan, fp32)" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["translates"] is True and m["target_domain"] is True
    _compare_with_predict(cyclegan_run, out, inputs, tmp_path / "pred")
    # the graph really translates: the segmenter alone gives other logits
    pred = Predictor(cyclegan_run)
    slices = pred.pre.apply(read_volume(inputs / f"{CASES[0]}.nii.gz")).image
    x = torch.from_numpy(slices)[:, None]
    seg_only = pred.method.segmenter_logits(x).detach().numpy()
    assert np.abs(ExportedModel(out).logits(slices) - seg_only).max() > 1e-2
    # --target-domain no: the segmenter alone, for images of other domains
    assert main(["export", str(cyclegan_run), "--format", "torchscript", str(tmp_path / "seg"), "--target-domain", "no"]) == 0
    assert json.loads((tmp_path / "seg" / "manifest.json").read_text())["translates"] is False
    np.testing.assert_allclose(ExportedModel(tmp_path / "seg").logits(slices), seg_only, atol=1e-4, rtol=0)
    _compare_with_predict(cyclegan_run, tmp_path / "seg", inputs, tmp_path / "pred_no", target_domain="no")


def test_target_batch_norm_statistics_are_part_of_a_target_domain_export(phantom, inputs, tmp_path):
    """adaptseg under norm_stats=domain keeps target statistics: the target export uses them, --target-domain no does not
    (TorchScript: which statistics go into the graph is decided before the format; ONNX parity is tested above)."""
    run = _train(phantom, tmp_path, "adaptseg", 3, ["method.d_channels=[8,16,16,16,1]"])
    assert export_model(run, tmp_path / "t", fmt="torchscript").manifest["target_norm"] is True
    assert export_model(run, tmp_path / "s", fmt="torchscript", target_domain=False).manifest["target_norm"] is False
    _compare_with_predict(run, tmp_path / "t", inputs, tmp_path / "pred_t", target_domain="yes")
    _compare_with_predict(run, tmp_path / "s", inputs, tmp_path / "pred_s", target_domain="no")
    slices = Predictor(run).pre.apply(read_volume(inputs / f"{CASES[0]}.nii.gz")).image
    assert np.abs(ExportedModel(tmp_path / "t").logits(slices) - ExportedModel(tmp_path / "s").logits(slices)).max() > 1e-3


def test_bf16_autocast_is_not_baked_into_the_export(fp32_run, tmp_path, monkeypatch):
    import onnx

    from segshift.utils import execution as precision

    monkeypatch.setattr(precision, "resolve_precision", lambda *_a, **_k: "bf16")  # as on a machine with native bf16
    assert Predictor(fp32_run).method.execution.precision == "bf16"
    report = export_model(fp32_run, tmp_path / "x", fmt="onnx")
    graph = onnx.load(str(tmp_path / "x" / "model.onnx")).graph
    bf16 = onnx.TensorProto.BFLOAT16
    casts = [n for n in graph.node if n.op_type == "Cast" and any(a.name == "to" and a.i == bf16 for a in n.attribute)]
    assert not casts and all(i.data_type != bf16 for i in graph.initializer)
    assert report.manifest["precision"] == "fp32" and report.manifest["parity"]["max_abs_diff"] <= 1e-4


def test_onnx_export_goes_through_torch_export_with_a_free_batch_axis(fp32_run, tmp_path, monkeypatch, capsys, caplog):
    import onnx

    from segshift.inference.exported import load_runtime

    calls: list[dict] = []
    export = torch.onnx.export

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    report = export_model(fp32_run, tmp_path / "x", fmt="onnx")
    assert [c.get("dynamo") for c in calls] == [True]  # the torch.export-based exporter, not the TorchScript one
    assert "[torch.onnx]" not in capsys.readouterr().out and not [r for r in caplog.records if r.name.startswith("torch.onnx")]
    model = onnx.load(str(tmp_path / "x" / "model.onnx"))
    (image,), (logits,) = model.graph.input, model.graph.output
    dims = image.type.tensor_type.shape.dim
    assert image.name == "image" and logits.name == "logits"
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 80, 80]
    assert {o.version for o in model.opset_import if o.domain == ""} == {report.manifest["opset"]}
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["manifest.json", "model.onnx", "preprocess.json"]  # no external data
    run, _ = load_runtime(tmp_path / "x" / "model.onnx", "onnx")
    for batch in (1, 3, 7):
        assert run(np.zeros((batch, 1, 80, 80), np.float32)).shape == (batch, 4, 80, 80)


@pytest.mark.slow  # ~10 s; make test keeps the fp32 export-equals-predict checks
def test_predict_precision_fp32_reproduces_the_export_of_a_bf16_run(phantom, inputs, tmp_path, monkeypatch, capsys):
    """A run trained in bf16 is predicted in bf16 by default; ``--precision fp32`` gives its fp32 export's masks and logits."""
    from segshift.utils import execution as precision

    run = _train(phantom, tmp_path, "source-only", 2, ["train.precision=bf16"])
    assert Predictor(run).method.execution.precision == "bf16"
    assert Predictor(run, precision="fp32").method.execution.precision == "fp32"
    for native, expected in [(True, "bf16"), (False, "fp32")]:  # auto: the machine decides, as in training
        monkeypatch.setattr(precision, "native_bf16", lambda *_a, native=native: native)
        assert Predictor(run, precision="auto").method.execution.precision == expected
    monkeypatch.undo()
    export_model(run, tmp_path / "x", fmt="onnx")
    model = ExportedModel(tmp_path / "x")
    slices = Predictor(run).pre.apply(read_volume(inputs / f"{CASES[0]}.nii.gz")).image
    x = torch.from_numpy(slices)[:, None]
    ours = model.logits(slices)
    as_run = Predictor(run).method.predict_logits(x).float().numpy()
    as_fp32 = Predictor(run, precision="fp32").method.predict_logits(x).numpy()
    assert np.abs(as_run - ours).max() > 1e-3  # bf16 rounding: the default does not reproduce the export...
    np.testing.assert_allclose(as_fp32, ours, atol=1e-4, rtol=0)  # ...--precision fp32 does
    assert main(["predict", str(run), str(inputs), "--out", str(tmp_path / "p"), "--precision", "fp32"]) == 0
    for case in CASES:
        mask = model.predict_file(inputs / f"{case}.nii.gz", tmp_path / f"e_{case}.nii.gz")
        np.testing.assert_array_equal(read_volume(tmp_path / "p" / f"{case}.nii.gz").array, mask)
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs), "--out", str(tmp_path / "q"), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "--precision must be run, auto, fp32 or bf16, got 'fp16'" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()


def _run_exported(args: list[str], block_torch: bool) -> list[str]:
    """``segshift.inference.exported.main(args)`` in a fresh interpreter; returns the segshift/torch modules it imported."""
    code = (
        "import sys, json\n"
        + ("sys.modules['torch'] = None  # as on a machine without PyTorch\n" if block_torch else "")
        + "from segshift.inference.exported import main\n"
        f"assert main({args!r}) == 0\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('segshift.', 'torch')) and sys.modules[m])))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("wrote ")
    return json.loads(res.stdout.splitlines()[-1])


def test_exported_module_needs_no_training_code(fp32_run, inputs, tmp_path):
    export_model(fp32_run, tmp_path / "exp", fmt="onnx")
    args = [str(tmp_path / "exp"), str(inputs / "case000.nii.gz")]
    modules = _run_exported(args + [str(tmp_path / "a.nii.gz")], block_torch=False)
    assert "segshift.inference.exported" in modules and "segshift.transforms.preprocess" in modules
    assert not [
        m for m in modules if m.startswith(("segshift.methods", "segshift.engine", "segshift.nets", "segshift.inference.predictor"))
    ]
    reference = ExportedModel(tmp_path / "exp").predict_file(inputs / "case000.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "a.nii.gz").array, reference)
    # ONNX Runtime without PyTorch at all: scipy resamples instead of torch (equal within 1e-5, so a rare voxel may differ)
    modules = _run_exported(args + [str(tmp_path / "b.nii.gz")], block_torch=True)
    assert not [m for m in modules if m.startswith("torch")]
    agree = (read_volume(tmp_path / "b.nii.gz").array == reference).mean()
    assert agree > 0.9999, agree


def _one_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(n in err for n in needles), (needles, err)


def test_exported_module_overwrites_nothing_unasked(fp32_run, inputs, tmp_path, capsys):
    """Like `segshift predict`: the mask never replaces the input image, nor an existing file without --overwrite."""
    export_model(fp32_run, tmp_path / "exp", fmt="onnx")
    exp = str(tmp_path / "exp")
    image = tmp_path / "scan.nii.gz"
    shutil.copy(inputs / "case000.nii.gz", image)
    original = image.read_bytes()
    (tmp_path / "link.nii.gz").symlink_to(image)
    os.link(image, tmp_path / "hard.nii.gz")
    for dest in (image, tmp_path / "." / "scan.nii.gz", tmp_path / "link.nii.gz", tmp_path / "hard.nii.gz"):
        for extra in ([], ["--overwrite"]):
            assert exported_main([exp, str(image), str(dest), *extra]) == 2
            _one_error(capsys, f"{dest}: is the input image")
            assert image.read_bytes() == original
    model = ExportedModel(exp)
    with pytest.raises(InputFileError, match="is the input image"):
        model.predict_file(image, image, overwrite=True)
    assert exported_main([exp, str(image), str(tmp_path)]) == 2
    _one_error(capsys, "is a folder")
    assert image.read_bytes() == original

    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(b"an earlier mask")
    assert exported_main([exp, str(image), str(mask)]) == 2
    _one_error(capsys, f"{mask}: exists", "--overwrite")
    with pytest.raises(InputFileError, match="exists"):
        model.predict_file(image, mask)
    assert mask.read_bytes() == b"an earlier mask" and image.read_bytes() == original
    assert exported_main([exp, str(image), str(mask), "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {mask}")
    np.testing.assert_array_equal(read_volume(mask).array, model.predict_file(image))
    assert image.read_bytes() == original
    assert exported_main([exp, str(image), str(mask), "--overwrit"]) == 2  # a mistyped flag is not a path
    assert capsys.readouterr().err.startswith("usage: ")


def test_bad_export_arguments_are_one_clear_error(fp32_run, tmp_path, capsys):
    (tmp_path / "notrun").mkdir()
    for args, message in [
        ([str(fp32_run), str(tmp_path / "o")], "a model export needs --format onnx or --format torchscript"),
        ([str(fp32_run), "--format", "tflite", str(tmp_path / "o")], "--format must be one of onnx, torchscript"),
        ([str(fp32_run), "--format", "onnx", str(fp32_run / "exp")], "lies inside the input"),
        ([str(fp32_run), "--format", "onnx", str(tmp_path / "o"), "--id", "3"], "--id belong to segshift export nnunet"),
        ([str(tmp_path / "notrun"), "--format", "onnx", str(tmp_path / "o")], "notrun: is not a segshift run folder"),
        (["nnunet", str(tmp_path)], "OUT is missing"),
    ]:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o").exists() and not (fp32_run / "exp").exists()
    with pytest.raises(InputFileError, match="manifest.json: missing: not a folder written by segshift export"):
        ExportedModel(tmp_path)
