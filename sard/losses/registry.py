"""One registry of distillation methods: the method list, config keys and builders derive from it.

A method is one file under ``sard/losses`` holding its loss module and one ``register_method``
call (detectron2's ``from_config`` idea, mmrazor's per-loss config dicts)::

    register_method(
        "mgd",
        keys={"ALPHA": (2e-5, "loss weight"), "LAMBDA": (0.75, "masking ratio")},
        build=lambda cs, ct, **kw: MGDLoss(need_int(cs), need_int(ct), **kw),
        kwargs=lambda hp, inputs: dict(alpha=hp.ALPHA, lambda_mask=hp.LAMBDA),
    )

* ``keys`` become ``MODEL.SARD.<NAME>.<KEY>`` with their defaults (``add_sard_config``), so a
  method's hyperparameters never share a namespace with another's. SARD itself (and "uniform",
  its W = 1/N ablation) reads the top-level ``MODEL.SARD`` keys instead (``node=None``).
* ``build(student_channels, teacher_channels, **kwargs)`` makes the loss module from its own
  keyword arguments (what ``build_distillation_loss`` calls), and ``kwargs(hp, inputs)`` reads
  them from that node and ``MethodInputs`` (promptable or semantic pair, the whole config):
  together they are the method's ``from_config``. The module declares what it consumes
  (``consumes``: "features", "logits" or "multi_features"), which is all the distiller asks of
  it.
* ``taps(cfg)``: the teacher/student taps a method compares (default: the configured TAP of
  each; ReviewKD: its stage list).

``method_names()`` is every registered method plus "none" (the student alone: no teacher, no
head). Nothing else lists methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

NO_DISTILLATION = "none"

Channels = Union[int, Sequence[int]]


@dataclass(frozen=True)
class MethodInputs:
    """What a method's builder gets besides its hyperparameters."""

    student_channels: Channels
    teacher_channels: Channels
    promptable: bool  # SAM-family pair (mask logits per prompt) or semantic (class logits)
    cfg: Any  # the whole config, for methods that read shared keys (SARD's top level)

    @property
    def logit_form(self) -> str:
        """How logit methods read logits: "mask" (sigmoid per prompt) or "class" (softmax)."""
        return "mask" if self.promptable else "class"


@dataclass(frozen=True)
class DistillationMethod:
    """A registered method: its config keys and how to build its loss module."""

    name: str
    build: Callable[..., Any]  # (student_channels, teacher_channels, **kwargs) -> nn.Module
    kwargs: Callable[[Any, MethodInputs], Dict[str, Any]]  # (config node, inputs) -> kwargs
    keys: Dict[str, Tuple[Any, str]] = field(default_factory=dict)
    node: Optional[str] = None  # MODEL.SARD.<node> holds ``keys``; None: MODEL.SARD itself
    taps: Optional[Callable[[Any], List[str]]] = None  # None: the configured TAP of each model

    def hparams(self, cfg) -> Any:
        """The config node the method reads (MODEL.SARD.<node>, or MODEL.SARD)."""
        return cfg.MODEL.SARD[self.node] if self.node else cfg.MODEL.SARD

    def from_config(self, cfg, inputs: MethodInputs) -> Any:
        """The loss module as ``cfg`` describes it."""
        return self.build(
            inputs.student_channels,
            inputs.teacher_channels,
            **self.kwargs(self.hparams(cfg), inputs),
        )


def need_int(value: Any, name: str = "channels") -> int:
    """A positive channel count (feature methods compare one tap)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def need_list(value: Any, name: str = "channels") -> List[int]:
    """Per-stage channel counts (multi-tap methods)."""
    if isinstance(value, int) or not value:
        raise ValueError(f"{name} must be a per-stage list, got {value!r}")
    return [int(c) for c in value]


_REGISTRY: Dict[str, DistillationMethod] = {}


def register_method(
    name: str,
    *,
    build: Callable[..., Any],
    kwargs: Callable[[Any, MethodInputs], Dict[str, Any]],
    keys: Optional[Dict[str, Tuple[Any, str]]] = None,
    taps: Optional[Callable[[Any], List[str]]] = None,
) -> DistillationMethod:
    """Register method ``name`` (lower case); its ``keys`` live under MODEL.SARD.<NAME>
    (upper case). Without keys it reads MODEL.SARD's own keys (SARD and its ablations)."""
    if name in _REGISTRY or name == NO_DISTILLATION:
        raise KeyError(f"distillation method {name!r} is registered twice")
    method = DistillationMethod(
        name=name,
        build=build,
        kwargs=kwargs,
        keys=dict(keys or {}),
        node=name.upper() if keys else None,
        taps=taps,
    )
    _REGISTRY[name] = method
    return method


def registered_methods() -> Dict[str, DistillationMethod]:
    """name -> method, every loss module imported (their files register them)."""
    import sard.losses  # noqa: F401  (importing the package runs every register_method)

    return dict(_REGISTRY)


def method_names() -> Tuple[str, ...]:
    """Every valid MODEL.SARD.METHOD: the registered methods, then "none"."""
    return (*registered_methods(), NO_DISTILLATION)


def get_method(name: str) -> DistillationMethod:
    """The registered method ``name`` (an error lists the valid names)."""
    methods = registered_methods()
    if name not in methods:
        raise KeyError(
            f"MODEL.SARD.METHOD={name!r} is not a distillation method; choose one of "
            f"{', '.join(method_names())}"
        )
    return methods[name]
