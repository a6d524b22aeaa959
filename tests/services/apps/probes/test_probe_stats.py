"""The probe's statistics on synthetic data: a planted difference is caught, a null one is not
flagged beyond the stated rate, and the corrections and intervals behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from app.services.apps.probes import stats

ALPHA = 0.05


def test_a_planted_difference_is_detected_with_an_interval_around_it() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(size=16) + rng.normal(scale=0.5, size=(2, 16))
    values[0] += 1.0  # group a scores one unit higher, on average, in every pair
    test = stats.paired_permutation_test(values, resamples=9999, rng=rng)
    assert test.p_value < 0.01
    (effect,) = stats.effects(values, ["a", "b"], confidence=0.95, resamples=2000, rng=rng)
    assert (effect.group, effect.versus) == ("a", "b")
    assert effect.difference.low < effect.difference.estimate < effect.difference.high
    assert effect.difference.low > 0  # the interval excludes "no difference"
    assert effect.standardized is not None
    assert effect.standardized > 0.5


def test_the_interval_covers_the_planted_difference_about_as_often_as_stated() -> None:
    rng = np.random.default_rng(42)
    runs, covered = 100, 0
    for _ in range(runs):
        values = rng.normal(size=16) + rng.normal(scale=0.5, size=(2, 16))
        values[0] += 1.0
        (effect,) = stats.effects(values, ["a", "b"], confidence=0.95, resamples=1000, rng=rng)
        covered += effect.difference.low <= 1.0 <= effect.difference.high
    # Percentile intervals run a little narrow at n = 16; far below 95% would be a bug.
    assert covered >= 85


def test_null_data_are_flagged_at_most_at_the_stated_rate() -> None:
    """200 null simulations (both groups from one distribution, paired noise): the share called
    significant stays within α plus a binomial margin (3 standard errors)."""
    rng = np.random.default_rng(20261202)
    runs = 200
    flagged = 0
    for _ in range(runs):
        shared = rng.normal(size=16)  # what a seed contributes to both outputs of a pair
        values = shared + rng.normal(scale=0.5, size=(2, 16))
        flagged += stats.paired_permutation_test(values, resamples=999, rng=rng).p_value < ALPHA
    margin = 3 * (ALPHA * (1 - ALPHA) / runs) ** 0.5
    assert flagged / runs <= ALPHA + margin


def test_a_planted_difference_is_caught_most_of_the_time() -> None:
    rng = np.random.default_rng(11)
    caught = 0
    for _ in range(50):
        values = rng.normal(size=16) + rng.normal(scale=0.5, size=(2, 16))
        values[1] += 1.0
        caught += stats.paired_permutation_test(values, resamples=999, rng=rng).p_value < ALPHA
    assert caught >= 45  # the paired difference is 1.4 of its standard deviation: power ≈ 1 at n = 16


def test_more_than_two_groups_flags_the_odd_one() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(3, 20))
    values[2] -= 1.5
    assert stats.paired_permutation_test(values, resamples=1999, rng=rng).p_value < 0.01
    effects = stats.effects(values, ["x", "y", "z"], confidence=0.95, resamples=1000, rng=rng)
    assert [e.versus for e in effects] == ["the others"] * 3
    odd = min(effects, key=lambda e: e.difference.estimate)
    assert odd.group == "z"
    assert odd.difference.high < 0


def test_identical_pairs_give_no_evidence_and_a_point_interval() -> None:
    rng = np.random.default_rng(0)
    values = np.ones((2, 8))
    assert stats.paired_permutation_test(values, resamples=999, rng=rng).p_value == 1.0
    (effect,) = stats.effects(values, ["a", "b"], confidence=0.95, resamples=500, rng=rng)
    assert (effect.difference.low, effect.difference.high) == (0.0, 0.0)
    assert effect.standardized is None


def test_a_difference_in_a_binary_measure_is_detected() -> None:
    rng = np.random.default_rng(5)
    refusals = np.zeros((2, 20))
    refusals[0, :15] = 1.0  # 15 refusals in 20 for one group, none for the other
    assert stats.paired_permutation_test(refusals, resamples=9999, rng=rng).p_value < 0.001


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert stats.holm([]) == []


def test_distinctive_words_find_the_planted_word_for_each_group() -> None:
    a = {"caring": 12, "the": 40, "team": 5, "strong": 1}
    b = {"strong": 11, "the": 41, "team": 6, "caring": 1}
    words = stats.distinctive_words([a, b], ["a", "b"], top=3)
    assert words["a"][0].word == "caring"
    assert words["b"][0].word == "strong"
    assert words["a"][0].z > 1.96
    # A word both groups use alike is not distinctive of either.
    assert all(w.word != "the" or w.z < 1 for ws in words.values() for w in ws)
