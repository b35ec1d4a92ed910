"""Full-state checkpoints that never execute code when loaded.

A checkpoint is a folder::

    weights.safetensors   every network's state dict, keys "<net>.<param>"
    optim.safetensors     optimiser tensors, keys "<opt>.<param index>.<name>" (resumable only)
    state.json            step, config, preprocessing, non-tensor optimiser/scheduler state,
                          RNG states, metrics, and the SHA-256 of each .safetensors file

Tensors go through ``safetensors`` (no pickle) and everything else through JSON, so loading
a checkpoint someone else made cannot run code. The hashes catch truncated or tampered
files with an error that names the file. The folder is written under a temporary name and
renamed into place, so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segshift.errors import InputFileError
from segshift.utils.atomic import atomic_dir, oserror_names, write_json
from segshift.utils.jsonfile import read_json

FORMAT = "segshift-checkpoint"
VERSION = 1


def _plain(net: nn.Module) -> nn.Module:
    """The network itself, not a ``torch.compile`` wrapper (whose state-dict keys carry ``_orig_mod.``)."""
    return getattr(net, "_orig_mod", net)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> str:
    """Write ``tensors`` as a safetensors file with ordinary writes; returns its SHA-256.

    A write that fails (a full disk) is an :class:`OSError` naming ``path``.
    """
    from safetensors.torch import save

    data = save(dict(tensors))
    with oserror_names(path), open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def _split_optimizer(name: str, opt_state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
    for idx, st in opt_state["state"].items():
        entry: dict[str, Any] = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
                entry[key] = {"tensor": True}
            else:
                entry[key] = value
        meta["state"][str(idx)] = entry
    return tensors, meta


def _join_optimizer(name: str, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {k: (tensors[f"{name}.{idx}.{k}"] if isinstance(v, dict) and v.get("tensor") else v) for k, v in entry.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-able values."""
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(
    folder: str | Path,
    nets: Mapping[str, nn.Module],
    state: Mapping[str, Any],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one)."""
    folder = Path(folder)
    weights = {f"{n}.{k}": v.detach().cpu().contiguous() for n, net in nets.items() for k, v in _plain(net).state_dict().items()}
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, **state}
    with atomic_dir(folder, overwrite=True) as tmp:
        files = {"weights.safetensors": _save_tensors(weights, tmp / "weights.safetensors")}
        if optimizers:
            tensors: dict[str, torch.Tensor] = {}
            doc["optimizers"] = {}
            for name, opt in optimizers.items():
                t, meta = _split_optimizer(name, opt.state_dict())
                tensors.update(t)
                doc["optimizers"][name] = meta
            files["optim.safetensors"] = _save_tensors(tensors, tmp / "optim.safetensors")
        if schedulers:
            doc["schedulers"] = {name: s.state_dict() for name, s in schedulers.items()}
        doc["files"] = files
        write_json(tmp / "state.json", doc)
    return folder


def replace_weights(folder: str | Path, nets: Mapping[str, nn.Module], **state: Any) -> Path:
    """Replace the weights of ``nets`` in an existing checkpoint, keeping every other network's.

    ``state`` entries are added to ``state.json``. The folder is rewritten atomically.
    """
    import shutil

    folder = Path(folder)
    doc = read_state(folder)
    tensors = _load_tensors(folder / "weights.safetensors")
    for name, net in nets.items():
        prefix = f"{name}."
        tensors = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
        tensors.update({prefix + k: v.detach().cpu().contiguous() for k, v in _plain(net).state_dict().items()})
    doc.update(state)
    with atomic_dir(folder, overwrite=True) as tmp:
        for other in folder.iterdir():
            if other.name not in ("weights.safetensors", "state.json") and other.is_file():
                shutil.copy2(other, tmp / other.name)
        doc["files"]["weights.safetensors"] = _save_tensors(tensors, tmp / "weights.safetensors")
        write_json(tmp / "state.json", doc)
    return folder


def read_state(folder: str | Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint, checked for format and file integrity."""
    folder = Path(folder)
    path = folder / "state.json"
    doc = read_json(path, "missing: not a segshift checkpoint folder", invalid="is corrupt")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputFileError(path, "is not a segshift checkpoint")
    for name, digest in (doc.get("files") or {}).items():
        p = folder / name
        if not p.is_file():
            raise InputFileError(p, "missing from the checkpoint")
        if _sha256(p) != digest:
            raise InputFileError(p, "does not match the hash recorded in state.json (truncated or modified)")
    return doc


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot be read as safetensors ({exc})") from exc


def load_weights(folder: str | Path, nets: Mapping[str, nn.Module], strict: bool = True) -> dict[str, Any]:
    """Load network weights into ``nets``; returns ``state.json``."""
    folder = Path(folder)
    doc = read_state(folder)
    tensors = _load_tensors(folder / "weights.safetensors")
    for name, net in nets.items():
        prefix = f"{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            _plain(net).load_state_dict(sd, strict=strict)
        except RuntimeError as exc:
            raise InputFileError(folder / "weights.safetensors", f"does not fit network {name!r} ({str(exc).splitlines()[0]})") from exc
    return doc


def load_training_state(
    folder: str | Path,
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Mapping[str, Any],
) -> None:
    """Restore optimisers and schedulers (weights are loaded by :func:`load_weights`)."""
    folder = Path(folder)
    doc = read_state(folder)
    if optimizers:
        if "optimizers" not in doc:
            raise InputFileError(folder, "has no optimiser state (a weights-only checkpoint cannot be resumed)")
        tensors = _load_tensors(folder / "optim.safetensors")
        for name, opt in optimizers.items():
            opt.load_state_dict(_join_optimizer(name, doc["optimizers"][name], tensors))
    for name, sched in schedulers.items():
        sched.load_state_dict(doc["schedulers"][name])
