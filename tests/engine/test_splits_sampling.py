"""Patient-grouped splits and the resumable, rank-aware batch stream."""

from __future__ import annotations

import numpy as np
import pytest

from segshift.data.sampling import BatchStream
from segshift.engine.splits import group_of, select, split
from segshift.errors import SegshiftError


def test_frames_of_a_patient_stay_together():
    cases = [f"patient{p:03d}_frame{f:02d}" for p in range(71, 81) for f in (1, 9)]
    train, val = split(cases, 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16
    assert {group_of(c) for c in train}.isdisjoint({group_of(c) for c in val})
    assert split(cases, 0.2, seed=0) == (train, val) and split(cases, 0.2, seed=1) != (train, val)


def test_explicit_cases_and_regex():
    cases = [f"patient{n:02d}" for n in range(1, 21)]
    train, val = split(cases, 0.2, 0, val_cases=r"patient(1[6-9]|20)")
    assert val == ["patient16", "patient17", "patient18", "patient19", "patient20"] and len(train) == 15
    assert select(cases, ["patient03", "patient01"], "x") == ["patient01", "patient03"]
    with pytest.raises(SegshiftError, match="unknown case"):
        select(cases, ["patient99"], "x")
    with pytest.raises(SegshiftError, match="matches no case"):
        select(cases, "case.*", "x")
    with pytest.raises(SegshiftError, match="both the training and validation"):
        split(["p1_frame01", "p1_frame02", "p2"], 0.0, 0, val_cases=["p1_frame01"], train_cases=["p1_frame02", "p2"])


def test_stream_is_deterministic_and_resumable():
    a = BatchStream(10, 4, seed=5)
    first = [a.next() for _ in range(7)]
    b = BatchStream(10, 4, seed=5)
    [b.next() for _ in range(3)]
    c = BatchStream(10, 4, seed=5)
    c.load_state_dict(b.state_dict())
    rest = [c.next() for _ in range(4)]
    for x, y in zip(first[3:], rest):
        np.testing.assert_array_equal(x, y)
    seen = np.concatenate(first[:2])  # epoch 0 covers 8 of the 10 items without repeats
    assert len(set(seen.tolist())) == 8


def test_ranks_get_disjoint_shares_of_each_global_batch():
    r0, r1 = BatchStream(20, 3, seed=1, rank=0, world_size=2), BatchStream(20, 3, seed=1, rank=1, world_size=2)
    for _ in range(5):
        x, y = r0.next(), r1.next()
        assert len(x) == len(y) == 3 and set(x).isdisjoint(y)


def test_tiny_dataset_still_fills_a_batch():
    assert len(BatchStream(3, 8, seed=0).next()) == 8
