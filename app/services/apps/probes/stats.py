"""Paired statistics for counterfactual probes: permutation tests, bootstrap intervals, Holm.

The data of one measure is a `(groups, n)` array: column i holds the values of the i-th
counterfactual tuple (same seed, same settings, only the substitution differs). Tests permute
the group labels within each column (for two groups: flip the sign of each paired difference),
so they assume nothing about the distribution of the measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group: str
    mean: Interval
    """The group's mean with a bootstrap confidence interval."""


@dataclass(frozen=True, slots=True)
class Effect:
    """How far `group` is from `versus` (the other group, or the mean of all others), per pair."""

    group: str
    versus: str
    difference: Interval
    """Mean paired difference (group − versus), with a bootstrap confidence interval."""
    standardized: float | None
    """Mean difference over the standard deviation of the differences (Cohen's d_z); None when
    the differences do not vary."""


@dataclass(frozen=True, slots=True)
class PairedTest:
    statistic: float
    p_value: float
    n: int


def spread(values: Array, axis: int = -1) -> Array:
    """The test statistic: the variance of the group means around their grand mean (for two
    groups, a quarter of the squared mean difference). `values` is (..., groups, n)."""
    means = np.mean(values, axis=axis)
    result: Array = np.var(means, axis=-1)
    return result


def paired_permutation_test(values: Array, *, resamples: int, rng: np.random.Generator) -> PairedTest:
    """Are the groups' values exchangeable within each pair? Exact when the number of
    relabellings is at most `resamples`, randomized (with the +1 correction) otherwise."""
    groups, n = values.shape
    observed = float(spread(values))
    if n < 2 or groups < 2 or np.ptp(values, axis=0).max() == 0.0:
        # Every pair agrees on this measure (or there is nothing to compare): no evidence.
        return PairedTest(statistic=observed, p_value=1.0, n=n)

    def statistic(*samples: Array, axis: int) -> Array:
        means = np.stack([np.mean(s, axis=axis) for s in samples], axis=-1)
        result: Array = np.var(means, axis=-1)
        return result

    result = sps.permutation_test(
        tuple(values),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        alternative="greater",
        rng=rng,
    )
    return PairedTest(statistic=observed, p_value=float(min(1.0, result.pvalue)), n=n)


def mean_interval(sample: Array, *, confidence: float, resamples: int, rng: np.random.Generator) -> Interval:
    """The sample mean with a percentile bootstrap interval (degenerate samples get a point)."""
    estimate = float(np.mean(sample)) if sample.size else math.nan
    if sample.size < 2 or np.ptp(sample) == 0.0:
        return Interval(estimate, estimate, estimate)
    result = sps.bootstrap(
        (sample,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        vectorized=True,
        rng=rng,
    )
    ci = result.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high))


def effects(
    values: Array, names: Sequence[str], *, confidence: float, resamples: int, rng: np.random.Generator
) -> list[Effect]:
    """Two groups: the first against the second. More: each against the mean of the others."""
    groups, _ = values.shape
    if groups == 2:
        pairs = [(0, values[0] - values[1], names[1])]
    else:
        pairs = [
            (g, values[g] - np.delete(values, g, axis=0).mean(axis=0), "the others") for g in range(groups)
        ]
    out = []
    for g, diff, versus in pairs:
        sd = float(np.std(diff, ddof=1)) if diff.size > 1 else 0.0
        out.append(
            Effect(
                group=names[g],
                versus=versus,
                difference=mean_interval(diff, confidence=confidence, resamples=resamples, rng=rng),
                standardized=float(np.mean(diff)) / sd if sd > 0 else None,
            )
        )
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True, slots=True)
class WordScore:
    word: str
    z: float
    """Log-odds ratio over its standard deviation: above ~1.96, more typical of this group."""
    count: int


def distinctive_words(
    counts: Sequence[dict[str, int]], names: Sequence[str], *, top: int = 10, min_count: int = 2
) -> dict[str, list[WordScore]]:
    """Words most typical of each group against all the others: the log-odds ratio with an
    informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words", §3.5), the
    prior being the word frequencies of all groups together."""
    background: dict[str, int] = {}
    for c in counts:
        for word, k in c.items():
            background[word] = background.get(word, 0) + k
    a0 = float(sum(background.values()))
    out: dict[str, list[WordScore]] = {}
    for g, name in enumerate(names):
        mine = counts[g]
        n_i = float(sum(mine.values()))
        n_j = a0 - n_i
        scores = []
        for word, total in background.items():
            y_i = float(mine.get(word, 0))
            if y_i < min_count or total == a0:
                # A word that is every word written (say, every answer "Fine.") has no odds
                # against the rest, and tells no group from another.
                continue
            y_j = total - y_i
            a_w = float(total)  # the prior: this word's share of everything, scaled to a0
            delta = math.log((y_i + a_w) / (n_i + a0 - y_i - a_w)) - math.log(
                (y_j + a_w) / (n_j + a0 - y_j - a_w)
            )
            variance = 1.0 / (y_i + a_w) + 1.0 / (y_j + a_w)
            scores.append(WordScore(word=word, z=delta / math.sqrt(variance), count=int(y_i)))
        scores.sort(key=lambda s: (-s.z, s.word))
        out[name] = [s for s in scores[:top] if s.z > 0]
    return out
