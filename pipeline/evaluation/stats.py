"""Summary statistics for seed replicates: mean ± sample std, and paired differences with a t-interval.

Paired design: variant and baseline share a seed, hence initial weights' RNG stream and data order, so
the per-seed differences d_i = variant_i − baseline_i cancel the seed-to-seed variation both share. The
interval is the Student-t interval on the mean difference, mean(d) ± t_{1−a/2, n−1} · sd(d)/√n, which
assumes the d_i are independent draws from a normal distribution. With n = 1 no interval exists; with
n = 2 the t quantile is 12.7, so expect wide intervals from few seeds.

scipy is not a dependency: the t quantile is the inverse of the regularized incomplete beta function,
evaluated with the Lentz continued fraction (Numerical Recipes 6.4) and inverted by bisection.
"""

import functools
import math
from dataclasses import asdict, dataclass


@dataclass
class Summary:
    n: int
    mean: float
    std: float | None  # sample std (ddof 1); None for n = 1


@dataclass
class PairedDiff:
    n: int
    mean: float  # mean of variant − baseline
    std: float | None  # sample std of the differences
    ci_low: float | None  # None when n < 2
    ci_high: float | None
    confidence: float

    @property
    def excludes_zero(self) -> bool | None:
        if self.ci_low is None:
            return None
        return self.ci_low > 0 or self.ci_high < 0

    def as_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("summarize: no values")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Summary(n, mean, std)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x={x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_beta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_beta + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@functools.cache  # pure, and called with the same (p, df) for every metric of a comparison
def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with `df` degrees of freedom (bisection on the CDF; ~1e-9 relative)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_ppf: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def paired_difference(variant: list[float], baseline: list[float], confidence: float = 0.95) -> PairedDiff:
    """t-interval on mean(variant_i − baseline_i); the lists are aligned by seed."""
    if len(variant) != len(baseline):
        raise ValueError(f"paired_difference: {len(variant)} variant vs {len(baseline)} baseline values")
    s = summarize([v - b for v, b in zip(variant, baseline, strict=True)])
    if s.std is None:
        return PairedDiff(s.n, s.mean, None, None, None, confidence)
    half = t_ppf(0.5 + confidence / 2.0, s.n - 1) * s.std / math.sqrt(s.n)
    return PairedDiff(s.n, s.mean, s.std, s.mean - half, s.mean + half, confidence)
