"""The experiment report CML posts on a merge request: metrics, params and plots against a
baseline revision, as Markdown with PNG images written next to it.

DVC's own HTML plots load vega from a CDN and render blank offline, so the vega-lite specs
from ``dvc plots diff --json`` are rendered here with vl-convert (no browser, no network).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.errors import ReportError

DVC_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Plot:
    plot_id: str
    spec: dict[str, Any]


def write_report(output: Path, baseline_rev: str = "main") -> None:
    """Write the Markdown report of the workspace against ``baseline_rev`` to ``output``.

    Run from inside the DVC repository. PNG files named ``<output stem>-<plot>.png`` are
    written beside ``output``. Raises ReportError (one-line message) when DVC fails, e.g.
    for an unknown revision.
    """
    metrics = _dvc("metrics", "diff", "--all", "--md", baseline_rev).strip()
    params = _dvc("params", "diff", "--md", baseline_rev).strip()
    plots = parse_plots(_dvc("plots", "diff", baseline_rev, "--json"))
    output.parent.mkdir(parents=True, exist_ok=True)
    images = [(plot.plot_id, _write_png(plot, output)) for plot in plots]
    output.write_text(render_markdown(baseline_rev, metrics, params, images), encoding="utf-8")


def parse_plots(document: str) -> list[Plot]:
    """Vega-lite specs (data inlined) from ``dvc plots show/diff --json`` output."""
    try:
        data = json.loads(document).get("data", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ReportError(f"dvc plots: unexpected JSON output: {exc}") from None
    plots = []
    for plot_id, renders in data.items():
        for render in renders:
            if render.get("type") == "vega" and isinstance(render.get("content"), dict):
                plots.append(Plot(plot_id=plot_id, spec=render["content"]))
    return plots


def image_name(report: Path, plot_id: str) -> str:
    """``report-roc-Adelie.png`` for plot ``plots/roc/Adelie.json`` of ``report.md``."""
    stem = re.sub(r"^plots/", "", plot_id)
    stem = re.sub(r"\.(json|csv|tsv|ya?ml)$", "", stem)
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", stem).strip("-") or "plot"
    return f"{report.stem}-{slug}.png"


def render_markdown(
    baseline_rev: str, metrics: str, params: str, images: list[tuple[str, str]]
) -> str:
    lines = [
        f"# Experiment report: workspace against `{baseline_rev}`",
        "",
        "## Metrics",
        "",
        metrics or "No metrics found.",
        "",
        "## Params",
        "",
        params or f"Params are the same as on `{baseline_rev}`.",
        "",
        "## Plots",
        "",
    ]
    if not images:
        lines += ["No plots found.", ""]
    for plot_id, name in images:
        lines += [f"### {plot_id}", "", f"![{plot_id}]({name})", ""]
    return "\n".join(lines)


def _write_png(plot: Plot, report: Path) -> str:
    import vl_convert

    name = image_name(report, plot.plot_id)
    try:
        png = vl_convert.vegalite_to_png(vl_spec=plot.spec, scale=1)
    except Exception as exc:  # vl-convert raises plain ValueError/RuntimeError on bad specs
        raise ReportError(f"plot {plot.plot_id!r} could not be rendered: {exc}") from None
    (report.parent / name).write_bytes(png)
    return name


def _dvc(*args: str) -> str:
    command = ["dvc", *args]
    try:
        completed = subprocess.run(
            [sys.executable, "-m", *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=DVC_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise ReportError(f"`{' '.join(command)}` took more than {DVC_TIMEOUT_SECONDS} s") from None
    if completed.returncode != 0:
        errors = [line for line in completed.stderr.splitlines() if line.strip()]
        reason = errors[-1] if errors else f"exit code {completed.returncode}"
        raise ReportError(f"`{' '.join(command)}` failed: {reason}")
    return completed.stdout
