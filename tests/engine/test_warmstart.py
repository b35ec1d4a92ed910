"""Warm start (``init:`` / ``segshift train --init RUN``), model selection and the random streams.

What is checked: the init run's weights, preprocessing and source split are what the new
run starts from; every incompatible init is refused before anything is written, with a
message that names the difference; a warm-started run selects its last step; and the
source batches at a given seed do not depend on whether a target stream exists.
"""

from __future__ import annotations

import functools
import json
import operator
import shutil

import pytest
from safetensors.torch import load_file

from segshift.cli.main import main
from segshift.engine.config import resolve
from segshift.engine.trainer import Trainer, train
from segshift.engine.warmstart import like_for_like
from segshift.errors import SegshiftError
from segshift.methods import get_method
from tests.conftest import FAST, garbage_labels_copy, train_argv

BASE = FAST + ["model.kwargs={features: [4,8,16,32]}", "train.eval_every=4", "train.checkpoint_every=100", "train.log_every=1"]


def _cfg(method: str, *sets: str, init=None):
    cfg = resolve(method, sets=[*BASE, *sets])
    cfg["init"] = None if init is None else str(init)
    return cfg


@pytest.fixture(scope="module")
def init_run(phantom, tmp_path_factory):
    """A finished source-only run on phantom bSSFP (8 steps)."""
    run = tmp_path_factory.mktemp("init") / "so"
    train(_cfg("source-only", "train.steps=8"), [phantom["bssfp"]], None, run, progress=False)
    return run


def test_init_weights_preprocessing_and_split_are_the_init_runs(init_run, phantom, tmp_path):
    # lr 0 and frozen batch-norm statistics: the run must end exactly where the init run's best checkpoint is
    cfg = _cfg("source-only", "train.steps=3", "train.lr=0.0", "train.weight_decay=0.0", "seed=5", "train.norm_stats=frozen", init=init_run)
    summary = train(cfg, [phantom["bssfp"]], None, tmp_path / "warm", progress=False)
    a = load_file(str(init_run / "checkpoints" / "best" / "weights.safetensors"))
    b = load_file(str(tmp_path / "warm" / "checkpoints" / "best" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    info, old = (json.loads((r / "run.json").read_text()) for r in (tmp_path / "warm", init_run))
    assert info["plan"]["val"] == old["plan"]["val"] and info["plan"]["train"] == old["plan"]["train"]  # seed 5 would split otherwise
    assert info["init"]["run"] == str(init_run.resolve()) and info["init"]["nets"] == ["seg"] and info["init"]["histmatch"] == "none"
    assert info["norm_stats"] == "frozen" and info["selection"] == "last"
    assert json.loads((tmp_path / "warm" / "preprocess.json").read_text()) == json.loads((init_run / "preprocess.json").read_text())
    assert summary["selection"] == "last step" and summary["best_step"] == 3


def test_warm_start_trains_and_selects_the_last_step(init_run, phantom, tmp_path):
    cfg = _cfg("source-only", "train.steps=4", "train.eval_every=1", init=init_run)
    summary = train(cfg, [phantom["bssfp"]], None, tmp_path / "warm", progress=False)
    a = load_file(str(init_run / "checkpoints" / "best" / "weights.safetensors"))
    b = load_file(str(tmp_path / "warm" / "checkpoints" / "best" / "weights.safetensors"))
    assert any(not a[k].equal(b[k]) for k in a)  # it trained
    c = load_file(str(tmp_path / "warm" / "checkpoints" / "last" / "weights.safetensors"))
    assert all(b[k].equal(c[k]) for k in b)  # best is the last step, whatever source validation said
    assert summary["best_step"] == 4 and summary["selection"] == "last step"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["model.kwargs={features: [8,16,32,64]}"],
            "model.kwargs: this run {'features': [8, 16, 32, 64]}, init run {'features': [4, 8, 16, 32]}",
        ),
        (["data.preprocess.crop_size=[64,64]"], "data.preprocess.crop_size: this run [64, 64], init run [80, 80]"),
        (["data.preprocess.target_spacing=2.0"], "data.preprocess.target_spacing"),
    ],
)
def test_incompatible_init_is_refused_before_anything_is_written(init_run, phantom, tmp_path, sets, message):
    with pytest.raises(SegshiftError) as err:
        train(_cfg("adaptseg", "train.steps=2", *sets, init=init_run), [phantom["bssfp"]], phantom["lge"], tmp_path / "r", progress=False)
    assert "cannot start from this init run" in str(err.value) and message in str(err.value)
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())


def test_init_with_other_sources_or_histmatch_switched_off_is_refused(init_run, phantom, tmp_path):
    with pytest.raises(SegshiftError, match=r"sources: this run \["):
        train(_cfg("source-only", "train.steps=2", init=init_run), [phantom["lge"]], None, tmp_path / "a", progress=False)
    hm = tmp_path / "hm"
    train(_cfg("histmatch", "train.steps=2", init=init_run), [phantom["bssfp"]], None, hm, progress=False)
    assert json.loads((hm / "run.json").read_text())["init"]["histmatch"] == "fitted"  # switched on: fitted on the source
    with pytest.raises(SegshiftError, match="trained on histogram-matched images"):
        train(_cfg("source-only", "train.steps=2", init=hm), [phantom["bssfp"]], None, tmp_path / "b", progress=False)
    reused = tmp_path / "reused"
    train(_cfg("histmatch", "train.steps=2", init=hm), [phantom["bssfp"]], None, reused, progress=False)
    assert json.loads((reused / "preprocess.json").read_text()) == json.loads((hm / "preprocess.json").read_text())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("init_sets", "sets", "problems"),
    [
        ([], ["data.preprocess.histmatch=true", "data.preprocess.histmatch_levels=64"], []),  # switched on, with its own levels
        ([], ["data.preprocess.histmatch_levels=64"], []),  # neither run matches histograms
        (["data.preprocess.histmatch=true"], ["data.preprocess.histmatch=true"], []),  # the init's reference, reused
        (
            ["data.preprocess.histmatch=true"],
            ["data.preprocess.histmatch=true", "data.preprocess.histmatch_levels=64"],
            ["data.preprocess.histmatch_levels: this run 64, init run 256"],
        ),
        (
            ["data.preprocess.histmatch=true"],
            ["data.preprocess.histmatch=true", "data.histmatch_reference=target"],
            ["data.histmatch_reference: this run 'target', init run 'source'"],
        ),
        (["data.preprocess.histmatch=true"], [], ["data.preprocess.histmatch: the init run's network was trained on histogram-matched"]),
    ],
)
def test_histogram_matching_rules_of_a_warm_start(init_sets, sets, problems):
    init_cfg, cfg = resolve("source-only", sets=[*BASE, *init_sets]), resolve("source-only", sets=[*BASE, *sets])
    found = like_for_like(init_cfg, cfg, ("seg",), ["/d/src"], ["/d/src"])
    assert len(found) == len(problems) and all(f.startswith(p) for f, p in zip(found, problems)), found


def test_sources_and_split_differences_are_listed():
    cfg = resolve("source-only", sets=BASE)
    old, new = {"train": {"/d/a": ["c0", "c1"]}, "val": {"/d/a": ["c2"]}}, {"train": {"/d/a": ["c0"]}, "val": {"/d/a": ["c1", "c2"]}}
    assert like_for_like(cfg, cfg, ("seg",), ["/d/a"], ["/d/a"], old, new) == [
        "source training cases of /d/a: this run ['c0'], init run ['c0', 'c1']",
        "source validation cases of /d/a: this run ['c1', 'c2'], init run ['c2']",
    ]
    assert like_for_like(cfg, cfg, ("seg",), ["/d/a"], ["/d/b"], old, new) == ["sources: this run ['/d/b'], init run ['/d/a']"]
    # SDNet ignores the model section: only the segmenter's family compares it
    other = resolve("source-only", sets=[*BASE, "model.name=attention_unet"])
    assert like_for_like(cfg, other, ("sdnet",), ["/d/a"], ["/d/a"]) == []
    assert like_for_like(cfg, other, ("seg",), ["/d/a"], ["/d/a"]) == ["model.name: this run 'attention_unet', init run 'unet'"]


def test_unfinished_missing_or_differently_split_init_is_refused(init_run, phantom, tmp_path, capsys):
    part = tmp_path / "part"
    train(_cfg("source-only", "train.steps=6"), [phantom["bssfp"]], None, part, stop_after=2, progress=False)
    with pytest.raises(SegshiftError, match="has not finished training"):
        train(_cfg("source-only", "train.steps=2", init=part), [phantom["bssfp"]], None, tmp_path / "a", progress=False)
    old_val = json.loads((init_run / "run.json").read_text())["plan"]["val"]
    other = [c for c in ("case000", "case001", "case002") if c not in functools.reduce(operator.iadd, old_val.values(), [])][:1]
    with pytest.raises(SegshiftError, match="keeps the init run's split"):
        train(
            _cfg("source-only", "train.steps=2", f"data.val_cases={other}", init=init_run),
            [phantom["bssfp"]],
            None,
            tmp_path / "b",
            progress=False,
        )
    argv = train_argv(
        "adaptseg", phantom["bssfp"], tmp_path / "c", "--init", str(tmp_path / "nowhere"), target=phantom["lge"], progress=True
    )
    assert main(argv) == 2
    assert "nowhere: init run: no such run folder" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abc")


def test_cli_init_and_resume_exclusive(init_run, phantom, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(train_argv("source-only", phantom["bssfp"], out, "--init", str(init_run), sets=BASE + ["train.steps=2"])) == 0
    assert f"from {init_run}" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["init"]["method"] == "source-only"
    assert main(["train", "-m", "source-only", "-o", str(out), "--resume", "--init", str(init_run)]) == 2
    assert "do not pass --config/--set/--init" in capsys.readouterr().err


def test_bad_train_values_are_refused(phantom, tmp_path):
    for bad in ("train.steps=-5", "train.batch_size=0", "train.eval_every=0"):
        with pytest.raises(SegshiftError, match=r"is outside its range \[1, "):
            Trainer(_cfg("source-only", bad), [phantom["bssfp"]], None, tmp_path / "r", progress=False)
    with pytest.raises(SegshiftError, match="train.select must be one of"):
        Trainer(_cfg("source-only", "train.select=best"), [phantom["bssfp"]], None, tmp_path / "r", progress=False)
    with pytest.raises(SegshiftError, match="norm_stats=frozen keeps the batch-norm statistics of an init run"):
        train(_cfg("source-only", "train.norm_stats=frozen"), [phantom["bssfp"]], None, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def _record_source_batches(monkeypatch):
    """Record every step's source batch (images and labels) as the engine hands it to the method."""
    seen: list = []
    orig = Trainer._batch

    def spy(self, *args, **kwargs):
        b = orig(self, *args, **kwargs)
        seen.append((b.source_image.clone(), b.source_label.clone(), b.target_image is not None))
        return b

    monkeypatch.setattr(Trainer, "_batch", spy)
    return seen


def test_source_batches_do_not_depend_on_a_target_stream(init_run, phantom, tmp_path, monkeypatch):
    """source-only and adaptseg at lambda 0 (same seed, same init) see bit-identical source batches, and end identical."""
    seen = _record_source_batches(monkeypatch)
    common = ["train.steps=5", "seed=3", "method.lambda_adv=0.0", "method.d_channels=[8,8,8,8,1]"]
    train(_cfg("source-only", *common[:2], init=init_run), [phantom["bssfp"]], None, tmp_path / "so", progress=False)
    so = list(seen)
    seen.clear()
    train(_cfg("adaptseg", *common, init=init_run), [phantom["bssfp"]], phantom["lge"], tmp_path / "ad", progress=False)
    assert len(so) == len(seen) == 5 and all(t for *_, t in seen) and not any(t for *_, t in so)
    for (xa, ya, _), (xb, yb, _) in zip(so, seen):
        assert xa.equal(xb) and ya.equal(yb)
    # per-domain batch-norm statistics and lambda 0: the adversarial branch changes nothing in the segmenter
    a = load_file(str(tmp_path / "so" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "ad" / "checkpoints" / "last" / "weights.safetensors"))
    seg = [k for k in a if k.startswith("seg.")]
    assert seg and all(a[k].equal(b[k]) for k in seg)


def test_resumed_warm_start_keeps_its_init_even_if_the_init_folder_is_gone(init_run, phantom, tmp_path):
    init_copy = tmp_path / "init"
    shutil.copytree(init_run, init_copy)
    cfg = _cfg("adaptseg", "train.steps=4", "method.d_channels=[8,8,8,8,1]", init=init_copy)
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "full", progress=False)
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "part", stop_after=2, progress=False)
    shutil.rmtree(init_copy)  # everything a resumed run needs is in its own checkpoint
    train(None, [], None, tmp_path / "part", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


# -- every registered method, warm-started ---------------------------------------------------
# tiny networks for CPU; each method's stage is 4 steps
TINY = {
    "adaptseg": ["method.d_channels=[8,8,8,8,1]"],
    "advent": ["method.d_channels=[8,8,8,8,1]"],
    "adanet": ["method.d_channels=[8,8,8,8,1]", "model.name=unet", "method.gfrm_channels=4"],
    "cyclegan": ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,8,8,1]", "method.g_batch=2"],
    "attent": ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,8,8,1]", "method.g_batch=2", "method.e_d_channels=[8,8,8,8,1]"],
    "unetgan": [
        "method.g_ngf=4",
        "method.g_blocks=1",
        "method.d_channels=[8,8,8,1]",
        "method.g_batch=2",
        "model.name=unet",
        "model.kwargs={features: [4,8,16,32]}",
    ],
}
SDNET = [
    "method.anatomy_features=[4,8,16]",
    "method.anatomy_channels=4",
    "method.segmentor_width=8",
    "method.decoder_width=8",
    "method.modality_channels=[4,8]",
    "method.z_dim=4",
    "train.batch_size=4",
]


@pytest.fixture(scope="module")
def sdnet_init(phantom, tmp_path_factory):
    run = tmp_path_factory.mktemp("init") / "sdnet"
    train(_cfg("sdnet", "train.steps=4", *SDNET), [phantom["bssfp"]], None, run, progress=False)
    return run


@pytest.mark.parametrize("name", sorted(__import__("segshift.methods", fromlist=["x"]).available_methods()))
def test_every_method_warm_starts_predicts_and_resumes(name, init_run, sdnet_init, phantom, tmp_path):
    """From --init, target labels unreadable (but the oracle's), 4 steps; predict; stop at 2 + resume == uninterrupted."""
    from segshift.data.domain import Domain
    from segshift.inference.predictor import Predictor

    cls = get_method(name)
    sdnet = cls.init_nets == ("sdnet",)
    init = sdnet_init if sdnet else init_run
    target = phantom["lge"] if cls.uses_target_labels else garbage_labels_copy(phantom["lge"], tmp_path / "lge")
    sets = ["train.steps=4", "train.eval_every=2", f"data.cache_dir={tmp_path / 'cache'}", *(SDNET if sdnet else TINY.get(name, []))]
    if cls.uses_target_labels:
        sets.append("data.val_cases=[case008,case009]")
    cfg = _cfg(name, *sets, init=init)
    uses_target = cls.uses_target or cls.uses_target_labels
    train(cfg, [phantom["bssfp"]], target if uses_target else None, tmp_path / "full", progress=False)
    train(cfg, [phantom["bssfp"]], target if uses_target else None, tmp_path / "part", stop_after=2, progress=False)
    train(None, [], None, tmp_path / "part", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), [k for k in a if not a[k].equal(b[k])][:5]
    info = json.loads((tmp_path / "full" / "run.json").read_text())
    assert info["init"]["nets"] == list(cls.init_nets) and json.loads((tmp_path / "full" / "summary.json").read_text())["finished"]
    image = Domain(phantom["lge"]).load_image("case000")
    pred = Predictor(tmp_path / "full", translate=True).predict_volume(image)
    assert pred.mask.shape == image.shape and pred.qc["translated"] == (
        cls.uses_target and Predictor(tmp_path / "full").method.can_translate()
    )
