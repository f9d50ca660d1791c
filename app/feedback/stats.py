"""A/B statistics of a running split, from the feedback store's counters of one spec revision.

Per arm: requests assigned, feedbacks, the success rate (share of labelled feedbacks whose
label the model predicted) with a Wilson confidence interval, the mean reward; against the
primary: the difference, a two-sided two-proportion z-test on success rates and Welch's
t-test on rewards, and how many more labelled feedbacks per arm the configured minimum
effect would need (power analysis, normal approximation). The sample-ratio-mismatch check
compares the requests each arm received with what the weights in force when each was routed
predicted (chi-square goodness of fit), so it holds while a bandit moves the weights too.

Assumptions, as for any such test: feedbacks are independent (a user sending many requests
breaks this: route by user key and read the figures with care), the normal approximation
holds (a few dozen successes and failures per arm), and the test is read once at the planned
sample size, not repeatedly (no correction for peeking is made).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scipy import stats as scipy_stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

from app.registry.spec import AnalysisSettings, SpecBody

Totals = Mapping[str, Mapping[str, float]]


def _rate(fields: Mapping[str, float]) -> tuple[int, int]:
    return int(fields.get("label_n", 0)), int(fields.get("label_correct", 0))


def _reward_stats(fields: Mapping[str, float]) -> tuple[int, float | None, float | None]:
    n = int(fields.get("reward_n", 0))
    if n == 0:
        return 0, None, None
    mean = fields.get("reward_sum", 0.0) / n
    if n < 2:
        return n, mean, None
    variance = max(0.0, (fields.get("reward_sq", 0.0) - n * mean * mean) / (n - 1))
    return n, mean, math.sqrt(variance)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def arm_figures(fields: Mapping[str, float], alpha: float) -> dict[str, Any]:
    n, successes = _rate(fields)
    low, high = (None, None)
    if n:
        low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    reward_n, reward_mean, reward_std = _reward_stats(fields)
    return {
        "assigned": int(fields.get("assigned", 0)),
        "expected": round(fields.get("expected", 0.0), 3),
        "feedbacks": int(fields.get("feedbacks", 0)),
        "labelled": n,
        "successes": successes,
        "success_rate": successes / n if n else None,
        "ci_low": _finite(low),
        "ci_high": _finite(high),
        "rewards": reward_n,
        "reward_mean": reward_mean,
        "reward_std": reward_std,
    }


def compare(
    primary: Mapping[str, float], arm: Mapping[str, float], settings: AnalysisSettings
) -> dict[str, Any]:
    """The arm against the primary: differences, p-values, and samples still needed."""
    n0, s0 = _rate(primary)
    n1, s1 = _rate(arm)
    result: dict[str, Any] = {
        "difference": None,
        "z_test_p": None,
        "reward_difference": None,
        "welch_t_test_p": None,
        "samples_needed_per_arm": None,
        "more_samples_needed": None,
        "significant": False,
    }
    if n0 and n1:
        result["difference"] = s1 / n1 - s0 / n0
        if 0 < s0 + s1 < n0 + n1:
            _, p_value = proportions_ztest([s1, s0], [n1, n0], alternative="two-sided")
            result["z_test_p"] = _finite(float(p_value))
        needed = _samples_needed(s0 / n0, settings)
        if needed is not None:
            result["samples_needed_per_arm"] = needed
            result["more_samples_needed"] = max(0, needed - min(n0, n1))
    r0, mean0, std0 = _reward_stats(primary)
    r1, mean1, std1 = _reward_stats(arm)
    if mean0 is not None and mean1 is not None:
        result["reward_difference"] = mean1 - mean0
        if std0 is not None and std1 is not None and (std0 > 0 or std1 > 0):
            test = scipy_stats.ttest_ind_from_stats(
                mean1, std1, r1, mean0, std0, r0, equal_var=False
            )
            result["welch_t_test_p"] = _finite(float(test.pvalue))
    p_values = [p for p in (result["z_test_p"], result["welch_t_test_p"]) if p is not None]
    result["significant"] = bool(p_values) and min(p_values) < settings.alpha
    return result


def _samples_needed(baseline: float, settings: AnalysisSettings) -> int | None:
    target = min(max(baseline + settings.min_effect, 0.0), 1.0)
    if baseline - settings.min_effect >= 0 and baseline + settings.min_effect > 1:
        target = baseline - settings.min_effect  # room only below: power for a drop
    effect = abs(proportion_effectsize(target, baseline))
    if effect == 0 or not math.isfinite(effect):
        return None
    n = NormalIndPower().solve_power(
        effect_size=effect, alpha=settings.alpha, power=settings.power, ratio=1.0
    )
    return math.ceil(float(n))


def sample_ratio(totals: Totals, arms: list[str], threshold: float) -> dict[str, Any]:
    observed = [totals.get(tag, {}).get("assigned", 0.0) for tag in arms]
    expected = [totals.get(tag, {}).get("expected", 0.0) for tag in arms]
    result: dict[str, Any] = {
        "observed": dict(zip(arms, map(int, observed), strict=True)),
        "expected": {t: round(e, 3) for t, e in zip(arms, expected, strict=True)},
        "chi_square_p": None,
        "mismatch": False,
        "threshold": threshold,
    }
    total = sum(observed)
    if total < 1 or any(e <= 0 for e in expected):
        return result
    scale = total / sum(expected)  # flushes may leave the two a few requests apart
    test = scipy_stats.chisquare(observed, [e * scale for e in expected])
    p_value = _finite(float(test.pvalue))
    result["chi_square_p"] = p_value
    result["mismatch"] = p_value is not None and p_value < threshold
    return result


def ab_report(spec: SpecBody, totals: Totals) -> dict[str, Any]:
    """The A/B report of the running split: per arm, against the primary, and the SRM check."""
    settings = spec.analysis
    arms = [spec.primary, *(c.tag for c in spec.candidates)]
    figures = {tag: arm_figures(totals.get(tag, {}), settings.alpha) for tag in arms}
    for candidate in spec.candidates:
        figures[candidate.tag]["versus_primary"] = compare(
            totals.get(spec.primary, {}), totals.get(candidate.tag, {}), settings
        )
    return {
        "primary": spec.primary,
        "arms": figures,
        "sample_ratio": sample_ratio(totals, arms, settings.srm_p_threshold),
        "settings": settings.model_dump(),
    }
