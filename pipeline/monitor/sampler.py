"""DyT saturation and residual-stream scale, sampled off the step path's full tensors.

Forward hooks on every norm site do nothing on ordinary steps. On a sampled step (`arm`), each site's first
call (the first micro-batch; a recompute or later micro-batch finds it disarmed) reads `tokens` token rows
of its input, spread evenly along the sequence, and keeps a few sums on the device:
    n, Σx² (RMS of the site's input: for the attention site, the residual stream entering the block)
    and for DyT-like norms, with z = α·x (+ s for Derf): #|z| > t for each threshold, Σ|tanh z|.
No host sync and no collective until `take`, called at a log step on every rank.
"""

import math

import torch
from torch import nn

from pipeline.norms import has_alpha

from . import tags


def sample_rows(x: torch.Tensor, tokens: int) -> torch.Tensor:
    """Up to `tokens` rows of x ([seq, batch, hidden], or any [..., hidden]) from positions spread evenly along
    the first dimension. Slicing is a view: only the chosen rows are ever read."""
    per_position = math.prod(x.shape[1:-1])
    positions = max(1, math.ceil(tokens / per_position))
    stride = max(1, x.shape[0] // positions)
    return x[::stride][:positions].reshape(-1, x.shape[-1])[:tokens]


def squash_argument(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """z in γ·tanh(z) (DyT) or γ·erf(z) (Derf): α·x, plus the learnable shift when the norm has one."""
    z = x * norm.alpha.detach().float()
    shift = getattr(norm, "shift", None)
    return z + shift.detach().float() if isinstance(shift, torch.Tensor) else z


def site_stats(norm: nn.Module, x: torch.Tensor, tokens: int, thresholds: list[float]) -> torch.Tensor:
    """[n, Σx²] (+ [#|z| > t for each t, Σ|tanh z|] for DyT-like norms) of a sample of x, fp64 on x's device."""
    rows = sample_rows(x.detach(), tokens).float()
    parts = [torch.tensor(float(rows.numel()), device=rows.device), (rows * rows).sum()]
    if has_alpha(norm):
        z = squash_argument(norm, rows).abs()
        parts += [(z > t).sum() for t in thresholds] + [torch.tanh(z).sum()]
    return torch.stack([p.double() for p in parts])


def summarize(sums: dict[str, list[float]], thresholds: list[float]) -> dict[str, float]:
    """Tagged values from {site: summed site_stats over ranks}."""
    out = {}
    for site, v in sums.items():
        n = v[0]
        out[tags.site_tag(tags.RESIDUAL_RMS, site)] = math.sqrt(v[1] / n)
        if len(v) > 2:
            for t, c in zip(thresholds, v[2:-1], strict=True):
                out[tags.site_tag(tags.saturation(t), site)] = c / n
            out[tags.site_tag(tags.TANH_MEAN, site)] = v[-1] / n
    return out


class NormSampler:
    def __init__(self, sites: dict[str, nn.Module], tokens: int, thresholds: list[float]) -> None:
        self.tokens, self.thresholds = tokens, thresholds
        self.sites = sites
        self._armed: set[str] = set()
        self._sums: dict[str, torch.Tensor] = {}
        # prepend: run before hooks that release parameters after the forward (ZeRO-3)
        self._handles = [m.register_forward_hook(self._hook(site), prepend=True) for site, m in sites.items()]

    def _hook(self, site: str):
        def hook(module: nn.Module, args: tuple, output) -> None:
            if site not in self._armed:
                return
            self._armed.discard(site)
            with torch.no_grad():
                self._sums[site] = site_stats(module, args[0], self.tokens, self.thresholds)
        return hook

    def arm(self) -> None:
        """Sample every site once during the next forward pass."""
        self._armed = set(self.sites)

    def take(self) -> dict[str, list[float]]:
        """This rank's sums since the last `take` (one device sync), then forget them."""
        sums, self._sums, self._armed = self._sums, {}, set()
        if not sums:
            return {}
        width = max(v.numel() for v in sums.values())
        values = torch.stack([torch.nn.functional.pad(v, (0, width - v.numel())) for v in sums.values()]).cpu()
        return {site: values[i, :v.numel()].tolist() for i, (site, v) in enumerate(sums.items())}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class SaturationWatch:
    """Early warning: a watched site's saturated fraction at or above `level` in `samples` consecutive samples.
    Each site is reported once per streak; a warning, never a stop."""

    def __init__(self, kinds: list[str], level: float, samples: int, threshold: float) -> None:
        self.kinds, self.level, self.samples, self.threshold = set(kinds), level, samples, threshold
        self.streak: dict[str, int] = {}

    def update(self, values: dict[str, float]) -> dict[str, float]:
        """{site: fraction} of sites whose streak reached `samples` with this sample."""
        fired = {}
        for site, fraction in tags.by_site(tags.saturation(self.threshold), values).items():
            if tags.site_kind(site) not in self.kinds:
                continue
            self.streak[site] = self.streak.get(site, 0) + 1 if fraction >= self.level else 0
            if self.streak[site] == self.samples:
                fired[site] = fraction
        return fired
