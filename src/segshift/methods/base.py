"""The method interface.

A method composes networks and losses and says how one training step goes; the engine owns
everything else (data, loop, precision, memory format, compilation, devices, DDP,
checkpoints, logs, model selection).
So a method file reads like the paper's method section (DomainBed's ``update``/``predict``,
TLlib's "update the segmenter with D frozen, then D").

Contract:

* class attributes ``name``, ``paper``, ``summary`` (for ``segshift methods``), and flags:
  ``uses_target`` (needs unlabelled target batches), ``uses_target_labels`` (an oracle:
  every output is labelled as such).
* ``hparams``: the method's hyper-parameters, declared once as specs with default, allowed
  values and meaning (:mod:`segshift.methods.hparams`); ``self.hp`` is the checked
  ``method:`` section. :meth:`check_hparams` adds rules that tie several keys together.
* :meth:`build_nets` creates ``self.nets`` (an ``nn.ModuleDict``; ``"seg"`` is the
  segmenter): all that prediction needs. :meth:`build_optimizers` creates losses,
  ``self.optimizers`` and ``self.schedulers`` (dicts keyed by name), and any training-only
  network (discriminators). :meth:`build` is both (training).
* :meth:`train_step` receives a :class:`Batch` and returns a dict of floats to log; it
  updates its own optimisers. On the steps the engine logs, ``diagnostics`` is set, and an
  alignment or translation method adds what explains its result
  (:mod:`segshift.methods.diagnostics`) without changing the update. Every network call goes through :meth:`call` (or
  :meth:`segment`, which uses it), see "Precision, channels_last, compile" below.
* :meth:`predict_logits` maps a preprocessed image batch ``(B, 1, H, W)`` to logits: the
  segmentation path (:meth:`segmenter_logits`, differentiable) applied to
  :meth:`prediction_input` (the image, or its translation).
* ``init_nets``: the networks a warm start (``init:`` / ``segshift train --init RUN``)
  takes from a finished run (default ``("seg",)``, the segmenter); every other network
  (discriminators, translators) starts fresh. ``self.warm_started`` says, from ``build``
  on, whether this run starts from such a run, so a staged method can skip the stage the
  init run already did (Unet-GAN's U-Net stage, SDNet-FA's pretraining).
* :meth:`segment` runs the segmenter on several image batches (source, target) under the
  run's batch-norm policy ``train.norm_stats`` (:data:`NORM_STATS`): ``joint`` is one
  forward pass over the concatenated batches, so both domains are normalised with the
  same batch statistics; ``domain`` (per-domain batch norm) normalises each domain with its
  own statistics, in training (one pass per domain) and after it: the segmenter's batch-norm
  layers keep a second set of running statistics for the target (:class:`DomainNormStats`,
  saved with the model as ``seg_target_norm``; ``<segmenter_net>_target_norm`` for a method
  whose segmentation path is another network), used for target-domain inputs at prediction
  (AdaBN, Li et al. 2018; DSBN, Chang et al. CVPR 2019); ``frozen`` keeps the init run's
  running statistics (batch-norm layers of ``init_nets`` stay in eval mode while training);
  ``separate`` is one pass per batch whose running statistics are a mix that neither
  domain was normalised with. The first batch given to :meth:`segment` is the source's, any
  further ones are the target's.

Optional hooks for methods with several stages or an image translator (Unet-GAN, AttENT,
SDNet with factor-based augmentation):

* :meth:`validation_logits`: what model selection scores on *source* validation images
  (default :meth:`predict_logits`; a method that translates target images before
  segmenting validates its segmenter on source images untranslated).
* :meth:`validation_due`: whether validation at this step means anything (a stage that
  leaves the segmenter frozen skips it).
* :meth:`final_nets`: networks whose *final* weights go into the ``best`` checkpoint
  instead of those of the selected step (a translator trained after the segmenter: source
  validation Dice cannot select it, and target labels may not).
* :meth:`figures`: what the method learnt, as the data of figures (translation or factor
  grids, :class:`MethodFigure`): the engine keeps it with the run at the end of training, and
  the report layer draws it (``RUN/figures/*.png``, :mod:`segshift.report.method_figures`).
* :meth:`can_translate`: whether prediction may translate inputs before segmenting them
  (a target-to-source translator); ``translate_at_predict`` (an attribute of every method,
  False unless :meth:`can_translate`) then says whether it does. A translator is only ever
  applied to images of the domain it was trained on: the predictor sets it for the run's own
  target and clears it for any other input.

Precision, channels_last, compile: the engine's. The trainer and the predictor set an
:class:`~segshift.utils.execution.ExecutionPolicy` on the method (:meth:`configure`, from
``train.precision``, ``train.channels_last``, ``train.compile``); a method built outside the
engine runs in float32, NCHW. :meth:`call` is the one way a method runs a network: under the
policy's autocast (bf16 or none), with its 4-D tensor inputs in the policy's memory format.
A method never opens ``torch.autocast`` or converts memory formats itself (a test reads every
method module for it), and computes its losses on ``.float()`` outputs, outside :meth:`call`,
so losses are float32 whatever the precision. :meth:`to_device` puts the networks in the
policy's memory format; the trainer applies ``torch.compile``.

Methods are discovered: every module of :mod:`segshift.methods` is imported by
:func:`~segshift.methods.available_methods`, and ``@register`` makes a class available by
``name``. A new method is one file plus its row in ``docs/training.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from segshift.errors import SegshiftError
from segshift.losses import HybridLoss
from segshift.methods.hparams import HParam
from segshift.methods.hparams import defaults as hp_defaults
from segshift.methods.hparams import validate as hp_validate
from segshift.utils.execution import ExecutionPolicy

REGISTRY: dict[str, type[Method]] = {}

NORM_STATS = ("auto", "domain", "joint", "frozen", "separate")
"""Batch-norm policies (``train.norm_stats``, see the module docstring); ``auto`` is ``domain``."""
TARGET_NORM = "_target_norm"
"""Suffix of the network holding a network's target-domain batch-norm statistics (``seg_target_norm``)."""


def resolve_norm_stats(cfg: Mapping[str, Any]) -> str:
    """The batch-norm policy of a run config (``auto`` resolved; ``frozen`` needs an init run)."""
    policy = cfg["train"].get("norm_stats", "auto")
    if policy not in NORM_STATS:
        raise SegshiftError(f"train.norm_stats must be one of {', '.join(NORM_STATS)}, got {policy!r}")
    warm = cfg.get("init") is not None
    if policy == "auto":
        return "domain"
    if policy == "frozen" and not warm:
        raise SegshiftError("train.norm_stats=frozen keeps the batch-norm statistics of an init run: give --init RUN (or init:)")
    return policy


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if not cls.name or (cls.name in REGISTRY and REGISTRY[cls.name] is not cls):
        raise ValueError(f"method name {cls.name!r} is empty or already registered")
    REGISTRY[cls.name] = cls
    return cls


@dataclasses.dataclass
class Batch:
    """One training step's data (already augmented, on the method's device).

    Attributes:
        source_image: ``(B, 1, H, W)`` labelled images (several source domains mixed).
        source_label: ``(B, H, W)`` int64 labels.
        source_domain: ``(B,)`` index of each sample's source domain.
        target_image: ``(B, 1, H, W)`` unlabelled target images, or ``None``.
        source_views: ``(V, B, 1, H, W)`` randomised views of the source images (GIN-IPA with a
            consistency loss, ``augment.gin``; ``source_views[0]`` is ``source_image``), or ``None``.
    """

    source_image: torch.Tensor
    source_label: torch.Tensor
    source_domain: torch.Tensor
    target_image: torch.Tensor | None = None
    source_views: torch.Tensor | None = None


@dataclasses.dataclass
class MethodFigure:
    """One figure of what a method learnt, as data; the report layer draws it.

    Attributes:
        name: the figure's name, the stem of its file (``translation``: ``RUN/figures/translation.png``).
        kind: how it is drawn, a key of :data:`segshift.report.method_figures.DRAWERS`
            (``image_grid``, ``sdnet_anatomy``, ``sdnet_factor_grid``).
        arrays: its images, numpy arrays by name.
        meta: its text (titles, row names), JSON values by name.
    """

    name: str
    kind: str
    arrays: dict[str, Any]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FigureSamples:
    """A few preprocessed slices for a method's end-of-training figures (numpy, ``(N, H, W)``).

    ``source_label`` is the source slices' labels; target slices come without labels.
    """

    source_image: Any
    source_label: Any
    target_image: Any | None = None


def make_optimizer(params: Any, cfg: Mapping[str, Any], lr: float | None = None) -> torch.optim.Optimizer:
    """Optimiser from the ``train`` config section (adam | adamw | sgd)."""
    kind, lr = cfg["optimizer"], float(lr if lr is not None else cfg["lr"])
    wd = float(cfg["weight_decay"])
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), nesterov=bool(cfg["nesterov"]), weight_decay=wd)
    raise ValueError(f"train.optimizer must be adam, adamw or sgd, got {kind!r}")


def make_loss(cfg: Mapping[str, Any]) -> HybridLoss:
    """Supervised loss from the ``train`` config section: the weights ``loss``; ``dice_background``
    makes the soft Dice term score the background class too.
    """
    options = {"dice": {"include_background": True}} if cfg.get("dice_background", False) else None
    return HybridLoss(dict(cfg["loss"]), options=options)


def make_schedule(opt: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then poly (``(1 - t)^power``), cosine, or constant."""
    kind, warm = cfg["schedule"], int(cfg["warmup_steps"])
    power = float(cfg.get("poly_power", 0.9))
    total = max(1, int(total_steps))

    def factor(step: int) -> float:
        w = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
        t = min(1.0, step / total)
        if kind == "poly":
            return w * (1 - t) ** power
        if kind == "cosine":
            return w * 0.5 * (1 + math.cos(math.pi * t))
        if kind == "constant":
            return w
        raise ValueError(f"train.schedule must be poly, cosine or constant, got {kind!r}")

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Method:
    """Base class of all methods (see the module docstring for the contract).

    Args:
        cfg: the resolved run config (``cfg["method"]`` holds this method's hyper-parameters).
        num_classes: number of labels including background.
        in_channels: image channels (1 for MR).
        device: where the networks live.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses_target: ClassVar[bool] = False
    uses_target_labels: ClassVar[bool] = False
    hparams: ClassVar[dict[str, HParam]] = {}
    """This method's hyper-parameters: the spec of the ``method:`` config section (:mod:`segshift.methods.hparams`)."""
    init_nets: ClassVar[tuple[str, ...]] = ("seg",)
    """Networks a warm start loads from the init run (the rest start fresh)."""
    segmenter_net: ClassVar[str] = "seg"
    """The network of the segmentation path: under ``norm_stats=domain`` its batch-norm layers keep
    target-domain statistics (``<segmenter_net>_target_norm``), used for target-domain inputs at prediction."""
    supports_view_consistency: ClassVar[bool] = False
    """Whether :meth:`train_step` adds GIN-IPA's consistency loss over ``Batch.source_views``
    (:meth:`view_consistency`); the engine refuses ``augment.gin.consistency > 0`` otherwise."""
    supports_ddp: ClassVar[bool] = True
    """Whether the method trains under torchrun/DDP; the engine refuses it otherwise, before it writes anything."""

    def __init__(self, cfg: Mapping[str, Any], num_classes: int, in_channels: int = 1, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.hp = self.validate_hparams(cfg.get("method") or {})
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.device = torch.device(device)
        self.nets = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.execution = ExecutionPolicy()
        """Precision, memory format, compile: the engine's (:meth:`configure`); float32 NCHW until it sets them."""
        self.warm_started = cfg.get("init") is not None
        self.norm_stats = resolve_norm_stats(cfg)
        self.translate_at_predict = False
        self.diagnostics = False
        """Whether this step computes the diagnostics (:mod:`segshift.methods.diagnostics`): the
        engine sets it on the steps it logs; they never change the update."""
        self._wrapped: dict[str, nn.Module] = {}

    # -- hyper-parameters ---------------------------------------------------------------
    @classmethod
    def hparam_defaults(cls) -> dict[str, Any]:
        """The ``method:`` section's defaults."""
        return hp_defaults(cls.hparams)

    @classmethod
    def check_hparams(cls, hp: Mapping[str, Any]) -> None:
        """Rules between keys that one key's spec cannot say (none by default); raise :class:`SegshiftError`."""

    @classmethod
    def validate_hparams(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The complete, checked ``method:`` section (the one validator: each key's spec, then :meth:`check_hparams`)."""
        hp = hp_validate(cls.hparams, values)
        cls.check_hparams(hp)
        return hp

    # -- construction -----------------------------------------------------------------
    def build(self) -> None:
        """Everything training needs: :meth:`build_nets`, then :meth:`build_optimizers`."""
        self.build_nets()
        self.build_optimizers()

    def build_nets(self) -> None:
        """The networks prediction needs (the segmenter ``seg``); subclasses call ``super().build_nets()`` first."""
        from segshift.nets import build_net

        model = self.cfg["model"]
        self.nets["seg"] = build_net(model["name"], self.in_channels, self.num_classes, **(model.get("kwargs") or {}))

    def build_optimizers(self) -> None:
        """Losses, optimisers, schedulers and training-only networks (none here); after :meth:`build_nets`."""

    def total_steps(self) -> int:
        return int(self.cfg["train"]["steps"])

    def add_domain_norm(self) -> None:
        """Under ``norm_stats=domain``: the target-domain statistics of the segmenter's batch norm
        (network :attr:`segmenter_net`; after :meth:`build`, or :meth:`build_nets` for prediction).
        """
        net = self.segmenter_net
        if self.norm_stats == "domain" and self.uses_target and net in self.nets:
            self.nets[net + TARGET_NORM] = DomainNormStats(self.nets[net])

    def reset_target_norm(self) -> None:
        """Start the target statistics from the segmenter's (after a warm start loaded them)."""
        net = self.segmenter_net
        if net + TARGET_NORM in self.nets:
            self.nets[net + TARGET_NORM].copy_from(self.nets[net])

    def checkpoint_nets(self) -> list[str]:
        """Networks a ``best`` checkpoint holds: :meth:`inference_nets` plus the target batch-norm statistics."""
        names = list(self.inference_nets())
        return names + [n for n in self.nets if n.endswith(TARGET_NORM) and n[: -len(TARGET_NORM)] in names]

    @contextlib.contextmanager
    def target_norm(self, net: str | None = None) -> Iterator[None]:
        """Within: the batch-norm layers of ``net`` (default :attr:`segmenter_net`) use (and in train
        mode update) the target statistics; nothing changes where ``net`` keeps none.
        """
        net = net or self.segmenter_net
        store = self.nets[net + TARGET_NORM] if net + TARGET_NORM in self.nets else None  # noqa: SIM401 - ModuleDict has no get
        if store is None:
            yield
            return
        store.swap(self.nets[net])
        try:
            yield
        finally:
            store.swap(self.nets[net])

    def uses_target_norm(self, net: str | None = None) -> bool:
        """Whether target-domain inputs of ``net`` (default :attr:`segmenter_net`) are normalised
        with statistics of their own: it keeps target statistics that a target pass trained.
        """
        key = (net or self.segmenter_net) + TARGET_NORM
        store = self.nets[key] if key in self.nets else None  # noqa: SIM401 - ModuleDict has no get
        return store is not None and store.trained()

    def configure(self, policy: ExecutionPolicy) -> None:
        """The engine's execution policy for every network call (before :meth:`to_device`)."""
        self.execution = policy

    def to_device(self) -> None:
        """The networks on the method's device, in the execution policy's memory format."""
        self.nets.to(self.device)
        self.execution.place(self.nets)

    # -- networks as used in a step (DDP-wrapped where the engine wrapped them) -----------
    def net(self, name: str) -> nn.Module:
        return self._wrapped.get(name, self.nets[name])

    def wrap(self, fn: Callable[[nn.Module], nn.Module]) -> None:
        """Let the engine wrap trainable networks (DistributedDataParallel)."""
        for name, module in self.nets.items():
            if any(p.requires_grad for p in module.parameters()):
                self._wrapped[name] = fn(module)

    def call(self, net: str | nn.Module | Callable[..., Any], *inputs: Any, **kwargs: Any) -> Any:
        """``net(*inputs, **kwargs)`` under the engine's execution policy: the one way a method runs a network.

        Runs under the policy's autocast (bf16, or none under fp32), with every 4-D tensor of
        ``inputs`` in the policy's memory format (other inputs, e.g. lists of features, as
        they are). ``net`` is a name of ``self.nets`` (through :meth:`net`: DDP-wrapped where
        the engine wrapped it), a module, or a callable made of networks (``seg.encoder_features``).
        The output is the networks' own (bfloat16 under bf16): compute losses on its
        ``.float()``, outside this call.
        """
        fn = self.net(net) if isinstance(net, str) else net
        policy = self.execution
        with policy.autocast(self.device.type):
            return fn(*(policy.prepare(x) for x in inputs), **kwargs)

    def call_each(self, net: str | nn.Module, *inputs: torch.Tensor) -> list[Any]:
        """``[net(x) for x in inputs]``, as :meth:`call` but in *one* autocast region.

        Under bf16 the region casts each weight to bfloat16 once, so the gradients of the
        passes meet in that one copy (summed in bfloat16, then accumulated into the float32
        weight); separate :meth:`call` s would sum them in float32. Use it where a network
        sees several batches in separate passes of one loss (a discriminator's real and fake
        images), to keep the arithmetic of that loss.
        """
        fn = self.net(net) if isinstance(net, str) else net
        return self.call(lambda *xs: [fn(x) for x in xs], *inputs)

    # -- training ----------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, optimizer: str, retain_graph: bool = False) -> None:
        """Back-propagate ``loss`` into the parameters of ``self.optimizers[optimizer]`` only.

        ``backward(inputs=...)``: a network this loss does not train (a discriminator on the
        segmenter's side) builds no parameter gradient, and a forward pass two losses share
        (a discriminator's scores of the target) can be back-propagated once for each, each
        loss reaching only its own parameters (the first with ``retain_graph``).
        """
        params = [p for g in self.optimizers[optimizer].param_groups for p in g["params"] if p.requires_grad]
        loss.backward(inputs=params, retain_graph=retain_graph)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def step_schedulers(self) -> None:
        for s in self.schedulers.values():
            s.step()

    def train(self, mode: bool = True) -> None:
        """Train/eval mode; under ``norm_stats=frozen`` the batch-norm layers of ``init_nets`` stay in eval mode."""
        self.nets.train(mode)
        if mode and self.norm_stats == "frozen":
            for name in self.init_nets:
                if name in self.nets:
                    for m in self.nets[name].modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()

    def segment(self, *images: torch.Tensor, net: str = "seg") -> list[Any]:
        """The segmenter's output for each image batch, under ``train.norm_stats``.

        ``joint`` concatenates the batches into one forward pass (one set of batch
        statistics for both domains) and splits the output; otherwise each batch has its
        own pass. Each pass is a :meth:`call` of network ``net``, whose output may be a
        tensor or nested tuples/lists of tensors whose first dimension is the batch.
        """
        module = self.net(net)
        if self.norm_stats == "domain":
            out = []
            for i, x in enumerate(images):
                with self.target_norm(net) if i else contextlib.nullcontext():
                    out.append(self.call(module, x))
            return out
        if self.norm_stats != "joint" or len(images) == 1:
            return self.call_each(module, *images)
        sizes = [x.shape[0] for x in images]
        out = self.call(module, torch.cat(images))
        return [_take(out, sum(sizes[:i]), sizes[i]) for i in range(len(images))]

    def view_consistency(self, batch: Batch, first_logits: torch.Tensor) -> torch.Tensor | None:
        """GIN-IPA's weighted consistency term (``augment.gin.consistency`` x :func:`~segshift.losses.consistency_kl`).

        ``first_logits`` are the segmenter's logits of ``batch.source_image`` (view 0, already
        computed by the step); the other views go through the segmenter here, in one source
        pass. ``None`` when the batch has no views.
        """
        if batch.source_views is None:
            return None
        from segshift.losses import consistency_kl

        v, b = batch.source_views.shape[:2]
        (rest,) = self.segment(batch.source_views[1:].flatten(0, 1))
        logits = torch.cat([first_logits.float()[None], rest.float().view(v - 1, b, *rest.shape[1:])])
        return float(self.cfg["augment"]["gin"]["consistency"]) * consistency_kl(logits)

    # -- prediction -------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, H, W)`` of preprocessed images ``(B, 1, H, W)`` (float32 out):
        :meth:`segmenter_logits` of :meth:`prediction_input`.
        """
        return self.segmenter_logits(self.prediction_input(image))

    # the two halves of prediction (TENT, segshift.inference.tta, adapts the second) -------------
    tta_nets: ClassVar[tuple[str, ...]] = ("seg",)
    """The networks of the segmentation path whose normalisation layers TENT adapts."""

    def prediction_input(self, image: torch.Tensor) -> torch.Tensor:
        """What the segmentation path sees of preprocessed images (a translator's output where prediction translates)."""
        return image

    def segmenter_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The segmentation path's logits (float32), differentiable."""
        return self.call(self.nets["seg"], image.to(self.device)).float()

    def inference_nets(self) -> Iterator[str]:
        """Names of the networks prediction needs (saved in ``best`` checkpoints)."""
        yield from self.nets.keys()

    # -- optional hooks (see the module docstring) -----------------------------------------
    @torch.no_grad()
    def validation_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits scored by model selection on source validation slices."""
        return self.predict_logits(image)

    def validation_due(self, step: int) -> bool:
        """Whether validating at ``step`` can change the selection (default: always)."""
        return True

    def final_nets(self) -> tuple[str, ...]:
        """Inference networks whose final weights replace the selected step's in ``best``."""
        return ()

    def figures(self, samples: FigureSamples) -> list[MethodFigure]:
        """The data of this method's end-of-training figures, computed on ``samples`` (none by default)."""
        return []

    def can_translate(self) -> bool:
        """Whether prediction can translate inputs to the source look first (see ``translate_at_predict``)."""
        return False

    @classmethod
    def describe(cls) -> str:
        return f"{cls.summary} [{cls.paper}]" if cls.paper else cls.summary


class DomainNormStats(nn.Module):
    """A second set of running statistics for every batch-norm layer of a network (per-domain BN).

    The affine parameters stay shared; only the statistics differ, as in AdaBN (Li, Wang,
    Shi, Hou and Liu, "Adaptive Batch Normalization for practical domain adaptation",
    Pattern Recognition 2018) and the statistics half of DSBN (Chang et al., CVPR 2019).
    :meth:`swap` exchanges the statistics tensors with the network's (the objects, not their
    values: autograd keeps the running statistics of a train-mode pass until its backward,
    so they must not change in place in between); ``passes`` counts the target passes made
    in train mode, so a store that never saw a target batch is not used. Under DDP the
    wrapper broadcasts the source statistics at each forward; the target statistics are
    per process until the engine broadcasts every buffer from rank 0 at the end.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.names: list[str] = []
        for name, m in net.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                self.names.append(name)
                for field in _BN_FIELDS:
                    self.register_buffer(_store_key(name, field), getattr(m, field).detach().clone())
        self.register_buffer("passes", torch.zeros((), dtype=torch.long))

    def _modules_of(self, net: nn.Module) -> list[nn.Module]:
        modules = dict(net.named_modules())
        return [modules[name] for name in self.names]

    @torch.no_grad()
    def swap(self, net: nn.Module) -> None:
        """Exchange this store's statistics with ``net``'s (call twice to undo)."""
        for name, m in zip(self.names, self._modules_of(net)):
            for field in _BN_FIELDS:
                key = _store_key(name, field)
                mine, theirs = getattr(self, key), getattr(m, field)
                setattr(m, field, mine)
                setattr(self, key, theirs)
        if net.training:
            self.passes += 1

    @torch.no_grad()
    def copy_from(self, net: nn.Module) -> None:
        for name, m in zip(self.names, self._modules_of(net)):
            for field in _BN_FIELDS:
                getattr(self, _store_key(name, field)).copy_(getattr(m, field))

    def trained(self) -> bool:
        return bool(self.passes > 0)


_BN_FIELDS = ("running_mean", "running_var", "num_batches_tracked")


def _store_key(module: str, field: str) -> str:
    return f"{module.replace('.', '__')}__{field}"


def _take(out: Any, start: int, n: int) -> Any:
    """Rows ``start:start+n`` of a tensor, or of every tensor in nested tuples/lists."""
    if isinstance(out, torch.Tensor):
        return out[start : start + n]
    if isinstance(out, (tuple, list)):
        return type(out)(_take(o, start, n) for o in out)
    raise TypeError(f"cannot split a segmenter output of type {type(out).__name__}")
