"""The router: weighted, sticky by key, and the same on every process."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from scipy.stats import chisquare

from app.registry.spec import Candidate, Shadow, SpecBody
from app.serving.routing import Router

SPLIT = SpecBody(primary="base", candidates=[Candidate(tag="boost", weight=10)])


def test_only_a_primary_needs_no_choice() -> None:
    router = Router(SpecBody(primary="base"))
    assert router.single
    assert {router.choose(None) for _ in range(100)} == {"base"}
    assert router.choose("user-1") == "base"
    assert router.weights == {"base": 100.0}


@pytest.mark.parametrize("keyed", [False, True])
def test_observed_shares_match_the_weights(keyed: bool) -> None:
    router = Router(
        SpecBody(
            primary="a",
            candidates=[Candidate(tag="b", weight=10), Candidate(tag="c", weight=25.5)],
        )
    )
    n = 20_000
    counts = Counter(router.choose(f"user-{i}" if keyed else None) for i in range(n))
    expected = [n * 0.645, n * 0.10, n * 0.255]
    # At p = 0.001 a correct router fails one run in a thousand; a wrong share fails always.
    assert chisquare([counts["a"], counts["b"], counts["c"]], expected).pvalue > 0.001


def test_a_key_always_reaches_the_same_arm() -> None:
    first = [Router(SPLIT).choose(f"user-{i}") for i in range(1000)]
    again = [Router(SPLIT).choose(f"user-{i}") for i in range(1000)]
    assert first == again
    assert 50 < first.count("boost") < 150


def test_the_assignment_is_the_same_in_another_process() -> None:
    """No per-process salt (Python's hash() would differ): a replica routes alike."""
    code = (
        "from app.registry.spec import Candidate, SpecBody; from app.serving.routing import Router;"
        "r = Router(SpecBody(primary='base', candidates=[Candidate(tag='boost', weight=10)]));"
        "print(''.join('1' if r.choose(f'user-{i}') == 'boost' else '0' for i in range(500)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    mine = "".join("1" if Router(SPLIT).choose(f"user-{i}") == "boost" else "0" for i in range(500))
    assert out == mine


def test_raising_a_weight_moves_only_keys_onto_that_arm() -> None:
    before = Router(SPLIT)
    after = Router(SpecBody(primary="base", candidates=[Candidate(tag="boost", weight=30)]))
    moved = [
        (before.choose(k), after.choose(k))
        for k in (f"user-{i}" for i in range(5000))
        if before.choose(k) != after.choose(k)
    ]
    assert set(moved) == {("base", "boost")}
    assert 700 < len(moved) < 1300  # about 20 % of the keys


def test_another_experiment_picks_other_users() -> None:
    """The hash is keyed by the experiment, so one user is not every canary's guinea pig."""
    other = Router(SpecBody(primary="base", candidates=[Candidate(tag="third", weight=10)]))
    ours = Router(SPLIT)
    keys = [f"user-{i}" for i in range(2000)]
    in_ours = {k for k in keys if ours.choose(k) == "boost"}
    in_other = {k for k in keys if other.choose(k) == "third"}
    assert len(in_ours & in_other) < len(in_ours) / 3


def test_bandit_weights_replace_the_spec_weights() -> None:
    router = Router(SPLIT, weights={"boost": 80})
    assert router.weights == {"base": 20.0, "boost": 80}
    counts = Counter(router.choose(None) for _ in range(5000))
    assert 3800 < counts["boost"] < 4200


def test_shadows_see_their_percent_of_requests() -> None:
    router = Router(
        SpecBody(
            primary="base",
            shadows=[Shadow(tag="all", percent=100), Shadow(tag="some", percent=20)],
        )
    )
    picks = [router.shadows() for _ in range(5000)]
    assert all("all" in p for p in picks)
    assert 850 < sum("some" in p for p in picks) < 1150
