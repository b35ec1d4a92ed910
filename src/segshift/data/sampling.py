"""Deterministic, resumable, rank-aware streams of batch indices.

:class:`BatchStream` yields batches of dataset indices forever: epoch ``e`` is the
permutation drawn from ``(seed, e)``; in a DDP run each rank takes a disjoint, equal-size
share of every global batch. Its whole state is ``(epoch, position)``, so a resumed run
continues with exactly the batches the interrupted run would have seen. (TLlib's
``ForeverDataIterator`` cycles a loader; this also makes the cycle reproducible.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class BatchStream:
    """Endless batches of indices into a dataset of ``n`` items.

    Args:
        n: dataset size.
        batch_size: per-rank batch size.
        seed: base seed of the permutations.
        rank / world_size: this process's share in a DDP run.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise ValueError("cannot sample batches from an empty dataset")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self._perm: np.ndarray | None = None

    def _permutation(self) -> np.ndarray:
        if self._perm is None:
            rng = np.random.default_rng([self.seed, self.epoch])
            reps = int(np.ceil(self.batch_size * self.world_size / self.n))
            # short datasets repeat within an epoch so a global batch always fits
            self._perm = np.concatenate([rng.permutation(self.n) for _ in range(max(1, reps))])
        return self._perm

    def next(self) -> np.ndarray:
        glob = self.batch_size * self.world_size
        perm = self._permutation()
        if self.position + glob > len(perm):
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
            perm = self._permutation()
        batch = perm[self.position : self.position + glob]
        self.position += glob
        return batch[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None
