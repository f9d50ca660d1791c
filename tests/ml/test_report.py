"""The merge-request report: plot specs from DVC, image names, the Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.errors import ReportError
from ml.report import image_name, parse_plots, render_markdown

SPEC = {"mark": "line", "data": {"values": [{"x": 0, "y": 1}]}}


def test_parse_plots_keeps_vega_specs_and_skips_the_rest() -> None:
    document = json.dumps(
        {
            "errors": [{"rev": "main", "msg": "missing"}],
            "data": {
                "confusion": [{"type": "vega", "revisions": ["workspace"], "content": SPEC}],
                "plots/pic.png": [{"type": "image", "revisions": ["main"], "url": "x.png"}],
            },
        }
    )

    plots = parse_plots(document)

    assert [(p.plot_id, p.spec) for p in plots] == [("confusion", SPEC)]


def test_parse_plots_refuses_what_is_not_json() -> None:
    with pytest.raises(ReportError, match="unexpected JSON"):
        parse_plots("ERROR: oops")


@pytest.mark.parametrize(
    ("plot_id", "expected"),
    [
        ("confusion", "report-confusion.png"),
        ("plots/roc/Adelie.json", "report-roc-Adelie.png"),
        ("plots/pr/a b.csv", "report-pr-a-b.png"),
    ],
)
def test_image_names_sit_next_to_the_report(plot_id: str, expected: str) -> None:
    assert image_name(Path("out/report.md"), plot_id) == expected


def test_markdown_embeds_images_by_relative_name() -> None:
    text = render_markdown("main", "| m |", "", [("confusion", "report-confusion.png")])

    assert "![confusion](report-confusion.png)" in text
    assert "Params are the same as on `main`." in text
    assert text.startswith("# Experiment report: workspace against `main`")
