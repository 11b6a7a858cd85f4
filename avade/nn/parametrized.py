"""Pickling for modules with a weight-normed child (``torch.nn.utils.parametrizations.weight_norm``).

torch gives a parametrized module a class it makes at run time (``ParametrizedConv2d``), which pickle cannot
name, and refuses to pickle it ("only supported through state_dict()"): a whole model with weight norm could
not be pickled, ``torch.save(model)``'d or sent to another process. :func:`picklable_state` pickles such a child
as its plain module (its own class, without the weight) plus the weight norm's ``g`` and ``v`` (the very
parameters: exact, ``requires_grad`` kept), and weight-norms it again on load. A child with any other
parametrization is left as it is (torch's own error says it cannot be pickled).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.nn.utils.parametrizations import _WeightNorm


def _rebuild(plain: nn.Module, normed: dict[str, tuple[int, dict[str, torch.Tensor]]]) -> nn.Module:
    for name, (dim, originals) in normed.items():
        # a weight of v's shape (its value is replaced by g and v below)
        plain.register_parameter(name, nn.Parameter(originals["original1"].detach().clone()))
        parametrizations.weight_norm(plain, name, dim)
        for key, tensor in originals.items():
            setattr(plain.parametrizations[name], key, tensor)
    return plain


def _weight_normed(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module) and all(
        len(chain) == 1 and isinstance(chain[0], _WeightNorm) for chain in module.parametrizations.values())


class _WeightNormed:
    """Stands for a weight-normed module in a pickled state; unpickles to the weight-normed module."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __deepcopy__(self, memo: dict[int, Any]) -> nn.Module:
        return copy.deepcopy(self.module, memo)  # torch deep-copies parametrized modules itself

    def __reduce__(self) -> tuple[Any, ...]:
        module = self.module
        base = type(module).__bases__[0]  # torch's parametrized class derives from the module's own
        plain = base.__new__(base)
        plain.__dict__.update(module.__dict__)
        plain._modules = {k: v for k, v in module._modules.items() if k != "parametrizations"}
        # weight_norm's state-dict hook (a local function: not picklable) comes back with weight_norm on load
        plain._load_state_dict_pre_hooks = OrderedDict(
            (k, h) for k, h in module._load_state_dict_pre_hooks.items()
            if getattr(getattr(h, "hook", None), "__name__", "") != "_weight_norm_compat_hook")
        normed = {name: (chain[0].dim, {k: v for k, v in chain.named_parameters(recurse=False)})
                  for name, chain in module.parametrizations.items()}
        return _rebuild, (plain, normed)


def picklable_state(module: nn.Module) -> dict[str, Any]:
    """``module.__getstate__()`` with its weight-normed children pickled as their plain modules and ``g`` and
    ``v`` (see the module doc): for the ``__getstate__`` of a module that has such children."""
    state = nn.Module.__getstate__(module)
    state["_modules"] = {k: _WeightNormed(m) if _weight_normed(m) else m for k, m in state["_modules"].items()}
    return state


def restored_state(state: dict[str, Any]) -> dict[str, Any]:
    """:func:`picklable_state`'s ``state`` with its weight-normed children as they are: for the ``__setstate__`` of
    a module whose ``__getstate__`` is that (``copy.copy`` hands the state on without pickling it)."""
    state["_modules"] = {k: m.module if isinstance(m, _WeightNormed) else m for k, m in state["_modules"].items()}
    return state
