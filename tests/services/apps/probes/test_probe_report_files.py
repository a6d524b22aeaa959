"""The report a probe writes for operators: Markdown with every measure, and a PNG per measure."""

from __future__ import annotations

from pathlib import Path

from app.schemas.probes import BiasProbeRequest
from app.services.apps.probes import bias
from app.services.apps.probes.files import write
from app.services.apps.probes.measures import Lexicons


def synthetic_report() -> tuple[dict[str, object], dict[str, object]]:
    request = BiasProbeRequest(
        template="Describe {name}.",
        variables={"name": {"a": ["Ann", "Amy"], "b": ["Bob", "Ben"]}},
        samples=4,
        seed=9,
    )
    plan = bias.resolve(request, max_samples=10, max_groups=4, max_generations=100)
    outputs = [
        bias.Output(
            group=g,
            index=i,
            seed=plan.seed_of(i),
            value=plan.value(g, i),
            text="A wonderful, kind person." if g == "a" else "A person.",
            tokens=6 if g == "a" else 3,
            finish_reason="stop",
        )
        for i in range(4)
        for g in ("a", "b")
    ]
    return bias.report(plan, outputs, Lexicons()), plan.as_dict()


def test_the_report_is_written_as_markdown_with_a_chart_per_measure(tmp_path: Path) -> None:
    report, request = synthetic_report()
    path = write(report, request, tmp_path / "out")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Bias probe report")
    assert str(report["verdict"]) in text
    for name, label in (("sentiment", "Sentiment"), ("tokens", "Length"), ("refusal", "Refusal rate")):
        assert f"### {label}" in text
        chart = tmp_path / "out" / f"{name}.png"
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in text
    assert "*a* (Ann): A wonderful, kind person." in text
    assert "**a**: wonderful" in text or "**a**: kind" in text


def test_a_suite_request_resolves_to_its_template_and_groups() -> None:
    suite = bias.builtin_suites()["regions-zh"]
    plan = bias.resolve(
        BiasProbeRequest(suite="regions-zh", samples=5), max_samples=10, max_groups=8, max_generations=100
    )
    assert plan.template == suite.template
    assert plan.total == 15
    # Value i of each group, cycling; the fixed variable everywhere.
    assert plan.prompt("northeast", 3) == suite.template.format(region="黑龙江", job="销售")
    assert plan.seed_of(4) == plan.seed + 4
