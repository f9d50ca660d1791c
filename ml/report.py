"""The experiment report CML posts: metrics, params and plots against a baseline revision, as
Markdown with PNG images written next to it. On a merge request it compares
the branch with its target; in a retraining pipeline started by the monitoring trigger
(``python -m ml.report``) it also says why the model was retrained, from the trigger's CI
variables, and what data it was trained on.

DVC's own HTML plots load vega from a CDN and render blank offline, so the vega-lite specs
from ``dvc plots diff --json`` are rendered here with vl-convert (no browser, no network).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.errors import ReportError, run_stage
from ml.layout import SOURCE_RECORD

DVC_TIMEOUT_SECONDS = 300
# The trigger's values are free text from outside: each table cell is cut to this length.
CELL_CHARACTERS = 200
SHOWN_FEATURES = 50
# In this order: "&" first, so the entities written after it stay intact.
CELL_ESCAPES = (
    ("&", "&amp;"),
    ("\\", "\\\\"),
    ("|", "\\|"),
    ("`", "\\`"),
    ("<", "&lt;"),
    (">", "&gt;"),
)


@dataclass(frozen=True)
class RetrainTrigger:
    """Why a triggered pipeline retrains: the variables the trigger call sent (GitLab passes
    them to the jobs as CI variables)."""

    reason: str
    drifted_features: list[tuple[str, float | None]] = field(default_factory=list)
    active_tag: str | None = None
    data_source: str | None = None


def trigger_from_environ(environ: Mapping[str, str]) -> RetrainTrigger | None:
    """The trigger of this pipeline: set when ``CI_PIPELINE_SOURCE`` is ``trigger`` or a
    ``RETRAIN_REASON`` is given; None for any other pipeline."""
    reason = environ.get("RETRAIN_REASON", "").strip()
    if environ.get("CI_PIPELINE_SOURCE") != "trigger" and not reason:
        return None
    return RetrainTrigger(
        reason=reason or "not given",
        drifted_features=parse_drifted_features(environ.get("DRIFTED_FEATURES", "")),
        active_tag=environ.get("ACTIVE_TAG", "").strip() or None,
        data_source=environ.get("DATA_SOURCE", "").strip() or None,
    )


def parse_drifted_features(text: str) -> list[tuple[str, float | None]]:
    """``DRIFTED_FEATURES`` as (feature, PSI) pairs. Takes a JSON object ``{"name": psi}``, a
    JSON list of names or of ``{"feature": name, "psi": psi}``, or plain text
    ``name=psi, name:psi, name``."""
    text = text.strip()
    if not text:
        return []
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        return [(str(name), _number(psi)) for name, psi in document.items()]
    if isinstance(document, list):
        return [_feature_entry(entry) for entry in document]
    pairs = []
    for item in re.split(r"[,;\s]+", text):
        match = re.fullmatch(r"([^=:]+)(?:[=:](.*))?", item)
        if match:
            pairs.append((match.group(1), _number(match.group(2))))
    return pairs


def _feature_entry(entry: Any) -> tuple[str, float | None]:
    if isinstance(entry, dict):
        name = entry.get("feature", entry.get("name", "?"))
        return str(name), _number(entry.get("psi"))
    return str(entry), None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN says nothing


def _cell(value: Any) -> str:
    """Free text made safe for one Markdown table cell: one line, no table or HTML syntax."""
    text = " ".join(str(value).split())
    if len(text) > CELL_CHARACTERS:
        text = text[: CELL_CHARACTERS - 1] + "…"
    for char, escaped in CELL_ESCAPES:
        text = text.replace(char, escaped)
    return text or "—"


@dataclass(frozen=True)
class Plot:
    plot_id: str
    spec: dict[str, Any]


def write_report(
    output: Path, baseline_rev: str = "main", trigger: RetrainTrigger | None = None
) -> None:
    """Write the Markdown report of the workspace against ``baseline_rev`` to ``output``,
    with the retraining's reason first when ``trigger`` is given.

    Run from inside the DVC repository. PNG files named ``<output stem>-<plot>.png`` are
    written beside ``output``. Raises ReportError (one-line message) when DVC fails, e.g.
    for an unknown revision.
    """
    metrics = _dvc("metrics", "diff", "--all", "--md", baseline_rev).strip()
    params = _dvc("params", "diff", "--md", baseline_rev).strip()
    plots = parse_plots(_dvc("plots", "diff", baseline_rev, "--json"))
    output.parent.mkdir(parents=True, exist_ok=True)
    images = [(plot.plot_id, _write_png(plot, output)) for plot in plots]
    source = _source_record() if trigger is not None else None
    text = render_markdown(baseline_rev, metrics, params, images, trigger=trigger, source=source)
    output.write_text(text, encoding="utf-8")


def _source_record() -> dict[str, Any] | None:
    try:
        document = json.loads(SOURCE_RECORD.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return document if isinstance(document, dict) else None


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
    baseline_rev: str,
    metrics: str,
    params: str,
    images: list[tuple[str, str]],
    *,
    trigger: RetrainTrigger | None = None,
    source: Mapping[str, Any] | None = None,
) -> str:
    lines = [f"# Experiment report: workspace against `{baseline_rev}`", ""]
    if trigger is not None:
        lines += render_trigger(trigger, source)
    lines += [
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


def render_trigger(trigger: RetrainTrigger, source: Mapping[str, Any] | None) -> list[str]:
    """The "why" section of a retraining report."""
    trained_on = _cell(trigger.data_source or "params.yaml data.source")
    if source is not None:
        trained_on += (
            f" ({_cell(source.get('format'))}, {_cell(source.get('rows'))} rows, sha256 "
            f"{_cell(str(source.get('sha256', ''))[:12])}…, "
            f"{'meets ' + _cell(source['contract']) if source.get('contract') else 'no contract'})"
        )
    lines = [
        "## Why this model was retrained",
        "",
        "The monitoring trigger started this pipeline.",
        "",
        "| | |",
        "| --- | --- |",
        f"| Reason | {_cell(trigger.reason)} |",
        f"| Model in production | {_cell(trigger.active_tag or 'not given')} |",
        f"| Trained on | {trained_on} |",
        "",
    ]
    if trigger.drifted_features:
        lines += ["Drifted features (PSI against the training data):", ""]
        lines += ["| Feature | PSI |", "| --- | --- |"]
        for name, psi in trigger.drifted_features[:SHOWN_FEATURES]:
            lines.append(f"| {_cell(name)} | {'—' if psi is None else f'{psi:.3f}'} |")
        if len(trigger.drifted_features) > SHOWN_FEATURES:
            lines.append(f"| … {len(trigger.drifted_features) - SHOWN_FEATURES} more | |")
        lines.append("")
    lines += [
        "The retrained experiment joins production as a **shadow**: it scores a copy of the "
        "traffic and answers no one. Promoting it to a candidate or the primary stays a "
        "person's decision.",
        "",
    ]
    return lines


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


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ml.report",
        description="Write the experiment report; in a triggered pipeline (CI_PIPELINE_SOURCE="
        "trigger) with the retraining's reason from RETRAIN_REASON, DRIFTED_FEATURES, "
        "ACTIVE_TAG and DATA_SOURCE.",
    )
    parser.add_argument("--output", type=Path, default=Path("report.md"))
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    return parser.parse_args(argv)


def _run(argv: Sequence[str] | None) -> None:
    args = _arguments(argv)
    write_report(args.output, baseline_rev=args.baseline, trigger=trigger_from_environ(os.environ))
    print(f"report written to {args.output}")


def main(argv: Sequence[str] | None = None) -> None:
    run_stage("report", lambda: _run(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
