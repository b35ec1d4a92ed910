"""The training state a checkpoint holds besides weights, optimisers and schedulers.

:class:`TrainState` is the step, the model-selection record, the latest validation scores,
the batch streams and the random generators. Its :meth:`~TrainState.state_dict` is what
``checkpoints/*/state.json`` stores and :meth:`~TrainState.load_state_dict` is what a resumed
run restores, so the two cannot drift apart (nnU-Net v2's ``nnUNetTrainer`` likewise puts
everything a resume needs in one checkpoint, written by ``save_checkpoint`` and read back by
``load_checkpoint``). Its keys in ``state.json``::

    step     the last step done
    best     {"score": best source-validation mean Dice (or None), "step": its step (or None)}
    val      the latest validation scores
    ranks    {rank: {"rng": Python/NumPy/torch RNG states (checkpoint.rng_state),
                     "augment_rng": the source augmentation generator,
                     "augment_rng_target": the target augmentation generator}}
    streams  {"source": [each source stream's (epoch, position)], "target": the target stream's or None}

Every rank draws its own augmentations, so each rank's generators are kept; the batch
streams are the same on every rank (each takes its share of a global batch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segshift.data.sampling import BatchStream
from segshift.engine import checkpoint as ckpt
from segshift.errors import SegshiftError

KEYS = ("step", "best", "val", "monitor", "ranks", "streams")


def no_best() -> dict[str, Any]:
    """The selection record before any validation."""
    return {"score": -math.inf, "step": None}


@dataclasses.dataclass
class TrainState:
    """Where a run is; everything in it is saved and restored together.

    Attributes:
        source_streams: one batch stream per source (training) cache.
        target_stream: the unlabelled target pool's stream, or None.
        augment_rng: this rank's augmentation generator of the source stream.
        augment_rng_target: this rank's augmentation generator of the target stream (its own,
            so the source batches do not depend on whether a target stream exists).
        step: the last step done (0 before training).
        best: the model-selection record (:func:`no_best` before any validation).
        last_vals: the latest validation scores ({} before any validation).
        monitor: the divergence monitor's state
            (:meth:`~segshift.engine.divergence.DivergenceMonitor.state_dict`; {} before any step).
    """

    source_streams: list[BatchStream]
    target_stream: BatchStream | None
    augment_rng: torch.Generator
    augment_rng_target: torch.Generator
    step: int = 0
    best: dict[str, Any] = dataclasses.field(default_factory=no_best)
    last_vals: dict[str, float] = dataclasses.field(default_factory=dict)
    monitor: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(
        cls, seed: int, batch_size: int, source_sizes: Sequence[int], target_size: int | None, rank: int = 0, world_size: int = 1
    ) -> TrainState:
        """The state at step 0 of a run at ``seed``.

        Args:
            seed: the run's seed.
            batch_size: per-rank batch size; split over the sources (the first ones take the
                remainder), each source drawing at least one slice.
            source_sizes: the number of slices of each source training cache.
            target_size: the number of slices of the target pool, or None without one.
            rank / world_size: this process's share in a DDP run.
        """
        n = len(source_sizes)
        per_src = [batch_size // n + (1 if i < batch_size % n else 0) for i in range(n)]
        sources = [BatchStream(size, max(1, b), seed + 101 * i, rank, world_size) for i, (size, b) in enumerate(zip(source_sizes, per_src))]
        target = BatchStream(target_size, batch_size, seed + 7919, rank, world_size) if target_size else None
        return cls(
            sources,
            target,
            torch.Generator().manual_seed(seed * 1000 + rank),
            torch.Generator().manual_seed(seed * 1000 + rank + 7_919_000),
        )

    def rank_state(self) -> dict[str, Any]:
        """This process's random state (global RNGs and the augmentation generators)."""
        return {
            "rng": ckpt.rng_state(),
            "augment_rng": self.augment_rng.get_state().tolist(),
            "augment_rng_target": self.augment_rng_target.get_state().tolist(),
        }

    def state_dict(self, ranks: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """The JSON-able state (keys :data:`KEYS`).

        Args:
            ranks: every rank's :meth:`rank_state`, in rank order (a DDP run gathers them);
                default: this process's only, as rank 0.
        """
        ranks = [self.rank_state()] if ranks is None else ranks
        return {
            "step": self.step,
            "best": dict(self.best),
            "val": dict(self.last_vals),
            "monitor": dict(self.monitor),
            "ranks": {str(r): dict(s) for r, s in enumerate(ranks)},
            "streams": {
                "source": [s.state_dict() for s in self.source_streams],
                "target": self.target_stream.state_dict() if self.target_stream is not None else None,
            },
        }

    def load_state_dict(self, doc: Mapping[str, Any], rank: int = 0) -> None:
        """Restore from :meth:`state_dict` (or a checkpoint's ``state.json``); sets the global RNGs.

        A rank the checkpoint has no entry for (a run resumed with more processes) takes rank
        0's random state. A checkpoint without the target stream's generator (no
        ``augment_rng_target``) loads too; that generator then starts from its seed.
        """
        self.step = int(doc["step"])
        self.best = dict(doc["best"])
        self.last_vals = dict(doc.get("val") or {})
        self.monitor = dict(doc.get("monitor") or {})  # {} for a checkpoint without a monitor entry
        ranks = doc["ranks"]
        rs = ranks.get(str(rank), ranks["0"])
        ckpt.set_rng_state(rs["rng"])
        self.augment_rng.set_state(torch.tensor(rs["augment_rng"], dtype=torch.uint8))
        if "augment_rng_target" in rs:
            self.augment_rng_target.set_state(torch.tensor(rs["augment_rng_target"], dtype=torch.uint8))
        streams = doc["streams"]
        if len(streams["source"]) != len(self.source_streams):
            raise SegshiftError(f"the checkpoint has {len(streams['source'])} source stream(s), this run {len(self.source_streams)}")
        for s, st in zip(self.source_streams, streams["source"]):
            s.load_state_dict(st)
        if self.target_stream is not None:
            self.target_stream.load_state_dict(streams["target"])
