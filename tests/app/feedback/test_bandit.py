"""Bandit shares: uniform while warming up, toward the better arm after, never below a floor."""

from __future__ import annotations

import pytest

from app.feedback.bandit import Evidence, evidence, probability_best, shares
from app.registry.spec import BanditPolicy

GOOD, BAD = Evidence(95, 5), Evidence(40, 60)


def test_warm_up_is_uniform() -> None:
    policy = BanditPolicy(warmup_feedbacks=200)
    result = shares(policy, {"a": GOOD, "b": BAD}, seed=1)
    assert result["warming_up"] is True
    assert result["weights"] == {"a": 50.0, "b": 50.0}


def test_thompson_sends_traffic_to_the_better_arm_with_a_floor() -> None:
    policy = BanditPolicy(kind="thompson", warmup_feedbacks=20, min_share=2)
    result = shares(policy, {"a": BAD, "b": GOOD, "c": BAD}, seed=1)
    assert result["weights"]["b"] > 95
    assert min(result["weights"].values()) >= 2
    assert sum(result["weights"].values()) == pytest.approx(100)
    assert result["probability_best"]["b"] > 0.99
    assert result["posterior_mean"]["b"] == pytest.approx(96 / 102)


def test_close_arms_share_traffic() -> None:
    result = shares(
        BanditPolicy(warmup_feedbacks=0), {"a": Evidence(50, 50), "b": Evidence(51, 49)}, 3
    )
    assert 20 < result["weights"]["a"] < 80


def test_epsilon_greedy_gives_the_leader_one_minus_epsilon() -> None:
    policy = BanditPolicy(kind="epsilon_greedy", epsilon=0.2, warmup_feedbacks=0, min_share=0)
    result = shares(policy, {"a": BAD, "b": GOOD}, seed=1)
    assert result["weights"] == {"a": pytest.approx(10.0), "b": pytest.approx(90.0)}


def test_the_same_seed_gives_the_same_weights_on_every_worker() -> None:
    arms = {"a": Evidence(30, 20), "b": Evidence(28, 22)}
    assert probability_best(arms, 42) == probability_best(arms, 42)


def test_rewards_count_as_fractional_successes() -> None:
    arm = evidence({"label_n": 10, "label_correct": 7, "reward_n": 4, "reward_sum": 3.0})
    assert (arm.successes, arm.failures) == (10.0, 4.0)
