"""Building a method: the one sequence that readies a :class:`~segshift.methods.base.Method`.

The trainer, the predictor, a suite's planner and the tests all build a method through
:func:`build_method`, so a network or a batch-norm policy added here reaches every one of
them. The steps, in order:

1. the class named by ``cfg["method_name"]``, constructed for ``device``;
2. its execution policy (:meth:`~segshift.methods.base.Method.configure`): precision, memory
   format and compile from the config's ``train`` section; prediction never compiles;
3. its networks: for ``train`` and ``plan`` everything training needs
   (:meth:`~segshift.methods.base.Method.build`: optimisers, losses, discriminators), for
   ``predict`` the networks prediction needs (:meth:`~segshift.methods.base.Method.build_nets`);
4. the target-domain batch-norm statistics under ``norm_stats=domain``
   (:meth:`~segshift.methods.base.Method.add_domain_norm`);
5. weights: a warm start's ``init_nets`` (then the target statistics start from the loaded
   segmenter's), or whatever ``load`` puts in (a checkpoint's);
6. the networks on the device in the policy's memory format
   (:meth:`~segshift.methods.base.Method.to_device`); ``predict`` leaves them in eval mode.

``plan`` is ``train`` with no weights, on the CPU by default: it shows, before any data is
read, that a config builds (a discriminator too deep for its input fails here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import torch

from segshift.engine.warmstart import InitRun, load_init_weights
from segshift.methods import get_method
from segshift.methods.base import Method
from segshift.utils.execution import ExecutionPolicy

Purpose = Literal["train", "predict", "plan"]
PURPOSES: tuple[str, ...] = get_args(Purpose)


def build_method(
    cfg: Mapping[str, Any],
    purpose: Purpose,
    *,
    num_classes: int,
    device: torch.device | str = "cpu",
    precision: str | None = None,
    init: InitRun | None = None,
    load: Callable[[Method], object] | None = None,
) -> Method:
    """The method of a resolved run config, built for ``purpose`` (the steps in the module docstring).

    Args:
        cfg: a resolved run config (``method_name``, ``model``, ``train``, ``method``, ...).
        purpose: ``train`` (the trainer), ``predict`` (the predictor) or ``plan`` (a build check).
        num_classes: segmentation classes, background included.
        device: where the networks go.
        precision: overrides ``train.precision`` (``segshift predict --precision``).
        init: ``train`` only: the finished run whose ``init_nets`` this run starts from.
        load: ``train`` or ``predict``: loads weights into the built method (a checkpoint's).

    Raises:
        ValueError: an unknown ``purpose``, or weights given to a purpose that takes none.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    if init is not None and purpose != "train":
        raise ValueError(f"init weights are for training, not {purpose}")
    if load is not None and purpose == "plan":
        raise ValueError("plan builds without weights")
    method = get_method(cfg["method_name"])(cfg, num_classes=num_classes, in_channels=1, device=device)
    train = cfg["train"] if precision is None else {**cfg["train"], "precision": precision}
    policy = ExecutionPolicy.from_config(train, method.device)
    method.configure(dataclasses.replace(policy, compile=False) if purpose == "predict" else policy)
    if purpose == "predict":
        method.build_nets()
    else:
        method.build()
    method.add_domain_norm()
    if init is not None:
        load_init_weights(init, {k: method.nets[k] for k in method.init_nets})
        method.reset_target_norm()
    if load is not None:
        load(method)
    method.to_device()
    if purpose == "predict":
        method.train(False)
    return method


__all__ = ["PURPOSES", "Purpose", "build_method"]
