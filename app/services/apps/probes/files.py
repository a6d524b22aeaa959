"""A probe report as files: Markdown, plus one PNG chart per measure where matplotlib is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Colour-blind-safe (Okabe–Ito) colours, one per group.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def chart(measure: dict[str, Any], path: Path) -> bool:
    """Per-group means with their intervals; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = measure["groups"]
    names = [g["group"] for g in groups]
    means = [g["mean"] or 0.0 for g in groups]
    errors = [
        [max(0.0, (g["mean"] or 0.0) - (g["low"] or 0.0)) for g in groups],
        [max(0.0, (g["high"] or 0.0) - (g["mean"] or 0.0)) for g in groups],
    ]
    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    ax.bar(names, means, yerr=errors, capsize=6, color=[PALETTE[i % len(PALETTE)] for i in range(len(names))])
    ax.set_title(measure["label"])
    ax.set_ylabel(measure["unit"])
    ax.axhline(0, color="#888888", linewidth=0.8)
    ax.text(
        0.99,
        0.97,
        f"p (Holm) = {_fmt(measure['p_adjusted'])}",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(report: dict[str, Any], request: dict[str, Any], out: Path, *, examples: int = 5) -> Path:
    """Write `report.md` (and `<measure>.png` charts) into `out`; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    n = report["pairs_count"]
    lines = [
        "# Bias probe report",
        "",
        f"**Verdict.** {report['verdict']}",
        "",
        f"- Template: `{request['template']}`",
        f"- Attribute varied: `{{{report['attribute']}}}` over groups "
        + ", ".join(f"**{g}** ({', '.join(request['groups'][g])})" for g in report["groups"]),
        f"- Fixed values: {', '.join(f'`{k}` = {v}' for k, v in request['variables'].items()) or 'none'}",
        f"- Pairs: {n} per group (pair i of every group shares seed {request['seed']} + i and every "
        "other setting)",
        f"- Model: {request.get('model') or 'the default model'}; α = {report['alpha']}, "
        f"{int(report['confidence'] * 100)}% intervals (bootstrap), p-values from paired permutation "
        "tests, Holm-corrected across the measures",
        "",
        "## Measures",
        "",
    ]
    for measure in report["measures"]:
        lines += [f"### {measure['label']} ({measure['unit']})", ""]
        if chart(measure, out / f"{measure['name']}.png"):
            lines += [f"![{measure['label']} per group]({measure['name']}.png)", ""]
        lines += ["| group | mean | interval |", "|---|---|---|"]
        lines += [
            f"| {g['group']} | {_fmt(g['mean'])} | {_fmt(g['low'])} to {_fmt(g['high'])} |"
            for g in measure["groups"]
        ]
        lines += ["", "| effect | difference | interval | d_z |", "|---|---|---|---|"]
        lines += [
            f"| {e['group']} − {e['versus']} | {_fmt(e['difference'])} | {_fmt(e['low'])} to "
            f"{_fmt(e['high'])} | {_fmt(e['standardized'])} |"
            for e in measure["effects"]
        ]
        lines += [
            "",
            f"p = {_fmt(measure['p_value'])}, after Holm's correction {_fmt(measure['p_adjusted'])}. "
            + measure["verdict"],
            "",
        ]
    lines += [
        "## Distinctive words",
        "",
        "Log-odds ratio with an informative Dirichlet prior (z-scores).",
        "",
    ]
    for group, words in report["distinctive_words"].items():
        listed = ", ".join(f"{w['word']} ({w['z']:.2f})" for w in words) or "none above the threshold"
        lines.append(f"- **{group}**: {listed}")
    lines += ["", f"## Paired examples (first {min(examples, n)} of {n})", ""]
    for pair in report["pairs"][:examples]:
        lines.append(f"**Pair {pair['index']}** (seed {pair['seed']})")
        lines.append("")
        for o in pair["outputs"]:
            text = " ".join(o["text"].split())
            lines.append(f"- *{o['group']}* ({o['value']}): {text}")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
