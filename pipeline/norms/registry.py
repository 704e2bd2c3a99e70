"""Norm registry: a name → a `NormSpec`, everything the pipeline knows about that norm, in one place.

Nothing else compares norm names: validation, the model spec (TE fusion), the recipe (α₀, embedding
scalar, weight decay), telemetry, the fused residual layer, bench-model and the compare/S-curve analysis
all read the spec. Register a norm with its traits:

    @register_norm("scaled_tanh", has_alpha=True, site_params=alpha_recipe(paper_alpha_init))
    class ScaledTanh(nn.Module): ...

and list its module under the run config's `custom_imports` so the name is known before validation.
`model.norm.type: "pkg.module:Class"` also works without registering (no traits: plain params, no α
telemetry; if the class was registered under a name, that name's spec applies). See docs/norms.md.

Importing this module imports no torch: built-in norms name their class by import path, resolved when a
model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipeline.config.schema import NormConfig

SiteParams = Callable[["NormConfig", int, str], dict[str, Any]]
Analysis = Literal["scurve", "alpha"]
SITES = ("attention", "mlp", "final", "qk")


def no_params(norm: NormConfig, width: int, site: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class NormSpec:
    """A norm and its traits. Built by megatron as `module(config=TransformerConfig, hidden_size=int,
    eps=float, **site_params(norm_config, width, site))` at every site (attention, mlp, final, qk)."""

    name: str
    module: type | str  # the nn.Module class, or "pkg.module:Class" imported when first needed
    # A learnable scalar `alpha` (1 element; `weight` per channel, optional): telemetry logs α (and γ)
    # per site, evaluation plots α over training, and the α₀ it started from is site_params' "alpha_init".
    has_alpha: bool = False
    site_params: SiteParams = no_params  # per-site constructor params from the run config (α₀ by width, ...)
    embedding_scale: bool = False  # `model.embedding_scale: auto` adds the learnable √d embedding scalar
    decay_norm_params: bool = False  # `model.norm.weight_decay: auto` decays this norm's params (α, γ, β)
    te_fused: str | None = None  # TransformerConfig.normalization when TE fuses it into the next linear
    kernel_op: str | None = None  # the `pipeline.kernels` op its forward calls with the module's `kernel`
    fused_add_op: str | None = None  # `pipeline.kernels` op fusing the residual add into this norm
    # The norm of the exported Hugging Face model (`pipeline.hf`: "rmsnorm" is LLaMA's own, "dyt" / "derf"
    # LlamaDyT's, same math and parameter names); None: runs with this norm cannot be exported.
    hf_norm: str | None = None
    # How `make compare` / `scurve` analyse a trained run: "scurve" (hook the norm; module must be an
    # nn.LayerNorm/nn.RMSNorm), "alpha" (α over training); None: "alpha" if has_alpha, else not analysed.
    analysis: Analysis | None = None

    def __post_init__(self) -> None:
        if self.analysis is None and self.has_alpha:
            object.__setattr__(self, "analysis", "alpha")

    @property
    def cls(self) -> type:
        """The module class (imports it, and torch, when named by path)."""
        return _import_class(self.module, self.name) if isinstance(self.module, str) else self.module

    @property
    def module_path(self) -> str:
        m = self.module
        return m if isinstance(m, str) else f"{m.__module__}:{m.__qualname__}"

    def params(self, norm: NormConfig, width: int, site: str) -> dict[str, Any]:
        if site not in SITES:
            raise ValueError(f"unknown norm site {site!r} (sites: {', '.join(SITES)})")
        return self.site_params(norm, width, site)


_NORMS: dict[str, NormSpec] = {}


def register(spec: NormSpec) -> NormSpec:
    """Add a spec; the same name twice is an error unless it names the same class (a re-import)."""
    old = _NORMS.get(spec.name)
    if old is not None and old.module_path != spec.module_path:
        raise ValueError(f"norm {spec.name!r} is already registered to {old.module_path}")
    if ":" in spec.name:
        raise ValueError(f"norm name {spec.name!r}: ':' is reserved for 'package.module:Class' paths")
    _NORMS[spec.name] = spec
    return spec


def register_norm(name: str, **traits: Any) -> Callable[[type], type]:
    """Class decorator: `@register_norm("mynorm", has_alpha=True, ...)`; traits are `NormSpec` fields."""

    def deco(cls: type) -> type:
        register(NormSpec(name, cls, **traits))
        return cls

    return deco


def lookup(name: str) -> NormSpec | None:
    """The registered spec, or None (also for "pkg.module:Class" paths: nothing is imported)."""
    return _NORMS.get(name)


def get_spec(name: str) -> NormSpec:
    """The spec of a registered name, or of "package.module:Class" (imported: the spec its class was
    registered with, else a spec with no traits)."""
    if name in _NORMS:
        return _NORMS[name]
    if ":" in name:
        cls = _import_class(name, name)
        return spec_for_class(cls) or NormSpec(name, cls)
    raise ValueError(f"model.norm.type: unknown norm {name!r} (registered: {', '.join(registered_norms())}; "
                     "or 'package.module:Class', or add the module registering it to custom_imports)")


def get_norm(name: str) -> type:
    """The module class of a registered name or "package.module:Class"."""
    return get_spec(name).cls


def spec_for_class(cls: type) -> NormSpec | None:
    """The spec a class was registered with (None if it never was)."""
    path = f"{cls.__module__}:{cls.__qualname__}"
    return next((s for s in _NORMS.values() if s.module_path == path), None)


def has_alpha(module: object) -> bool:
    """Whether a built norm module is of a class registered with an α (DyT-like): what telemetry and the
    saturation diagnostics look at."""
    spec = spec_for_class(type(module))
    return bool(spec and spec.has_alpha)


def registered_norms() -> list[str]:
    """Registered names, in registration order (built-ins first)."""
    return list(_NORMS)


def _import_class(path: str, name: str) -> type:
    mod_name, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.norm.type: cannot import {path!r} (norm {name!r}): {e}") from None
    from torch import nn  # only here: the registry itself stays torch-free

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"model.norm.type: {path!r} is not an nn.Module class")
    return cls
