"""The merge-request report: plot specs from DVC, image names, the Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.errors import ReportError
from ml.report import (
    RetrainTrigger,
    image_name,
    parse_drifted_features,
    parse_plots,
    render_markdown,
    trigger_from_environ,
)

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


# -- the retraining report: why the model was retrained -----------------------------------


TRIGGERED = {
    "CI_PIPELINE_SOURCE": "trigger",
    "RETRAIN_REASON": "drift: PSI above 0.2 for 2 features over 1h",
    "DRIFTED_FEATURES": "bill_length_mm=0.31,flipper_length_mm=0.27",
    "ACTIVE_TAG": "1a2b3c4",
    "DATA_SOURCE": "s3://extracts/penguins/2026-11-29.parquet",
}


def test_only_triggered_pipelines_carry_a_trigger() -> None:
    assert trigger_from_environ({"CI_PIPELINE_SOURCE": "merge_request_event"}) is None
    assert trigger_from_environ({"CI_PIPELINE_SOURCE": "push"}) is None

    trigger = trigger_from_environ(TRIGGERED)

    assert trigger == RetrainTrigger(
        reason="drift: PSI above 0.2 for 2 features over 1h",
        drifted_features=[("bill_length_mm", 0.31), ("flipper_length_mm", 0.27)],
        active_tag="1a2b3c4",
        data_source="s3://extracts/penguins/2026-11-29.parquet",
    )
    assert trigger_from_environ({"CI_PIPELINE_SOURCE": "trigger"}) == RetrainTrigger(
        reason="not given"
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"bill_length_mm": 0.31, "sex": "n/a"}',
        '[{"feature": "bill_length_mm", "psi": 0.31}, {"name": "sex"}]',
        "bill_length_mm:0.31; sex",
        " bill_length_mm=0.31\nsex=oops ",
    ],
    ids=["json-object", "json-list", "colon-semicolon", "equals-newline"],
)
def test_drifted_features_are_read_in_every_form_a_trigger_sends(text: str) -> None:
    assert parse_drifted_features(text) == [("bill_length_mm", 0.31), ("sex", None)]


def test_report_of_a_retraining_says_why_first() -> None:
    trigger = trigger_from_environ(TRIGGERED)
    source = {"format": "parquet", "rows": 300, "sha256": "ab" * 32, "contract": "c.yaml"}

    text = render_markdown("HEAD", "| m |", "| p |", [], trigger=trigger, source=source)

    assert text.index("## Why this model was retrained") < text.index("## Metrics")
    assert "| Reason | drift: PSI above 0.2 for 2 features over 1h |" in text
    assert "| Model in production | 1a2b3c4 |" in text
    assert (
        "| Trained on | s3://extracts/penguins/2026-11-29.parquet (parquet, 300 rows, sha256 "
        "abababababab…, meets c.yaml) |"
    ) in text
    assert "| bill_length_mm | 0.310 |" in text
    assert "| flipper_length_mm | 0.270 |" in text
    assert "**shadow**" in text


def test_merge_request_report_has_no_trigger_section() -> None:
    assert "Why this model" not in render_markdown("main", "| m |", "", [])


def test_trigger_text_cannot_break_the_table_or_inject_html() -> None:
    trigger = RetrainTrigger(
        reason="a | b\n<img src=x onerror=alert(1)> `code` " + "x" * 300,
        drifted_features=[("f|g", None)],
    )

    text = render_markdown("HEAD", "", "", [], trigger=trigger)

    (reason_row,) = [line for line in text.splitlines() if line.startswith("| Reason |")]
    assert reason_row.count(" | ") == 1  # two cells: the pipe in the text is escaped
    assert "a \\| b &lt;img src=x onerror=alert(1)&gt; \\`code\\`" in reason_row
    assert len(reason_row) < 260
    assert "| f\\|g | — |" in text
