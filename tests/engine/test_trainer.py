"""The training loop on the phantom: it learns, resumes exactly, runs under torchrun (DDP), and its hooks can be overridden."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from segshift.cli.main import main
from segshift.engine.config import resolve
from segshift.engine.trainer import Trainer, train
from segshift.errors import SegshiftError
from tests.conftest import torchrun_train
from tests.engine.conftest import FAST, run_folder_plan


@pytest.mark.slow  # 300 steps; the same check on the session's shared run: tests/engine/test_learns.py
def test_source_only_learns_the_phantom(phantom, tmp_path):
    cfg = resolve("source-only", sets=FAST + ["train.steps=300", "train.eval_every=100"])
    summary = train(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    # in-domain validation Dice on held-out phantom patients; an untrained or broken model scores < 0.4
    assert summary["finished"] and summary["best_val_mean_dice"] > 0.8, summary
    assert summary["selection"] == "source validation Dice"
    train_cases, val_cases = run_folder_plan(tmp_path / "run")
    assert len(val_cases) == 2 and len(train_cases) == 8 and not set(train_cases) & set(val_cases)


def test_resume_equals_uninterrupted(phantom, tmp_path):
    sets = FAST + ["train.steps=24", "train.eval_every=8", "train.checkpoint_every=100", "seed=11"]
    cfg = resolve("source-only", sets=sets)
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "full", progress=False)
    part = train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "part", stop_after=10, progress=False)
    assert not part["finished"] and not (tmp_path / "part" / "summary.json").exists()
    train(cfg, [], None, tmp_path / "part", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].equal(b[k]), k
    log_full = (tmp_path / "full" / "logs" / "train.csv").read_text().splitlines()
    log_part = (tmp_path / "part" / "logs" / "train.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log_full] == [r.split(",")[0] for r in log_part]


@pytest.mark.slow  # torchrun; make test keeps one: tests/methods/test_adversarial.py::test_adanet_under_torchrun_keeps_identical_replicas
def test_torchrun_two_processes_keep_identical_replicas(phantom, tmp_path):
    sets = FAST + ["train.steps=6", "train.batch_size=4", "train.eval_every=3", "train.checkpoint_every=3"]
    w0, w1 = torchrun_train("source-only", phantom["bssfp"], tmp_path / "ddp", sets=sets)
    assert w0.keys() == w1.keys() and len(w0) > 10
    for k in w0:
        assert w0[k].equal(w1[k]), k
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["world_size"] == 2
    start = load_file(str(tmp_path / "ddp" / "checkpoints" / "last" / "weights.safetensors"))
    assert any(not start[k].equal(w0[k]) for k in w0) is False  # the saved checkpoint is rank 0's final state


def test_bad_train_input_writes_nothing(phantom, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "-m", "source-only", "-s", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "missing: is not a folder" in capsys.readouterr().err
    assert main(["train", "-m", "nope", "-s", str(phantom["bssfp"]), "-o", str(out)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["train", "-m", "source-only", "-s", str(phantom["bssfp"]), "-o", str(out), "--set", "train.stepz=1"]) == 2
    assert "unknown key 'train.stepz'" in capsys.readouterr().err
    assert main(["train", "-m", "target-oracle", "-s", str(phantom["bssfp"]), "-o", str(out)]) == 2
    assert "give --target" in capsys.readouterr().err
    assert main(["train", "-m", "source-only", "-s", str(phantom["bssfp"]), "-o", str(out), "--set", "data.val_cases=[nobody]"]) == 2
    assert "unknown case(s) nobody" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_corrupt_case_fails_before_the_run_folder_exists(phantom, tmp_path):
    import shutil

    dom = tmp_path / "dom"
    shutil.copytree(phantom["bssfp"], dom)
    (dom / "images" / "case003.nii.gz").write_bytes(b"\x1f\x8b\x08broken")
    cfg = resolve("source-only", sets=FAST + ["train.steps=2"])
    with pytest.raises(SegshiftError, match=r"case003\.nii\.gz: cannot be read"):
        train(cfg, [dom], None, tmp_path / "run", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dom"]


def test_existing_run_needs_resume_or_overwrite(phantom, tmp_path):
    cfg = resolve("source-only", sets=FAST + ["train.steps=2", "train.eval_every=2"])
    train(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    with pytest.raises(SegshiftError, match="--resume to continue it or --overwrite"):
        train(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    with pytest.raises(SegshiftError, match="nothing to resume"):
        train(cfg, [], None, tmp_path / "other", resume=True, progress=False)


def test_divergence_names_stay_importable_from_the_trainer():
    from segshift.engine import divergence, trainer

    assert trainer.DivergenceMonitor is divergence.DivergenceMonitor and trainer.TrainingDiverged is divergence.TrainingDiverged


@pytest.mark.slow  # ~7 s; make test keeps the monitor's unit test and the NaN stop
def test_a_run_away_loss_stops_training_and_keeps_the_checkpoint_before_the_climb(phantom, tmp_path, monkeypatch):
    from segshift.engine import checkpoint as ckpt
    from segshift.engine.trainer import TrainingDiverged
    from segshift.methods import get_method

    cls = get_method("source-only")
    original = cls.train_step

    def climbing(self, batch, step):  # the real step, reporting a loss that explodes from step 31 on
        values = original(self, batch, step)
        values["loss_seg"] = values["loss"] = 0.1 if step <= 30 else 10.0
        return values

    monkeypatch.setattr(cls, "train_step", climbing)
    cfg = resolve(
        "source-only",
        sets=FAST
        + [
            "train.steps=200",
            "train.eval_every=1000",
            "train.checkpoint_every=5",
            "train.log_every=5",
            "train.diverge_warmup=5",
            "train.diverge_patience=10",
        ],
    )
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at step 45: the supervised loss \(loss_seg\) diverged.*before step 3[1-4]"):
        train(cfg, [phantom["bssfp"]], None, run, progress=False)
    assert ckpt.read_state(run / "checkpoints" / "last")["step"] == 30  # steps 35 and 40 were not saved
    assert not (run / "summary.json").exists()


class _Counting(Trainer):
    """A subclass that overrides two hooks and keeps what they saw."""

    def on_train_start(self) -> None:
        super().on_train_start()
        self.validated: list[int] = []
        self.steps = 0

    def train_step(self, step: int) -> dict[str, float]:
        self.steps += 1
        return super().train_step(step)

    def on_validation_end(self, step: int, vals: dict[str, float]) -> None:
        self.validated.append(step)
        super().on_validation_end(step, vals)


def test_the_engine_sets_precision_and_memory_format_on_the_method(phantom, tmp_path):
    """The trainer and the predictor configure the method's execution policy from ``train``."""
    from segshift.inference.predictor import Predictor
    from segshift.utils.execution import ExecutionPolicy

    cfg = resolve("source-only", sets=FAST + ["train.steps=1", "train.eval_every=1", "train.precision=bf16", "train.channels_last=true"])
    trainer = Trainer(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    trainer.fit()
    assert trainer.method.execution == ExecutionPolicy("bf16", channels_last=True, compile=False)
    conv = next(p for p in trainer.method.nets["seg"].parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert Predictor(tmp_path / "run").method.execution == ExecutionPolicy("bf16", channels_last=True, compile=False)


def test_a_subclass_overriding_hooks_is_called(phantom, tmp_path):
    cfg = resolve("source-only", sets=FAST + ["train.steps=6", "train.eval_every=2"])
    trainer = _Counting(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    summary = trainer.fit()
    assert trainer.steps == 6 and trainer.validated == [2, 4, 6]
    assert summary["finished"] and summary["best_step"] in (2, 4, 6)  # the base class still selects
    # train() takes the subclass too
    calls = []

    class Stop(Trainer):
        def on_train_end(self):
            calls.append(self.state.step)
            return super().on_train_end()

    part = train(cfg, [phantom["bssfp"]], None, tmp_path / "part", stop_after=3, progress=False, trainer_cls=Stop)
    assert calls == [3] and part["steps_done"] == 3 and not part["finished"]


def test_a_new_run_opens_its_caches_once_and_reads_back_nothing_it_wrote(phantom, tmp_path, monkeypatch):
    """Caches are built in the staging folder and re-pointed at the run folder, not opened again;
    the preprocessing is not re-read from preprocess.json."""
    from segshift.data.cache import SliceCache
    from segshift.transforms import Preprocessor

    built, loaded = [], []
    orig_build, orig_load = SliceCache.build.__func__, Preprocessor.load.__func__
    monkeypatch.setattr(SliceCache, "build", classmethod(lambda cls, *a, **k: built.append(1) or orig_build(cls, *a, **k)))
    monkeypatch.setattr(Preprocessor, "load", classmethod(lambda cls, *a, **k: loaded.append(a) or orig_load(cls, *a, **k)))

    cfg = resolve("adaptseg", sets=FAST + ["train.steps=2", "train.eval_every=2", "method.d_channels=[8,8,8,8,1]"])
    trainer = Trainer(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "run", progress=False)
    trainer.fit()
    caches = [*trainer.train_caches, *trainer.val_caches, trainer.target_cache]
    assert len(built) == len(caches) == 3 and loaded == []
    cache_root = (tmp_path / "run" / "cache").resolve()
    for c in caches:
        assert c.root.resolve().parent == cache_root and (c.root / "index.json").is_file()
    assert not (tmp_path / ".run.staging").exists()
    # the checkpoint format that resume and predict read (runs on disk have it)
    from segshift.engine import checkpoint as ckpt

    doc = ckpt.read_state(tmp_path / "run" / "checkpoints" / "last")
    assert {"step", "method", "oracle", "best", "val", "ranks", "streams", "labels", "config", "preprocess"} <= set(doc)
    assert set(doc["ranks"]["0"]) == {"rng", "augment_rng", "augment_rng_target"} and doc["streams"]["target"] is not None
    assert doc["preprocess"] == json.loads((tmp_path / "run" / "preprocess.json").read_text())
    # the re-pointed caches serve the same slices as the same caches opened afresh
    fresh = SliceCache.open(trainer.train_caches[0].root)
    idx = [0, len(fresh) - 1]
    assert (fresh.batch(idx)[0] == trainer.train_caches[0].batch(idx)[0]).all()


def test_caches_in_a_cache_dir_stay_there(phantom, tmp_path):
    cfg = resolve("source-only", sets=FAST + ["train.steps=1", "train.eval_every=1", f"data.cache_dir={tmp_path / 'caches'}"])
    trainer = Trainer(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    assert trainer.fit()["finished"]
    roots = {c.root.parent for c in [*trainer.train_caches, *trainer.val_caches]}
    assert roots == {tmp_path / "caches"} and not (tmp_path / "run" / "cache").exists()


@pytest.mark.slow  # ~5 s of torch.compile (off by default on CPU)
def test_compile_keeps_the_networks_and_their_batch_norm_stores(phantom, tmp_path, monkeypatch):
    """``train.compile`` compiles every network in place: a target-norm method trains, checkpoints and predicts.

    (``torch.compile`` replaced the networks by wrappers whose module names start with ``_orig_mod.``,
    so the target batch-norm store's swap raised a KeyError at the first target pass.) The
    ``eager`` backend keeps dynamo's wrapping without inductor's minutes of code generation.
    """
    import functools

    from segshift.inference.predictor import Predictor

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    sets = [
        *FAST,
        "train.steps=2",
        "train.eval_every=2",
        "train.compile=true",
        "train.norm_stats=domain",
        "method.d_channels=[8,16,16,16,1]",
    ]
    with Trainer(resolve("adaptseg", sets=sets), [phantom["bssfp"]], phantom["lge"], tmp_path / "run", progress=False) as trainer:
        summary = trainer.fit()
        assert summary["finished"] and trainer.method.nets["seg"]._compiled_call_impl is not None
        assert trainer.method.uses_target_norm() and trainer.method.nets["seg_target_norm"].passes > 0
    keys = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "weights.safetensors")).keys()
    assert keys and not any("_orig_mod" in k for k in keys)
    assert Predictor(tmp_path / "run").method.uses_target_norm()


def test_torchrun_refusal_of_a_method_comes_before_anything_is_written(phantom, tmp_path, monkeypatch):
    from segshift.engine import trainer as trainer_module
    from segshift.engine.distributed import DistInfo

    monkeypatch.setattr(trainer_module.ddp, "init", lambda device=None: DistInfo(rank=0, world_size=2))  # as under torchrun
    for method in ("cyclegan", "attent", "unetgan"):
        with pytest.raises(SegshiftError, match=f"{method} does not run under torchrun/DDP yet"):
            Trainer(resolve(method, sets=FAST), [phantom["bssfp"]], phantom["lge"], tmp_path / method, progress=False)
        assert not (tmp_path / method).exists() and not list(tmp_path.glob(f".{method}*"))


def test_a_new_best_writes_last_too_so_a_resume_knows_it(phantom, tmp_path):
    """With validation more frequent than checkpoints, ``last`` is written at every new best."""
    saved: list[tuple[int, str]] = []

    class Recording(Trainer):
        def save_checkpoint(self, which):
            saved.append((self.state.step, which))
            super().save_checkpoint(which)

    cfg = resolve("source-only", sets=[*FAST, "train.steps=8", "train.eval_every=2", "train.checkpoint_every=100"])
    train(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False, trainer_cls=Recording)
    bests = [s for s, w in saved if w == "best" and s < 8]
    assert bests and all((s, "last") in saved for s in bests), saved
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert state["best"] == json.loads((tmp_path / "run" / "checkpoints" / "best" / "state.json").read_text())["best"]


def test_resume_restores_the_divergence_monitor(phantom, tmp_path):
    cfg = resolve("source-only", sets=[*FAST, "train.steps=6", "train.eval_every=100", "train.diverge_warmup=2"])
    train(cfg, [phantom["bssfp"]], None, tmp_path / "run", stop_after=4, progress=False)
    kept = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())["monitor"]
    assert kept["ema"] > 0 and 0 < kept["lowest"] < 10
    with Trainer(None, [], None, tmp_path / "run", resume=True, progress=False) as trainer:
        trainer.on_train_start()
        assert trainer.state.step == 4 and trainer.monitor.state_dict() == kept and trainer.monitor.warmup == 2


def test_the_logged_learning_rate_is_the_one_the_step_used(phantom, tmp_path):
    sets = [
        *FAST,
        "train.steps=4",
        "train.log_every=1",
        "train.eval_every=100",
        "train.schedule=constant",
        "train.warmup_steps=4",
        "train.lr=0.001",
    ]
    train(resolve("source-only", sets=sets), [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "logs" / "train.csv").read_text().splitlines()
    head = lines[0].split(",")
    rows = [dict(zip(head, r.split(","))) for r in lines[1:]]
    assert [(int(r["step"]), float(r["lr"])) for r in rows] == [(1, 0.00025), (2, 0.0005), (3, 0.00075), (4, 0.001)]


def test_a_finished_run_deletes_only_the_run_it_replaced(phantom, tmp_path, capsys):
    """``.RUN.replaced`` is deleted by the run that set it aside (--overwrite), never by another run of that name."""
    cfg = resolve("source-only", sets=[*FAST, "train.steps=2", "train.eval_every=2"])
    kept = tmp_path / ".run.replaced"  # e.g. a replacement interrupted, its unfinished run removed by hand
    kept.mkdir()
    (kept / "summary.json").write_text("{}")
    train(cfg, [phantom["bssfp"]], None, tmp_path / "run", progress=False)
    assert (kept / "summary.json").is_file() and "replaces" not in json.loads((tmp_path / "run" / "run.json").read_text())
    shutil.rmtree(kept)
    train(cfg, [phantom["bssfp"]], None, tmp_path / "run", overwrite=True, progress=False)  # replaces the first: kept aside, then deleted
    assert json.loads((tmp_path / "run" / "run.json").read_text())["replaces"] == ".run.replaced" and not kept.exists()
