"""Test-time adaptation and augmentation at prediction, one volume at a time.

* ``tent``: TENT (D. Wang, E. Shelhamer, S. Liu, B. Olshausen, T. Darrell, "Tent: fully
  test-time adaptation by entropy minimization", ICLR 2021), episodic per volume. The
  slices of one volume are one batch. Its batch-norm layers (in ``Method.tta_nets``, the
  segmentation path) normalise with statistics blended from the trained (running) ones and
  the volume's own: ``(1 - alpha) running + alpha volume``, set by one forward pass (the
  prior-weighted statistics of Schneider et al., "Improving robustness against common
  corruptions by covariate shift adaptation", NeurIPS 2020; ``alpha = 1`` is TENT's
  test-batch statistics). Then only the affine parameters (scale and shift) of every
  normalisation layer are updated, by ``steps`` Adam steps at ``lr`` on the mean normalised
  prediction entropy, and the volume is segmented with them.
  Default ``alpha = 0.5``: chosen on the phantom's held-out *source* cases, where TENT must not
  cost Dice (measured there: alpha 0.5 +0.001, 0.75 -0.003, 1.0 -0.010 mean Dice against
  plain prediction; on the phantom LGE cases +0.057, +0.071, +0.083; docs/generalisation.md).
  Every parameter and buffer is restored before and after each volume, so one volume
  never leaks into the next, and the whole procedure is deterministic (full-batch
  gradients, no random numbers). A translator (``Method.prediction_input``) is applied, not adapted.
* ``flip``: the softmax averaged over the four mirrorings of each slice (identity,
  left-right, up-down, both): the cheap baseline. A model trained without flips
  (``augment.flip: false``, the default: flips change the heart's handedness) has never seen
  mirrored hearts; :meth:`TTA.warnings` says so.

The QC row records what TTA changed (:mod:`segshift.inference.predictor`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator

import torch
from torch import nn

from segshift.errors import SegshiftError
from segshift.losses import mean_entropy

TTA_MODES = ("none", "flip", "tent")
MAX_STEPS = 50
MAX_LR = 0.01
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


@dataclasses.dataclass(frozen=True)
class TTAConfig:
    """``segshift predict --tta MODE --tta-steps N --tta-lr LR --tta-alpha A`` (1 <= steps <= 50, 0 < lr <= 0.01, 0 <= A <= 1)."""

    mode: str = "none"
    steps: int = 10
    lr: float = 1e-3
    alpha: float = 0.5
    """Weight of the volume's own batch-norm statistics against the trained (running) ones (1: TENT's test-batch statistics)."""

    def __post_init__(self) -> None:
        if self.mode not in TTA_MODES:
            raise SegshiftError(f"--tta must be one of {', '.join(TTA_MODES)}, got {self.mode!r}")
        if not (isinstance(self.steps, int) and 1 <= self.steps <= MAX_STEPS):
            raise SegshiftError(f"--tta-steps must be an integer in [1, {MAX_STEPS}], got {self.steps!r}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise SegshiftError(f"--tta-lr must be in (0, {MAX_LR}], got {self.lr!r}")
        if not (math.isfinite(self.alpha) and 0 <= self.alpha <= 1):
            raise SegshiftError(f"--tta-alpha must be in [0, 1], got {self.alpha!r}")

    @classmethod
    def from_options(cls, mode: str, steps: int | None = None, lr: float | None = None, alpha: float | None = None) -> TTAConfig:
        """The configuration of ``--tta MODE [--tta-steps N] [--tta-lr LR] [--tta-alpha A]`` (``None``: not given).

        The TENT settings are refused with any other mode, where they would change nothing.
        """
        defaults = cls()
        cfg = cls(
            mode,
            defaults.steps if steps is None else steps,
            defaults.lr if lr is None else lr,
            defaults.alpha if alpha is None else alpha,
        )
        given = [flag for flag, v in (("--tta-steps", steps), ("--tta-lr", lr), ("--tta-alpha", alpha)) if v is not None]
        if given and mode != "tent":
            raise SegshiftError(f"{', '.join(given)} set TENT and do nothing with --tta {mode}: add --tta tent, or drop {', '.join(given)}")
        return cfg

    def describe(self) -> str:
        return {"none": "none", "flip": "flip (4 mirrorings)", "tent": f"tent ({self.steps} steps, lr {self.lr:g}, alpha {self.alpha:g})"}[
            self.mode
        ]


def norm_affine_parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    """The scale and shift of every normalisation layer with affine parameters in ``modules``."""
    params = []
    for net in modules:
        for m in net.modules():
            if isinstance(m, _NORMS):
                params += [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if isinstance(p, nn.Parameter)]
    return params


class TTA:
    """Test-time adaptation or augmentation of one trained method (see the module docstring)."""

    def __init__(self, method, cfg: TTAConfig) -> None:  # noqa: ANN001 - a segshift.methods.base.Method
        self.method, self.cfg = method, cfg
        self.nets = [method.nets[n] for n in method.tta_nets if n in method.nets]
        if cfg.mode == "tent":
            self.params = norm_affine_parameters(self.nets)
            if not self.params:
                raise SegshiftError(
                    f"--tta tent adapts the affine parameters of normalisation layers, and the segmenter of "
                    f"method {method.name} ({', '.join(method.tta_nets)}) has none; use --tta flip or none"
                )
            self._initial = [copy.deepcopy(n.state_dict()) for n in self.nets]
        self.last_entropy: tuple[float | None, float] | None = None

    def warnings(self, cfg: dict) -> list[str]:
        if self.cfg.mode == "flip" and not cfg.get("augment", {}).get("flip", False):
            return [
                "--tta flip: this run was trained without flips (augment.flip: false), so mirrored slices show hearts "
                "of the other handedness, which it never saw"
            ]
        return []

    # -- the two modes ------------------------------------------------------------------
    def probs(self, slices: torch.Tensor, predict: callable) -> torch.Tensor:
        """Softmax ``(Z, C, H, W)`` of one volume's preprocessed slices ``(Z, 1, H, W)``.

        ``predict(x)`` is the plain prediction's logits (the predictor's batch-norm policy applied).
        """
        if self.cfg.mode == "flip":
            out = 0
            for dims in ((), (-1,), (-2,), (-2, -1)):
                x = slices.flip(dims) if dims else slices
                p = torch.softmax(predict(x), dim=1)
                out = out + (p.flip(dims) if dims else p)
            return out / 4
        if self.cfg.mode == "tent":
            return self._tent(slices)
        return torch.softmax(predict(slices), dim=1)

    def _tent(self, slices: torch.Tensor) -> torch.Tensor:
        # the state as it is now (under the predictor's batch-norm policy: the target statistics may be swapped in),
        # restored after the volume; so each volume starts from the trained model, as the first did
        saved = [copy.deepcopy(n.state_dict()) for n in self.nets]
        try:
            return self.adapt(slices)
        finally:
            for net, state in zip(self.nets, saved):
                net.load_state_dict(state)

    def adapt(self, slices: torch.Tensor) -> torch.Tensor:
        """TENT's ``steps`` updates on one volume ``(Z, 1, H, W)``, from the current weights; returns the adapted softmax.

        The weights stay adapted (:meth:`probs` restores them after the volume; this is its core).
        Returns the entropy before and after in :attr:`last_entropy`.
        """
        m = self.method
        x = m.prediction_input(slices.to(m.device))
        with self._adapting(x):
            opt = torch.optim.Adam(self.params, lr=self.cfg.lr)
            first = None
            for _ in range(self.cfg.steps):
                opt.zero_grad(set_to_none=True)
                loss = mean_entropy(m.segmenter_logits(x))
                first = float(loss.detach()) if first is None else first
                loss.backward()
                opt.step()
            with torch.no_grad():
                logits = m.segmenter_logits(x)
        self.last_entropy = (first, float(mean_entropy(logits)))
        return torch.softmax(logits, dim=1)

    def reset(self) -> None:
        """Every parameter and buffer of the segmentation path back to the trained model's (as loaded)."""
        if self.cfg.mode == "tent":
            for net, state in zip(self.nets, self._initial):
                net.load_state_dict(state)

    @contextlib.contextmanager
    def _adapting(self, x: torch.Tensor) -> Iterator[None]:
        """Only the norm affine parameters train; batch norm normalises with the volume's blended statistics.

        The blend (``alpha``) is set once, from one forward pass over the volume; every
        parameter's ``requires_grad`` and every batch norm's momentum are restored after
        (the statistics and parameters themselves by the caller: :meth:`_tent`, or :meth:`reset`).
        """
        grads = [(p, p.requires_grad) for net in self.nets for p in net.parameters()]
        norms = [mod for net in self.nets for mod in net.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
        momenta = [mod.momentum for mod in norms]
        keep = {id(p) for p in self.params}
        try:
            for p, _ in grads:
                p.requires_grad_(id(p) in keep)
            if self.cfg.alpha > 0:  # one pass in train mode: running <- (1 - alpha) running + alpha volume statistics
                for mod in norms:
                    mod.train()
                    mod.momentum = self.cfg.alpha
                with torch.no_grad():
                    self.method.segmenter_logits(x)
            for mod in norms:
                mod.eval()
            with torch.enable_grad():
                yield
        finally:
            for p, flag in grads:
                p.requires_grad_(flag)
            for mod, mom in zip(norms, momenta):
                mod.momentum = mom
                mod.eval()
