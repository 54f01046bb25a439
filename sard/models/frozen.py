"""FrozenTeacher: a model that distils into others but never learns, saves or trains itself.

Mechanism: the wrapped model is kept *outside* the module tree (stored in ``__dict__`` rather
than registered as a submodule). The wrapper itself is an ``nn.Module`` with no parameters or
buffers, so a parent that holds it

* does not list the teacher in ``parent.parameters()`` (an optimizer never sees it),
* does not save or expect it in ``parent.state_dict()`` / ``load_state_dict()``,
* still moves it with ``parent.to(...)``, ``.cuda()``, ``.half()`` (``_apply`` is forwarded),
* cannot switch it to training: ``train(mode)`` always leaves it in eval mode.

All parameters get ``requires_grad=False``; ``forward``, ``extract_features``, ``predict_masks``,
``forward_semantic`` and any other method reached through the wrapper run under
``torch.no_grad()`` (not ``inference_mode``: its tensors could not be saved by autograd for the
student's losses). Other attributes (``family``, ``tap_channels``, ``image_size`` ...) are read
from the wrapped model. Load the teacher's weights before wrapping it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch
import torch.nn as nn

_HIDDEN = "_frozen_model"


class FrozenTeacher(nn.Module):
    """Wrap ``model`` so it is frozen, in eval mode, and invisible to the parent's params/state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if isinstance(model, FrozenTeacher):
            model = model.module
        for param in model.parameters():
            param.requires_grad_(False)
        model.eval()
        # object.__setattr__ bypasses nn.Module's registration of submodules.
        object.__setattr__(self, _HIDDEN, model)
        self.training = False

    @property
    def module(self) -> nn.Module:
        """The wrapped model (frozen, in eval mode)."""
        return self.__dict__[_HIDDEN]

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Ignore ``mode``: a teacher always stays in eval mode."""
        self.training = False
        self.module.eval()
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> "FrozenTeacher":
        # Device/dtype moves of the parent reach the hidden model too.
        self.module._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def extract_features(self, *args: Any, **kwargs: Any) -> Any:
        """Taps of the wrapped promptable model, under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module.extract_features(*args, **kwargs)

    def predict_masks(self, *args: Any, **kwargs: Any) -> Any:
        """Mask prediction of the wrapped promptable model, under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module.predict_masks(*args, **kwargs)

    def forward_semantic(self, *args: Any, **kwargs: Any) -> Any:
        """Semantic forward of the wrapped model, under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module.forward_semantic(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == _HIDDEN or _HIDDEN not in self.__dict__:
                raise
        value = getattr(self.__dict__[_HIDDEN], name)
        if inspect.ismethod(value):
            return _no_grad(value)
        return value

    def extra_repr(self) -> str:
        return f"frozen {type(self.module).__name__}"


def _no_grad(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return method(*args, **kwargs)

    return wrapper
