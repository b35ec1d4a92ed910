"""TrainState: one state_dict for save and resume, in the on-disk format of ``state.json``."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from segshift.engine import state as state_mod
from segshift.engine.state import KEYS, TrainState
from segshift.errors import SegshiftError


def _new(target: bool = True) -> TrainState:
    return TrainState.create(seed=7, batch_size=5, source_sizes=[30, 11], target_size=40 if target else None)


def _advance(st: TrainState, n: int) -> None:
    """What training does to the state: draw batches and augmentation, use the global RNGs."""
    for _ in range(n):
        for s in st.source_streams:
            s.next()
        if st.target_stream is not None:
            st.target_stream.next()
        torch.rand(3, generator=st.augment_rng)
        torch.rand(3, generator=st.augment_rng_target)
        torch.rand(1), np.random.rand(), random.random()
        st.step += 1


def _draws(st: TrainState) -> list:
    """What the next steps would see."""
    out = []
    for _ in range(4):
        out += [s.next().tolist() for s in st.source_streams]
        out += [st.target_stream.next().tolist()] if st.target_stream is not None else []
        out += [torch.rand(3, generator=st.augment_rng).tolist(), torch.rand(3, generator=st.augment_rng_target).tolist()]
        out += [torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()]
    return out


def test_create_splits_the_batch_over_sources_and_seeds_each_stream():
    st = _new()
    assert [s.batch_size for s in st.source_streams] == [3, 2]
    assert [s.seed for s in st.source_streams] == [7, 108] and st.target_stream.seed == 7 + 7919
    assert st.target_stream.batch_size == 5
    assert st.step == 0 and st.best == {"score": -math.inf, "step": None} and st.last_vals == {}
    assert _new(target=False).target_stream is None
    # the source generator does not depend on whether a target stream exists
    a, b = _new(), _new(target=False)
    assert torch.equal(torch.rand(4, generator=a.augment_rng), torch.rand(4, generator=b.augment_rng))
    assert not torch.equal(_new().augment_rng.get_state(), _new().augment_rng_target.get_state())


def test_round_trip_through_json_continues_exactly():
    st = _new()
    _advance(st, 7)
    st.best, st.last_vals = {"score": 0.71, "step": 6}, {"mean": 0.7, "LV": 0.8}
    doc = json.loads(json.dumps(st.state_dict(), allow_nan=True))  # what state.json holds
    assert tuple(doc) == KEYS
    expected = _draws(st)

    fresh = _new()
    fresh.load_state_dict(doc)
    assert fresh.step == 7 and fresh.best == {"score": 0.71, "step": 6} and fresh.last_vals == {"mean": 0.7, "LV": 0.8}
    assert _draws(fresh) == expected
    # and the restored state saves what was loaded
    fresh2 = _new()
    fresh2.load_state_dict(doc)
    again = fresh2.state_dict()
    assert {k: again[k] for k in ("step", "best", "val", "streams")} == {k: doc[k] for k in ("step", "best", "val", "streams")}
    assert again["ranks"]["0"]["augment_rng"] == doc["ranks"]["0"]["augment_rng"]


def test_no_best_yet_survives_json():
    doc = json.loads(json.dumps(_new().state_dict(), allow_nan=True))
    st = _new()
    st.load_state_dict(doc)
    assert st.best["score"] == -math.inf and st.best["step"] is None


def test_each_rank_restores_its_own_random_state_and_a_new_rank_takes_rank_0s():
    ranks = []
    for r in range(2):
        st = TrainState.create(3, 4, [20], 20, rank=r, world_size=2)
        ranks.append(st.rank_state())
    doc = st.state_dict(ranks)
    assert sorted(doc["ranks"]) == ["0", "1"]
    for r in (0, 1, 2):
        st = TrainState.create(3, 4, [20], 20, rank=min(r, 1), world_size=2)
        st.load_state_dict(doc, rank=r)
        assert st.augment_rng.get_state().tolist() == ranks[min(r, 1) if r < 2 else 0]["augment_rng"]


def test_reads_a_checkpoint_without_the_target_generator():
    """A state.json without the target stream's generator (no augment_rng_target) loads."""
    st = _new()
    _advance(st, 3)
    doc = st.state_dict()
    del doc["ranks"]["0"]["augment_rng_target"]
    fresh = _new()
    fresh.load_state_dict(doc)
    assert fresh.step == 3
    assert torch.equal(fresh.augment_rng_target.get_state(), _new().augment_rng_target.get_state())  # from its seed
    assert fresh.source_streams[0].state_dict() == st.source_streams[0].state_dict()


def test_a_checkpoint_with_other_sources_is_refused():
    doc = _new().state_dict()
    one = TrainState.create(7, 5, [30], None)
    with pytest.raises(SegshiftError, match="2 source stream"):
        one.load_state_dict(doc)


def test_rank_state_holds_the_global_rngs():
    torch.manual_seed(5)
    rs = _new().rank_state()
    assert set(rs) == {"rng", "augment_rng", "augment_rng_target"}
    assert {"python", "numpy", "torch"} <= set(rs["rng"])
    a = torch.rand(2)
    state_mod.ckpt.set_rng_state(rs["rng"])
    assert torch.equal(a, torch.rand(2))
