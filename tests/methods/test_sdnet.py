"""SDNet with resolution and factor-based augmentation (Liu et al. 2020).

What is checked: the modes and their flags, bad values name their key, reconstruction
improves in a short run, semi-supervised modes never read target labels, ``sdnet-fa``
resumes bit-identically across its stage switch, ``segshift train`` takes several sources
and no target (domain generalisation), and on the phantom sdnet learns the source
(a real Dice bar), writes its figures, and FA images keep the label of their anatomy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segshift.cli.main import main
from segshift.data.cache import SliceCache
from segshift.data.domain import Domain
from segshift.engine import checkpoint as ckpt
from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.engine.validate import dice_3d
from segshift.errors import SegshiftError
from segshift.methods import get_method
from segshift.methods.base import Batch
from segshift.report.method_figures import draw_run_figures
from segshift.transforms import Preprocessor
from tests.methods.conftest import FAST, refuse_label_reads

# narrow SDNet for CPU tests (the YAML holds the defaults)
SMALL = [
    "method.anatomy_features=[8,16,32,64,128]",
    "method.segmentor_width=16",
    "method.decoder_width=16",
    "method.modality_channels=[8,16]",
    "train.batch_size=4",
]


def _cfg(name, sets=()):
    return resolve(name, sets=[*FAST, *SMALL, *sets])


def _method(name, sets=()):
    m = build_method(_cfg(name, ["train.channels_last=false", *sets]), "train", num_classes=4)
    m.train(True)
    return m


def test_modes_flags_and_paper_weights():
    assert not get_method("sdnet").uses_target
    assert get_method("sdnet-ss").uses_target and get_method("sdnet-fa").uses_target
    assert not any(get_method(n).uses_target_labels for n in ("sdnet", "sdnet-ss", "sdnet-fa"))
    cfg = resolve("sdnet-fa")
    assert [cfg["method"][f"lambda_{k}"] for k in ("rec", "zrec", "dice", "focal")] == [1.0] * 4  # eq. 1
    assert cfg["method"]["anatomy_channels"] == 8 and cfg["method"]["z_dim"] == 8
    assert cfg["train"]["lr"] == 0.001 and cfg["train"]["batch_size"] == 4  # section 3.2
    m = _method("sdnet-fa", ["method.pretrain_steps=7", "train.steps=5"])
    assert m.total_steps() == 12 and not m.validation_due(7) and m.validation_due(8)
    assert list(m.inference_nets()) == ["sdnet"]
    assert not any(p.requires_grad for p in m.nets["fa"].parameters()) and not m.nets["fa"].training


@pytest.mark.parametrize(
    ("name", "bad", "key"),
    [
        ("sdnet", "method.lambda_rec=-1", "method.lambda_rec"),
        ("sdnet", "method.binarise=sigmoid", "method.binarise"),
        ("sdnet", "method.decoder_output=sigmoid", "method.decoder_output"),
        ("sdnet", "method.modality_channels=[8]", "method.modality_channels"),
        ("sdnet-fa", "method.fa_fraction=1.5", "method.fa_fraction"),
        ("sdnet-fa", "method.pretrain_steps=0", "method.pretrain_steps"),
    ],
)
def test_bad_values_name_their_key(name, bad, key):
    with pytest.raises(SegshiftError, match=key):
        _method(name, [bad])


def _toy_batch(n=8, seed=0):
    """Discs and rings (labels 1..3) with noise, z-scored, 32 x 32."""
    from tests.conftest import toy_case

    imgs, labs = [], []
    for i in range(n):
        img, lab = toy_case(shape=(32, 32, 1), seed=seed + i)
        imgs.append((img[..., 0] - img.mean()) / img.std())
        labs.append(lab[..., 0])
    return Batch(torch.tensor(np.stack(imgs))[:, None].float(), torch.tensor(np.stack(labs)).long(), torch.zeros(n, dtype=torch.long))


def test_reconstruction_improves_in_a_short_run():
    torch.manual_seed(0)
    m = _method("sdnet", ["train.warmup_steps=0", "train.lr=0.003"])
    b = _toy_batch()
    rec = [m.train_step(b, s)["rec"] for s in range(1, 41)]
    assert np.mean(rec[-5:]) < 0.6 * np.mean(rec[:5]), (rec[:5], rec[-5:])


@pytest.mark.parametrize(("name", "sets"), [("sdnet-ss", ["train.steps=3"]), ("sdnet-fa", ["method.pretrain_steps=2", "train.steps=2"])])
def test_semi_supervised_modes_never_read_target_labels(phantom, tmp_path, monkeypatch, name, sets):
    refuse_label_reads(monkeypatch, phantom["lge"], name)
    cfg = _cfg(name, [*sets, "train.eval_every=2"])
    summary = train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "run", progress=False)
    assert summary["finished"] and not summary["oracle"]
    header = (tmp_path / "run" / "logs" / "train.csv").read_text().splitlines()[0].split(",")
    assert {"rec", "zrec", "dice", "focal", "loss_seg"} <= set(header)
    if name == "sdnet-fa":
        assert summary["steps_total"] == 4 and summary["best_step"] > 2  # selection in stage 2 only
        assert {"stage", "fa_images"} <= set(header)
    draw_run_figures(tmp_path / "run")  # the report layer draws what the run keeps
    assert (tmp_path / "run" / "figures" / "factor_grid.png").stat().st_size > 1000


@pytest.mark.slow  # ~7 s; make test keeps the engine's and adaptseg's resume-equals-uninterrupted checks
def test_sdnet_fa_resume_across_the_stage_switch_equals_uninterrupted(phantom, tmp_path):
    cfg = _cfg(
        "sdnet-fa",
        ["method.pretrain_steps=3", "train.steps=2", "train.eval_every=100", "train.checkpoint_every=100", "augment.resolution=[2.0,3.0]"],
    )
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "full", progress=False)
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "part", stop_after=3, progress=False)  # stops at the switch
    train(cfg, [], None, tmp_path / "part", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "last" / "weights.safetensors"))
    # norm_stats auto (domain): the target statistics of the SDNet and of the frozen copy resume too
    assert {k.split(".")[0] for k in a} == {"sdnet", "fa", "sdnet_target_norm", "fa_target_norm"} and a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    assert int(a["fa_target_norm.passes"]) > 0  # the copy took the target statistics of stage 1
    # the FA generator is the pretrained model (step 3), not the final one
    assert any(not a[k].equal(a[k.replace("fa.", "sdnet.", 1)]) for k in a if k.startswith("fa.") and a[k].is_floating_point())


def test_train_takes_several_sources_and_no_target(phantom, tmp_path):
    """Domain generalisation: two labelled sources, nothing of the unseen domain at training."""
    from segshift.data.phantom import generate_phantom

    b = generate_phantom(tmp_path / "ph", presets=["bssfp_vendorB"], n_cases=4, seed=5)["bssfp_vendorB"]
    sets = [f"--set={s}" for s in [*FAST, *SMALL, "train.steps=2", "train.eval_every=2", "augment.resolution=[2.0,3.0]"]]
    for name in ("sdnet", "source-only"):
        run = tmp_path / name
        code = main(
            [
                "train",
                "--method",
                name,
                "--source",
                str(phantom["bssfp"]),
                "--source",
                str(b),
                "--out",
                str(run),
                "--no-progress",
                *[s for s in sets if name == "sdnet" or "method." not in s],
            ]
        )
        assert code == 0
        info = json.loads((run / "run.json").read_text())
        assert info["target"] is None and len(info["plan"]["train"]) == 2 and info["plan"]["target_pool"] is None
    assert (
        main(["train", "--method", "sdnet-ss", "--source", str(phantom["bssfp"]), "--out", str(tmp_path / "ss"), "--no-progress"]) == 2
    )  # a semi-supervised mode needs --target


def _slices(run, domain, with_labels):
    pre = Preprocessor.load(run / "preprocess.json")
    dom = Domain(domain)
    cache = SliceCache.build(dom, pre, run / "test_cache", cases=dom.cases[:4], with_labels=with_labels, in_memory=True)
    rows = np.concatenate([cache.case_rows(c)[2:-2] for c in cache.cases])
    img, lab = cache.batch(rows)
    return torch.from_numpy(img)[:, None], (torch.from_numpy(lab.astype(np.int64)) if with_labels else None)


@pytest.mark.slow
def test_phantom_sdnet_fa_learns_the_source_and_fa_images_keep_their_label(phantom, tmp_path):
    """bSSFP -> LGE phantom: 250 SS pretraining steps + 50 FA steps at FAST settings (about 110 s on 2 CPU cores)."""
    run = tmp_path / "fa"
    cfg = _cfg("sdnet-fa", ["method.pretrain_steps=250", "train.steps=50", "train.eval_every=50", "train.checkpoint_every=300", "seed=1"])
    summary = train(cfg, [phantom["bssfp"]], phantom["lge"], run, progress=False)
    assert summary["best_step"] > 250
    assert summary["best_val_mean_dice"] > 0.7, summary  # in-domain (source validation) Dice
    draw_run_figures(run)  # the report layer draws what the run keeps
    assert {p.name for p in (run / "figures").iterdir()} == {"anatomy.png", "factor_grid.png"}

    m = build_method(cfg, "train", num_classes=4, load=lambda m: ckpt.load_weights(run / "checkpoints" / "last", m.nets))
    m.train(False)
    src, lab = _slices(run, phantom["bssfp"], True)
    tgt, _ = _slices(run, phantom["lge"], False)
    n = min(len(src), len(tgt), 24)
    src, lab, tgt = src[:n], lab[:n], tgt[:n]
    torch.manual_seed(0)
    fa_img, fa_lab = m.factor_augment(src, lab, torch.zeros(n, dtype=torch.long), tgt, torch.full((n,), -1))
    assert torch.equal(fa_lab, lab)  # the label of the image giving the anatomy
    assert float((fa_img - src).abs().mean()) > 0.05  # a new image, not a copy
    # the pretrained model segments the FA image as the label it inherited...
    structures = {"LV": 1, "MYO": 2, "RV": 3}
    seg_fa = m.nets["fa"].segmentor(m.nets["fa"].anatomy(fa_img)).argmax(1).numpy()
    seg_src = m.nets["fa"].segmentor(m.nets["fa"].anatomy(src)).argmax(1).numpy()
    d_fa = np.mean(list(dice_3d(seg_fa, lab.numpy(), structures).values()))
    d_src = np.mean(list(dice_3d(seg_src, lab.numpy(), structures).values()))
    # the control: the same segmentation scored against other slices' labels (half the batch away)
    d_other = np.mean(list(dice_3d(seg_fa, lab.roll(n // 2, 0).numpy(), structures).values()))
    print(f"FA image Dice {d_fa:.3f}, source image {d_src:.3f}, FA against other slices' labels {d_other:.3f}")
    assert d_fa > 0.6 and d_fa > d_other + 0.2, (d_fa, d_other)
    # not far below the source image's own Dice: 0.15 held on CI's AVX2 CPU; on an AMX CPU (other
    # fp32 kernels, another trajectory of this 300-step toy) 0.732 against 0.926 was measured
    assert d_fa > d_src - 0.25, (d_fa, d_src)
    # ...and its anatomy factor is mostly that of the original image
    with torch.no_grad():
        same = (m.nets["fa"].anatomy(fa_img).argmax(1) == m.nets["fa"].anatomy(src).argmax(1)).float().mean()
    assert float(same) > 0.6, float(same)  # 0.6999 measured on an AVX2 CPU in fp32 (CI): not a margin to test at 0.7
