"""Norm registry: a name (or "package.module:Class") → a module class with megatron's norm contract.

Every norm is constructed by megatron as `Norm(config=TransformerConfig, hidden_size=int, eps=float)`
plus the keyword params the spec carries (α₀, bias, kernel, ...). Register your own with
`@register_norm("mynorm")`, or point `model.norm.type` at "my_pkg.my_module:MyNorm" without
registering anything.
"""

import importlib
from collections.abc import Callable

from torch import nn

_NORMS: dict[str, type[nn.Module]] = {}


def register_norm(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _NORMS and _NORMS[name] is not cls:
            raise ValueError(f"norm {name!r} is already registered to {_NORMS[name].__qualname__}")
        _NORMS[name] = cls
        return cls

    return deco


def get_norm(name: str) -> type[nn.Module]:
    """Look up a registered norm, or import "package.module:Class"."""
    if name in _NORMS:
        return _NORMS[name]
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"model.norm.type: cannot import {name!r}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"model.norm.type: {name!r} is not an nn.Module class")
        return cls
    raise ValueError(f"model.norm.type: unknown norm {name!r} (registered: {', '.join(registered_norms())})")


def registered_norms() -> list[str]:
    return sorted(_NORMS)
