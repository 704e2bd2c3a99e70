"""Statistics on inputs with known answers: t quantiles (closed forms and tables), summaries, paired
t-intervals, and the interval's coverage on simulated data."""

import math
import random
import statistics

import pytest

from pipeline.evaluation.stats import betainc, paired_difference, summarize, t_cdf, t_ppf


@pytest.mark.parametrize("p", [0.6, 0.75, 0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_closed_forms(p):
    # df = 1 is the Cauchy distribution; df = 2 has t = (2p − 1) / sqrt(2p(1 − p)).
    assert t_ppf(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-8)
    assert t_ppf(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-8)
    assert t_ppf(1 - p, 2) == pytest.approx(-t_ppf(p, 2), rel=1e-12)


@pytest.mark.parametrize("df, expected", [(3, 3.182446305), (4, 2.776445105), (5, 2.570581836),
                                          (10, 2.228138852), (30, 2.042272456)])
def test_t_quantile_matches_tables(df, expected):
    assert t_ppf(0.975, df) == pytest.approx(expected, abs=1e-8)


def test_t_tends_to_the_normal_and_cdf_inverts():
    assert t_ppf(0.975, 1e7) == pytest.approx(statistics.NormalDist().inv_cdf(0.975), abs=1e-5)
    for df in (1, 3, 7.5, 40):
        for t in (-3.0, -0.4, 0.0, 1.1, 6.0):
            assert t_ppf(t_cdf(t, df), df) == pytest.approx(t, abs=1e-7)


def test_incomplete_beta_known_values():
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert betainc(1.0, 1.0, x) == pytest.approx(x)  # uniform
        assert betainc(3.0, 1.0, x) == pytest.approx(x**3)
        assert betainc(2.5, 4.0, x) == pytest.approx(1 - betainc(4.0, 2.5, 1 - x), abs=1e-12)


def test_summarize():
    s = summarize([2, 4, 4, 4, 5, 5, 7, 9])
    assert (s.n, s.mean) == (8, 5.0)
    assert s.std == pytest.approx(math.sqrt(32 / 7))
    assert summarize([3.5]).std is None


def test_paired_difference_known_answer():
    # Differences 1, 2, 3: mean 2, sd 1, half width t(0.975, 2)/sqrt(3) = 4.302652729911275/sqrt(3).
    d = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert (d.n, d.mean, d.std) == (3, 2.0, 1.0)
    assert (d.ci_low, d.ci_high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert d.excludes_zero is False  # half width 2.48 > 2
    assert paired_difference([11.9, 12.0, 12.1], [10.0, 10.0, 10.0]).excludes_zero is True  # sd 0.1
    assert paired_difference([9.0, 8.0, 8.1], [10.0, 10.0, 10.0]).excludes_zero is True  # below 0


def test_paired_difference_one_seed_and_mismatch():
    d = paired_difference([7.0], [6.5])
    assert d.mean == 0.5 and d.ci_low is None and d.excludes_zero is None
    with pytest.raises(ValueError, match="1 variant vs 2 baseline"):
        paired_difference([1.0], [1.0, 2.0])


def test_pairing_removes_the_shared_seed_effect():
    # A large per-seed offset shared by both arms must not widen the interval of the difference.
    rng = random.Random(1)
    seed_effect = [rng.gauss(0, 5.0) for _ in range(6)]
    base = [e + rng.gauss(0, 0.01) for e in seed_effect]
    variant = [e + 0.1 + rng.gauss(0, 0.01) for e in seed_effect]
    d = paired_difference(variant, base)
    assert d.ci_high - d.ci_low < 0.1 and d.ci_low > 0


@pytest.mark.parametrize("n", [2, 5])
def test_interval_coverage_is_nominal(n):
    # With the normal quantile instead of t, coverage at n = 5 would be ~88%, at n = 2 ~70%.
    rng = random.Random(0)
    trials, hits = 4000, 0
    for _ in range(trials):
        diffs = [rng.gauss(0.3, 1.0) for _ in range(n)]
        d = paired_difference(diffs, [0.0] * n)
        hits += d.ci_low <= 0.3 <= d.ci_high
    assert 0.935 <= hits / trials <= 0.965
