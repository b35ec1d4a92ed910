"""Warm starts per method: what each method takes from an init run, and the stages it skips.

The engine loads ``init_nets`` from the init run after ``build()``; here a config with
``init`` set to any string stands for such a run (a method never reads the folder), and the
"loaded" weights are written into the networks by hand where a test needs them.
"""

from __future__ import annotations

import sys

from segshift.methods import available_methods
from tests.methods.conftest import built_method, random_batch

INIT = "init=runs/finished-run"
RESUNET = ["model.name=resunet", "model.kwargs={features: [4,8,16,32], encoder_blocks: [1,2,3,3]}"]
TRANSLATOR = ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,16,1]", "method.g_batch=0"]
SDNET = [
    "method.anatomy_features=[8,16,32,64,128]",
    "method.segmentor_width=8",
    "method.decoder_width=8",
    "method.modality_channels=[8,8]",
    "method.anatomy_channels=4",
    "method.z_dim=4",
]


def _method(name, sets=(), seed=0):
    return built_method(name, sets, seed)


def _batch(n=4, size=32, seed=0):
    return random_batch(n, size, seed, domains=[0, 1] * (n // 2))


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_init_nets_of_every_method():
    expected = dict.fromkeys(available_methods(), ("seg",))
    expected.update({"sdnet": ("sdnet",), "sdnet-ss": ("sdnet",), "sdnet-fa": ("sdnet",)})
    assert {name: cls.init_nets for name, cls in available_methods().items()} == expected
    for name, cls in available_methods().items():
        doc = sys.modules[cls.__module__].__doc__
        assert "--init" in doc, f"{name}: the module docstring must say what a warm start (--init) takes"


def test_warm_started_flag():
    assert _method("source-only", ["model.kwargs={features: [4,8]}", INIT]).warm_started
    assert not _method("source-only", ["model.kwargs={features: [4,8]}"]).warm_started


# -- unetgan: stage 1 is the init run -------------------------------------------------------------------
def test_unetgan_from_scratch_runs_both_stages():
    m = _method("unetgan", [*RESUNET, *TRANSLATOR, "method.seg_steps=2", "method.gan_steps=3", "train.steps=7"])
    assert m.total_steps() == 5 and [m.stage(s) for s in (1, 2, 3, 5)] == [1, 1, 2, 2]
    assert [m.validation_due(s) for s in (1, 2, 3)] == [True, True, False]


def test_unetgan_warm_started_is_stage_2_only():
    m = _method("unetgan", [*RESUNET, *TRANSLATOR, INIT, "method.seg_steps=2", "method.gan_steps=3", "train.steps=7"])
    assert m.total_steps() == 7  # train.steps; seg_steps and gan_steps unused
    assert {m.stage(s) for s in range(1, 8)} == {2} and not any(m.validation_due(s) for s in range(1, 8))
    assert m.final_nets() == ("g_t2s",) and list(m.inference_nets()) == ["seg", "g_t2s"]
    assert "seg" not in m.schedulers  # the U-Net does not train in this run
    seg0 = _state(m.nets["seg"])
    g0 = _state(m.nets["g_s2t"])
    values = m.train_step(_batch(), 1)  # the first step already trains the translator, U-Net frozen
    assert values["stage"] == 2.0 and values["w_gan"] == 0.0 and {"ssim", "unet_feat"} <= set(values)
    assert _same(seg0, _state(m.nets["seg"])) and all(p.grad is None for p in m.nets["seg"].parameters())
    assert not _same(g0, _state(m.nets["g_s2t"]))
    # the schedule counts from the start of stage 2: from scratch it starts after seg_steps
    scratch = _method(
        "unetgan", [*RESUNET, *TRANSLATOR, "method.seg_steps=2", "method.gan_steps=300", "method.d_warmup_steps=1", "method.ramp_steps=0"]
    )
    assert scratch.train_step(_batch(), 3)["w_gan"] == 0.0 and scratch.train_step(_batch(), 4)["w_gan"] == 1.0


# -- sdnet-fa: pretraining is the init run -----------------------------------------------------------------
def test_sdnet_fa_from_scratch_pretrains_first():
    m = _method("sdnet-fa", [*SDNET, "method.pretrain_steps=3", "train.steps=2"])
    assert m.total_steps() == 5 and m.init_nets == ("sdnet",)
    assert m.train_step(_batch(), 1)["stage"] == 1.0 and not m.validation_due(3) and m.validation_due(4)


def test_sdnet_fa_warm_started_skips_pretraining_and_copies_the_loaded_model():
    m = _method("sdnet-fa", [*SDNET, INIT, "method.pretrain_steps=3", "train.steps=2"])
    assert m.total_steps() == 2 and m.validation_due(1)
    # the engine loads the init run's SDNet after build(): stand-in weights, unlike fa's own initialisation
    other = _method("sdnet-fa", [*SDNET, INIT], seed=1)
    m.nets["sdnet"].load_state_dict(other.nets["sdnet"].state_dict())
    loaded = _state(m.nets["sdnet"])
    assert not _same(loaded, _state(m.nets["fa"]))
    values = m.train_step(_batch(), 1)
    assert values["stage"] == 2.0 and values["fa_images"] == 2.0  # FA from the first step
    assert _same(loaded, _state(m.nets["fa"])), "the FA generator is the loaded (init run's) SDNet"
    assert not _same(loaded, _state(m.nets["sdnet"])) and not m.nets["fa"].training
    m.train_step(_batch(seed=1), 2)
    assert _same(loaded, _state(m.nets["fa"])), "the FA generator stays frozen"


def test_sdnet_fa_resumed_keeps_the_checkpointed_generator():
    """A resumed warm-started run starts after step 1: ``fa`` is the checkpoint's, not re-copied."""
    m = _method("sdnet-fa", [*SDNET, INIT, "train.steps=3"])
    checkpointed = _state(_method("sdnet-fa", [*SDNET, INIT], seed=2).nets["sdnet"])
    m.nets["fa"].load_state_dict(checkpointed)  # what resume loads
    m.train_step(_batch(), 2)
    assert _same(checkpointed, _state(m.nets["fa"]))
