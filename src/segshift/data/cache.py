"""Slice cache: preprocess a domain once, then serve 2D slices without re-reading NIfTI files.

:meth:`SliceCache.build` preprocesses every chosen case of a domain with a
:class:`~segshift.transforms.Preprocessor` and writes, under
``<cache_root>/<domain>-<key>/``::

    images.npy   float32 (N, H, W)   all slices of all cases
    labels.npy   uint8   (N, H, W)   only when built with labels
    index.json   case and slice of every row, per-case geometry records, the key inputs

Arrays are written front to back, one volume at a time, with ordinary writes, so building
never holds the dataset in memory and a full disk is an :class:`OSError` naming the file
(never a memory-mapped write that the system can only answer with SIGBUS). Readers open them
memory-mapped (pages come from disk as needed: a dataset larger than RAM streams) or load them
whole (``in_memory=True``). The folder is built under a temporary name and renamed when complete.

The key hashes the preprocessing, the case list, whether labels were read, and each
source file's path, size and modification time, so a changed input is never served stale.
Unlabelled use (a target domain) builds with ``with_labels=False`` and never opens a label file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.data.domain import Domain
from segshift.errors import InputFileError, SegshiftError
from segshift.transforms.preprocess import Preprocessor
from segshift.utils.atomic import atomic_dir, oserror_names, write_json


def _nifti_slices(path: Path) -> int:
    import nibabel as nib

    from segshift.data.volume import read_errors

    try:
        shape = nib.load(str(path)).shape
    except read_errors() as exc:
        raise InputFileError(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    if len(shape) != 3:
        raise InputFileError(path, f"domain images must be 3D, got shape {shape}")
    return int(shape[2])


@contextlib.contextmanager
def _npy_writer(path: Path, dtype: type, shape: tuple[int, int, int]) -> Iterator[Callable[[np.ndarray], None]]:
    """An ``.npy`` file of ``shape`` written front to back: yields ``append(rows)``; every row must be appended.

    A failed write (a full disk) is an :class:`OSError` naming ``path``.
    """
    dt = np.dtype(dtype)
    done = 0

    def append(rows: np.ndarray) -> None:
        nonlocal done
        block = np.ascontiguousarray(rows, dtype=dt)
        if block.shape[1:] != shape[1:] or done + len(block) > shape[0]:
            raise ValueError(f"{path}: rows of shape {block.shape} do not fit an array of {shape} at row {done}")
        with oserror_names(path):
            f.write(block.tobytes())
        done += len(block)

    with oserror_names(path):
        f = open(path, "wb")  # noqa: SIM115 - closed below, on success and on error
    try:
        with oserror_names(path):
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False, "shape": shape})
        yield append
        if done != shape[0]:
            raise ValueError(f"{path}: {done} of {shape[0]} rows written")
        with oserror_names(path):
            f.close()
    finally:
        with contextlib.suppress(OSError):
            f.close()


@dataclasses.dataclass
class SliceCache:
    """A built cache: arrays plus the index of ``(case, slice)`` per row."""

    root: Path
    cases: list[str]
    rows: list[tuple[str, int]]
    geometry: dict[str, dict[str, Any]]
    has_labels: bool
    in_memory: bool = False

    def __post_init__(self) -> None:
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    # arrays are opened lazily: a cache can be re-homed (the trainer's staging folder) or pickled without them
    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.root / "images.npy", mmap_mode=None if self.in_memory else "r")
        return self._images

    @property
    def labels(self) -> np.ndarray | None:
        if not self.has_labels:
            return None
        if self._labels is None:
            self._labels = np.load(self.root / "labels.npy", mmap_mode=None if self.in_memory else "r")
        return self._labels

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows ``indices`` as ``(images (B, H, W) float32, labels (B, H, W) uint8 or None)``."""
        idx = np.asarray(indices, dtype=np.int64)
        labels = self.labels
        return np.asarray(self.images[idx]), (None if labels is None else np.asarray(labels[idx]))

    def case_rows(self, case: str) -> np.ndarray:
        """Row indices of one case's slices, in slice order."""
        return np.array([i for i, (c, _) in enumerate(self.rows) if c == case], dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = state["_labels"] = None  # reopened on first use
        return state

    @staticmethod
    def key(domain: Domain, pre: Preprocessor, cases: Sequence[str], with_labels: bool) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(pre.to_dict(), sort_keys=True).encode())
        h.update(json.dumps([list(cases), with_labels]).encode())
        for case in cases:
            paths = [domain.image_path(case)] + ([domain.label_path(case)] if with_labels else [])
            for p in paths:
                if p is not None:
                    st = p.stat()
                    h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:20]

    @classmethod
    def build(
        cls,
        domain: Domain,
        pre: Preprocessor,
        cache_root: str | Path,
        cases: Sequence[str] | None = None,
        with_labels: bool = True,
        in_memory: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> SliceCache:
        """Build (or reuse) the cache of ``cases`` of ``domain``.

        Args:
            domain: the domain to read.
            pre: preprocessing; its output size must be fixed (``crop_size`` set).
            cache_root: folder that holds caches.
            cases: subset of cases (default: all, or all labelled ones when ``with_labels``).
            with_labels: read labels; every chosen case must then be labelled.
            in_memory: load arrays into RAM instead of memory-mapping them.
        """
        if pre.config.crop_size is None:
            raise SegshiftError("slice cache needs a fixed slice size: set preprocess crop_size")
        if cases is None:
            cases = domain.labelled_cases if with_labels else domain.cases
        cases = list(cases)
        if not cases:
            raise SegshiftError(f"{domain.root}: no cases to cache" + (" (no labelled cases)" if with_labels else ""))
        if with_labels:
            missing = [c for c in cases if domain.label_path(c) is None]
            if missing:
                raise SegshiftError(f"{domain.root}: case(s) without labels requested with labels: {', '.join(missing)}")
        key = cls.key(domain, pre, cases, with_labels)
        root = Path(cache_root) / f"{domain.name}-{key}"
        if (root / "index.json").is_file():
            return cls.open(root, in_memory=in_memory)
        counts = [_nifti_slices(domain.image_path(c)) for c in cases]
        n = int(sum(counts))
        h, w = pre.config.crop_size
        with atomic_dir(root, overwrite=True) as tmp, contextlib.ExitStack() as files:
            add_images = files.enter_context(_npy_writer(tmp / "images.npy", np.float32, (n, h, w)))
            add_labels = files.enter_context(_npy_writer(tmp / "labels.npy", np.uint8, (n, h, w))) if with_labels else None
            rows: list[tuple[str, int]] = []
            geometry: dict[str, dict[str, Any]] = {}
            for case, z in zip(cases, counts):
                if progress:
                    progress(case)
                image = domain.load_image(case)
                label = domain.load_label(case, image) if with_labels else None
                prep = pre.apply(image, label)
                add_images(prep.image)
                if add_labels is not None:
                    if prep.label.max(initial=0) > 255:
                        raise SegshiftError(f"{domain.label_path(case)}: label ids above 255 are not supported by the slice cache")
                    add_labels(prep.label)
                rows += [(case, k) for k in range(z)]
                geometry[case] = prep.geometry.to_dict()
            files.close()  # both arrays complete and closed before the index is written
            write_json(
                tmp / "index.json",
                {
                    "domain": domain.name,
                    "domain_root": str(domain.root.resolve()),
                    "labels": domain.spec.labels,
                    "cases": cases,
                    "rows": rows,
                    "geometry": geometry,
                    "has_labels": with_labels,
                    "preprocess": pre.to_dict(),
                },
            )
        return cls.open(root, in_memory=in_memory)

    @classmethod
    def open(cls, root: str | Path, in_memory: bool = False) -> SliceCache:
        root = Path(root)
        try:
            idx = json.loads((root / "index.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(root / "index.json", f"unreadable slice-cache index ({exc})") from exc
        return cls(
            root=root,
            cases=list(idx["cases"]),
            rows=[(c, int(k)) for c, k in idx["rows"]],
            geometry=idx["geometry"],
            has_labels=bool(idx["has_labels"]),
            in_memory=in_memory,
        )
