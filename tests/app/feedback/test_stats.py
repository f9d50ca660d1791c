"""A/B statistics: checked against hand-computed references, not the libraries themselves."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from app.feedback.stats import ab_report, arm_figures, compare, sample_ratio
from app.registry.spec import AnalysisSettings, Candidate, SpecBody

SETTINGS = AnalysisSettings()


def labelled(n: int, correct: int) -> dict[str, float]:
    return {"label_n": float(n), "label_correct": float(correct)}


def test_two_proportion_z_test_matches_the_textbook_formula() -> None:
    primary, arm = labelled(400, 240), labelled(400, 280)  # 60 % against 70 %
    pooled = 520 / 800
    z = (0.7 - 0.6) / math.sqrt(pooled * (1 - pooled) * (2 / 400))
    expected_p = math.erfc(abs(z) / math.sqrt(2))
    result = compare(primary, arm, SETTINGS)
    assert result["difference"] == pytest.approx(0.1)
    assert result["z_test_p"] == pytest.approx(expected_p, rel=1e-9)
    assert result["significant"] is True


def test_no_difference_is_not_significant() -> None:
    result = compare(labelled(200, 150), labelled(200, 150), SETTINGS)
    assert result["z_test_p"] == pytest.approx(1.0)
    assert result["significant"] is False


def test_welch_from_running_sums_equals_welch_on_the_raw_rewards() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.uniform(0, 1, 300), rng.beta(2, 1, 250)

    def sums(x: np.ndarray[Any, Any]) -> dict[str, float]:
        return {
            "reward_n": float(len(x)),
            "reward_sum": float(x.sum()),
            "reward_sq": float((x**2).sum()),
        }

    result = compare(sums(a), sums(b), SETTINGS)
    raw = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert result["welch_t_test_p"] == pytest.approx(raw.pvalue, rel=1e-6)
    assert result["reward_difference"] == pytest.approx(b.mean() - a.mean())


def test_samples_needed_matches_cohens_h() -> None:
    """Per arm n = 2 ((z_{1-alpha/2} + z_{power}) / h)^2, with Cohen's
    h = 2 asin(sqrt p1) - 2 asin(sqrt p0): the difference of two arms has variance 2/n."""
    result = compare(labelled(100, 50), labelled(100, 50), SETTINGS)
    h = 2 * math.asin(math.sqrt(0.55)) - 2 * math.asin(math.sqrt(0.50))
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert result["samples_needed_per_arm"] == math.ceil(2 * (z / h) ** 2) == 1565
    assert result["more_samples_needed"] == result["samples_needed_per_arm"] - 100


def test_wilson_interval_brackets_the_rate() -> None:
    figures = arm_figures(labelled(50, 45), alpha=0.05)
    assert figures["success_rate"] == 0.9
    assert 0.78 < figures["ci_low"] < 0.9 < figures["ci_high"] < 0.97


def test_sample_ratio_mismatch_is_flagged_only_when_real() -> None:
    fine = {"a": {"assigned": 5020, "expected": 5000}, "b": {"assigned": 4980, "expected": 5000}}
    skewed = {"a": {"assigned": 5300, "expected": 5000}, "b": {"assigned": 4700, "expected": 5000}}
    assert sample_ratio(fine, ["a", "b"], 0.001)["mismatch"] is False
    result = sample_ratio(skewed, ["a", "b"], 0.001)
    assert result["mismatch"] is True
    assert result["chi_square_p"] == pytest.approx(scipy_stats.chi2.sf(36.0, 1))


def test_the_report_covers_every_arm() -> None:
    spec = SpecBody(primary="a", candidates=[Candidate(tag="b", weight=50)])
    totals = {"a": labelled(100, 60) | {"assigned": 100, "expected": 100}, "b": labelled(100, 80)}
    report = ab_report(spec, totals)
    assert set(report["arms"]) == {"a", "b"}
    assert "versus_primary" in report["arms"]["b"]
    assert report["arms"]["b"]["versus_primary"]["difference"] == pytest.approx(0.2)
    assert report["sample_ratio"]["chi_square_p"] is None  # b has no expected count yet
