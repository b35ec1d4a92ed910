"""Bad input and faults around ``segshift train``, one row per class: the exit status, the message,
and that nothing was written, overwritten or deleted. The full disk is tried for real (a small tmpfs, where
``mount`` is permitted) and by an injected ENOSPC (always)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segshift.cli.main import main
from segshift.engine.config import resolve
from segshift.errors import SegshiftError
from tests.cli.test_bad_inputs import _digest, _err
from tests.conftest import FAST, train_argv

STOPPED = FAST + ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=1"]
"""Two steps, validation at step 2 only: ``--stop-after 1`` leaves a run with ``checkpoints/last`` and no ``best``."""


@pytest.fixture(scope="module")
def stopped_run(phantom, tmp_path_factory) -> tuple[Path, str]:
    """A run stopped after step 1 of 2 (before its first validation), and what ``segshift train`` printed."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(train_argv("source-only", phantom["bssfp"], run, "--stop-after", "1", sets=STOPPED)) == 0
    return run, out.getvalue()


@pytest.fixture
def run_copy(stopped_run, tmp_path) -> Path:
    """A copy of the stopped run, free to resume or damage."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run[0], run)
    return run


def _resume(run: Path, method: str = "source-only", *extra: str) -> list[str]:
    return ["train", "--resume", "-m", method, "-o", str(run), "--no-progress", *extra]


# -- 3. resume with an edited config.yaml -----------------------------------------------------------------------


def test_resume_refuses_an_edited_config_and_records_nothing(run_copy, capsys):
    text = (run_copy / "config.yaml").read_text()
    assert "  lr: 0.003\n" in text
    (run_copy / "config.yaml").write_text(text.replace("  lr: 0.003\n", "  lr: 0.5\n"))
    before = _digest(run_copy)
    assert main(_resume(run_copy)) == 2
    err = _err(capsys)
    assert f"{run_copy / 'config.yaml'}: differs from the config this run was trained with (train.lr: 0.003 -> 0.5)" in err
    assert _digest(run_copy) == before  # weights, checkpoints and config.yaml untouched
    (run_copy / "config.yaml").write_text(text)  # restored: the run resumes and finishes
    assert main(_resume(run_copy)) == 0 and (run_copy / "summary.json").is_file()


# -- 4. --resume with another method, --resume with --overwrite ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "extra", "message"),
    [
        ("target-oracle", (), "this run trains source-only, not target-oracle: resume it with -m source-only"),
        ("source-only", ("--overwrite",), "--resume continues a run in place and --overwrite replaces it"),
    ],
)
def test_resume_refuses_another_method_and_overwrite(run_copy, capsys, method, extra, message):
    before = _digest(run_copy)
    assert main(_resume(run_copy, method, *extra)) == 2
    assert message in _err(capsys)
    assert _digest(run_copy) == before


# -- 14. a full disk during training ------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> None:
    """A tmpfs of ``size`` at ``where``; skips the test (with the reason) where mounting is not permitted."""
    where.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({res.stderr.strip() or 'mount failed'}): the injected ENOSPC rows still run")


def _fill(disk: Path, leave: int) -> None:
    """Allocate a file on ``disk`` so that only about ``leave`` bytes stay free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    assert free > leave, (free, leave)
    with open(disk / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, free - leave)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow  # a real 64 MB tmpfs, 7-13 s each; make test keeps the monkeypatched full disk for every writer
@pytest.mark.parametrize("where", ["cache", "checkpoint"])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_run_real_tmpfs(phantom, tmp_path, where):
    """Real: a 64 MB tmpfs holding a finished run, filled until the replacement (``--overwrite``) runs out of space
    while it writes its slice caches (600 KB free) or its first checkpoint (room for the caches only)."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "64m")
    try:
        run = disk / "run"
        sets = FAST + ["train.steps=2", "train.eval_every=1", "train.checkpoint_every=1"]
        assert main(train_argv("source-only", phantom["bssfp"], run, sets=sets)) == 0
        before = _digest(run)
        _fill(disk, 600_000 if where == "cache" else _du(run / "cache") + 300_000)
        res = subprocess.run(
            [sys.executable, "-m", "segshift.cli.main", *train_argv("source-only", phantom["bssfp"], run, "--overwrite", sets=sets)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
        errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert "Traceback" not in res.stderr and len(errors) == 1, res.stderr
        assert errors[0].startswith(f"error: {disk}/") and errors[0].endswith(": No space left on device"), errors[0]
        assert (where == "cache") == (".staging/cache/" in errors[0]) and (where == "checkpoint") == ("/checkpoints/" in errors[0])
        assert not (disk / ".run.staging").exists() and not [p for p in disk.rglob("*") if ".tmp" in p.name]
        kept = run if where == "cache" else disk / ".run.replaced"  # the finished run, untouched (set aside under --overwrite)
        assert _digest(kept) == before
    finally:
        subprocess.run(["umount", str(disk)], check=False)


class _FullFile(io.RawIOBase):
    """A file opened for writing on a full disk: every write fails with ENOSPC (naming no file, as a real write)."""

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("module", "written"), [("segshift.data.cache", "images.npy"), ("segshift.engine.checkpoint", "weights.safetensors")]
)
def test_a_full_disk_is_one_line_naming_the_file_monkeypatched(phantom, tmp_path, capsys, monkeypatch, module, written):
    """Injected: ``open`` of the module that writes the slice caches or the checkpoints gives files that cannot be written."""
    import importlib

    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        return _FullFile() if "w" in mode else real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(importlib.import_module(module), "open", full_open, raising=False)
    run = tmp_path / "run"
    assert main(train_argv("source-only", phantom["bssfp"], run, sets=FAST + ["train.steps=1"])) == 2
    err = _err(capsys)
    assert err.startswith(f"error: {tmp_path}/") and err.rstrip().endswith(f"/{written}: No space left on device"), err
    assert not (tmp_path / ".run.staging").exists() and not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


# -- 15. scientific notation ---------------------------------------------------------------------------------------


def test_scientific_notation_is_a_number_in_set_and_config(tmp_path, capsys):
    user = tmp_path / "user.yaml"
    user.write_text("train:\n  lr: 1e-4\n  weight_decay: 5E-5\n  momentum: .9e0\n")
    cfg = resolve("source-only", [user], ["train.poly_power=1.5e0", "augment.gamma=[7e-1, 1.5E0]"])
    t = cfg["train"]
    assert (t["lr"], t["weight_decay"], t["momentum"], t["poly_power"], cfg["augment"]["gamma"]) == (1e-4, 5e-5, 0.9, 1.5, [0.7, 1.5])
    assert resolve("source-only", sets=["train.lr=1e-3"])["train"]["lr"] == 0.001
    with pytest.raises(SegshiftError, match="expected a number"):
        resolve("source-only", sets=["train.lr=1e-3x"])
    # the command line reads it as a number too (and then stops at the next bad value, before training)
    assert (
        main(
            [
                "train",
                "-m",
                "source-only",
                "-s",
                str(tmp_path),
                "-o",
                str(tmp_path / "r"),
                "--set",
                "train.lr=1e-3",
                "--set",
                "train.steps=0",
            ]
        )
        == 2
    )
    err = _err(capsys)
    assert "expected a number" not in err and "train.steps: 0 is outside its range" in err


# -- 16. temporary checkpoints left by kill -9 ---------------------------------------------------------------------


def test_stale_temporaries_are_removed_at_resume_and_at_the_end(run_copy):
    from segshift.engine.trainer import Trainer, train

    stale = [
        run_copy / "checkpoints" / ".last.k9x2ab1c.tmp",
        run_copy / "checkpoints" / ".best.old-4242",
        run_copy / "cache" / ".bssfp-0123456789abcdef0123.q1w2e3r4.tmp",
    ]
    for folder in stale:
        folder.mkdir()
        (folder / "weights.safetensors").write_bytes(b"\0" * 1_000_000)
    stale.append(run_copy / ".config.yaml.a1b2c3d4.tmp")
    stale[-1].write_text("half-written")
    seen: dict[str, list[Path]] = {}

    class LeavesOne(Trainer):
        """Sees what is left at its first step, then leaves a temporary behind as a killed writer would."""

        def on_step_end(self, step, values):
            seen.setdefault("at the first step", [p for p in stale if p.exists()])
            (self.run / "checkpoints" / ".last.late0001.tmp").mkdir(exist_ok=True)
            super().on_step_end(step, values)

    summary = train(None, [], None, run_copy, resume=True, progress=False, trainer_cls=LeavesOne)
    assert summary["finished"] and seen == {"at the first step": []}
    left = [p.relative_to(run_copy) for p in run_copy.rglob("*") if ".tmp" in p.name or ".old-" in p.name]
    assert left == [], left


# -- small points --------------------------------------------------------------------------------------------------


def test_stop_after_before_any_validation_says_so(stopped_run):
    printed = stopped_run[1]
    assert "1/2 steps; no validation yet, so no best model" in printed and "--checkpoint last" in printed
    assert "None" not in printed and "inf" not in printed


@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_run_without_best_suggests_checkpoint_last(stopped_run, phantom, tmp_path, capsys, command):
    run = stopped_run[0]
    image = next((phantom["lge"] / "images").iterdir())
    args = {
        "predict": ["predict", str(run), str(image), "--out", str(tmp_path / "o")],
        "export": ["export", str(run), "--format", "torchscript", str(tmp_path / "o")],
    }[command]
    before = _digest(run)
    assert main(args) == 2
    err = _err(capsys)
    assert f"{run / 'checkpoints' / 'best'}: missing: the run stopped before its first validation" in err and "--checkpoint last" in err
    assert not (tmp_path / "o").exists() and _digest(run) == before
    assert main([*args, "--checkpoint", "last"]) == 0 and (tmp_path / "o").is_dir()
