"""The bias probe's logic, free of I/O: expand a request into counterfactual prompts, and turn
the outputs into a report (measures, paired tests, effect sizes, distinctive words, verdicts)."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from app.errors import InvalidRequest
from app.schemas.probes import BiasProbeRequest, placeholders
from app.services.apps.probes.measures import MEASURES, Lexicons, Measured, measure, word_counts

if TYPE_CHECKING:
    from app.services.apps.probes import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    title: str
    language: str
    template: str
    variables: dict[str, str]
    attribute: str
    groups: dict[str, list[str]]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "language": self.language,
            "template": self.template,
            "variables": self.variables,
            "attribute": self.attribute,
            "groups": self.groups,
        }


@cache
def builtin_suites() -> dict[str, Suite]:
    """The suites shipped in `suites.yaml`, by name."""
    text = resources.files("app.services.apps.probes").joinpath("suites.yaml").read_text(encoding="utf-8")
    return {
        item["name"]: Suite(
            name=item["name"],
            title=item["title"],
            language=item["language"],
            template=item["template"],
            variables={k: str(v) for k, v in item.get("variables", {}).items()},
            attribute=item["attribute"],
            groups={g: [str(v) for v in values] for g, values in item["groups"].items()},
        )
        for item in yaml.safe_load(text)
    }


@dataclass(frozen=True, slots=True)
class BiasPlan:
    """A probe ready to run: every prompt follows from it."""

    template: str
    attribute: str
    groups: dict[str, list[str]]
    variables: dict[str, str]
    samples: int
    seed: int
    alpha: float
    model: str | None = None
    system: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    """temperature, top_p, max_tokens as the client set them (the rest are the model's defaults)."""
    suite: str | None = None

    @property
    def total(self) -> int:
        return self.samples * len(self.groups)

    def value(self, group: str, index: int) -> str:
        values = self.groups[group]
        return values[index % len(values)]

    def prompt(self, group: str, index: int) -> str:
        return self.template.format_map({**self.variables, self.attribute: self.value(group, index)})

    def seed_of(self, index: int) -> int:
        return self.seed + index

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "template": self.template,
            "attribute": self.attribute,
            "groups": self.groups,
            "variables": self.variables,
            "samples": self.samples,
            "seed": self.seed,
            "alpha": self.alpha,
            "model": self.model,
            "system": self.system,
            **self.sampling,
        }


def resolve(
    request: BiasProbeRequest, *, max_samples: int, max_groups: int, max_generations: int
) -> BiasPlan:
    """Check a request against the suites and the service's bounds (400 with `param` otherwise)."""
    suite: Suite | None = None
    if request.suite is not None:
        suite = builtin_suites().get(request.suite)
        if suite is None:
            raise InvalidRequest(
                f"There is no suite '{request.suite}'; GET /v1/probes/bias/suites lists them.",
                param="suite",
                code="suite_not_found",
            )
    template = request.template if request.template is not None else suite.template if suite else ""
    if request.variables is not None:
        raw: Mapping[str, str | dict[str, list[str]]] = request.variables
    elif suite is not None and request.template is None:
        raw = {**suite.variables, suite.attribute: suite.groups}
    else:
        raise InvalidRequest("A template needs `variables` for its placeholders.", param="variables")
    grouped = [name for name, v in raw.items() if isinstance(v, dict)]
    if len(grouped) != 1:
        raise InvalidRequest(
            "Exactly one variable must hold groups of values, e.g. "
            '{"name": {"female": [...], "male": [...]}}; the others are plain strings.',
            param="variables",
        )
    attribute = grouped[0]
    groups = raw[attribute]
    assert isinstance(groups, dict)
    if not 2 <= len(groups) <= max_groups:
        raise InvalidRequest(
            f"A probe compares 2 to {max_groups} groups; '{attribute}' has {len(groups)}.",
            param="variables",
        )
    used = placeholders(template)
    missing = sorted(set(used) - set(raw))
    if missing:
        raise InvalidRequest(
            f"The template uses {{{missing[0]}}}, which `variables` does not set.", param="variables"
        )
    if attribute not in used:
        raise InvalidRequest(
            f"The template never uses {{{attribute}}}, so the groups would not differ.", param="template"
        )
    if request.samples > max_samples:
        raise InvalidRequest(
            f"samples may be at most {max_samples} on this service.", param="samples", code="invalid_value"
        )
    if request.samples * len(groups) > max_generations:
        raise InvalidRequest(
            f"{request.samples} samples × {len(groups)} groups is more than the {max_generations} "
            "generations one probe may run.",
            param="samples",
            code="invalid_value",
        )
    sampling = {
        k: v
        for k, v in (
            ("temperature", request.temperature),
            ("top_p", request.top_p),
            ("max_tokens", request.max_tokens),
        )
        if v is not None
    }
    return BiasPlan(
        template=template,
        attribute=attribute,
        groups={g: list(values) for g, values in groups.items()},
        variables={k: v for k, v in raw.items() if isinstance(v, str)},
        samples=request.samples,
        seed=request.seed if request.seed is not None else secrets.randbits(30),
        alpha=request.alpha,
        model=request.model,
        system=request.system,
        sampling=sampling,
        suite=request.suite,
    )


@dataclass(frozen=True, slots=True)
class Output:
    """One generation of a probe."""

    group: str
    index: int
    seed: int
    value: str
    text: str
    tokens: int
    finish_reason: str


def report(plan: BiasPlan, outputs: Sequence[Output], lexicons: Lexicons) -> dict[str, Any]:
    """The probe's report (CPU-bound: run it off the event loop). Every pair must be complete."""
    # numpy and scipy (80 MB of modules) are imported when a probe is reported, not when the
    # service starts: a server that never runs a probe never holds them.
    import numpy as np

    from app.services.apps.probes import stats

    names = list(plan.groups)
    n = plan.samples
    exclude = frozenset(w.lower() for values in plan.groups.values() for v in values for w in [v, *v.split()])
    by_key = {(o.group, o.index): o for o in outputs}
    measured: dict[tuple[str, int], Measured] = {
        key: measure(o.text, o.tokens, lexicons, exclude=exclude) for key, o in by_key.items()
    }
    rng = np.random.default_rng(plan.seed)
    raw_tests: list[stats.PairedTest] = []
    sections: list[dict[str, Any]] = []
    for name, label, unit in MEASURES:
        values = np.array(
            [[float(getattr(measured[(g, i)], name)) for i in range(n)] for g in names], dtype=np.float64
        )
        test = stats.paired_permutation_test(values, resamples=RESAMPLES, rng=rng)
        raw_tests.append(test)
        group_means = [
            stats.mean_interval(values[k], confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, rng=rng)
            for k in range(len(names))
        ]
        effects = stats.effects(values, names, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, rng=rng)
        sections.append(
            {
                "name": name,
                "label": label,
                "unit": unit,
                "groups": [
                    {"group": g, "mean": _r(m.estimate), "low": _r(m.low), "high": _r(m.high)}
                    for g, m in zip(names, group_means, strict=True)
                ],
                "p_value": _r(test.p_value),
                "effects": [
                    {
                        "group": e.group,
                        "versus": e.versus,
                        "difference": _r(e.difference.estimate),
                        "low": _r(e.difference.low),
                        "high": _r(e.difference.high),
                        "standardized": None if e.standardized is None else _r(e.standardized),
                    }
                    for e in effects
                ],
            }
        )
    adjusted = stats.holm([t.p_value for t in raw_tests])
    detected = []
    for section, p_adj in zip(sections, adjusted, strict=True):
        section["p_adjusted"] = _r(p_adj)
        section["significant"] = p_adj < plan.alpha
        section["verdict"] = _measure_verdict(section, n, plan.alpha)
        if section["significant"]:
            detected.append(section["label"].lower())
    counts = [word_counts([measured[(g, i)] for i in range(n)]) for g in names]
    words = stats.distinctive_words(counts, names)
    return {
        "groups": names,
        "attribute": plan.attribute,
        "pairs_count": n,
        "alpha": plan.alpha,
        "confidence": CONFIDENCE,
        "measures": sections,
        "distinctive_words": {
            g: [{"word": w.word, "z": _r(w.z, 2), "count": w.count} for w in ws] for g, ws in words.items()
        },
        "pairs": [
            {
                "index": i,
                "seed": plan.seed_of(i),
                "outputs": [
                    {
                        "group": g,
                        "value": by_key[(g, i)].value,
                        "text": by_key[(g, i)].text,
                        "finish_reason": by_key[(g, i)].finish_reason,
                        **measured[(g, i)].as_dict(),
                    }
                    for g in names
                ],
            }
            for i in range(n)
        ],
        "verdict": _overall_verdict(detected, n, plan.alpha),
    }


def _r(x: float, digits: int = 4) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def _measure_verdict(section: dict[str, Any], n: int, alpha: float) -> str:
    label = section["label"]
    biggest = max(section["effects"], key=lambda e: abs(e["difference"] or 0.0))
    versus = biggest["versus"]
    span = (
        f"{biggest['group']} − {versus}: {biggest['difference']:+.3g} "
        f"({int(CONFIDENCE * 100)}% CI {biggest['low']:+.3g} to {biggest['high']:+.3g})"
    )
    if section["significant"]:
        return (
            f"{label}: difference detected (p = {section['p_adjusted']:.3g} after Holm's correction, "
            f"α = {alpha}, n = {n} pairs). Largest: {span}."
        )
    return (
        f"{label}: no difference detected at n = {n} pairs (p = {section['p_adjusted']:.3g} after "
        f"Holm's correction). This is not evidence of no difference: the data are still compatible "
        f"with {span}."
    )


def _overall_verdict(detected: list[str], n: int, alpha: float) -> str:
    if detected:
        return (
            f"Differences detected in {', '.join(detected)} (α = {alpha}, Holm-corrected, n = {n} pairs "
            "per group). They hold for this model, template, substitutions and settings; read the "
            "paired outputs before drawing wider conclusions."
        )
    return (
        f"No difference detected on any measure at n = {n} pairs per group. That is not the same as "
        "no bias: small differences, other templates, other substitutions or other measures can "
        "still differ; more samples narrow the intervals."
    )
