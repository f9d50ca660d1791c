"""tests/monitoring/promql.py finds every expression, and every expression is valid PromQL."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from . import promql
from .promtool import run_promtool

#: The Model monitoring dashboard has 25 panel targets and alerts.yml 7 alerts today; fewer
#: means an expression was dropped, or promql.py stopped finding some.
MIN_PANEL_EXPRESSIONS = 25
MIN_ALERT_EXPRESSIONS = 7


def json_exprs(node: object) -> Iterator[str]:
    """Every non-empty "expr" string anywhere in a JSON document (independent of promql.py)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str) and value.strip():
                yield value
            else:
                yield from json_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from json_exprs(item)


def check_syntax(promtool: str, exprs: Sequence[str], workdir: Path) -> str:
    """Run ``promtool check rules`` on the expressions as recording rules; return the errors."""
    rules = [{"record": f"promql_check_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rule_file = workdir / "promql_check.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "promql-check", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", rule_file)
    return "" if result.returncode == 0 else result.stdout + result.stderr


def assert_valid_promql(promtool: str, expressions: list[promql.Expression], workdir: Path) -> None:
    if not check_syntax(promtool, [e.expr for e in expressions], workdir):
        return
    invalid = []
    for expression in expressions:
        if errors := check_syntax(promtool, [expression.expr], workdir):
            reason = errors.rpartition("could not parse expression:")[2].strip()
            invalid.append(f"{expression.id}: {expression.expr}\n    {reason}")
    pytest.fail("invalid PromQL:\n" + "\n".join(invalid))


def test_finds_at_least_the_known_number_of_expressions() -> None:
    expressions = promql.all_expressions()
    kinds = [e.kind for e in expressions]

    assert kinds.count("panel") >= MIN_PANEL_EXPRESSIONS
    assert kinds.count("alert") >= MIN_ALERT_EXPRESSIONS
    assert kinds.count("annotation") >= 1
    assert kinds.count("variable") >= 1


def test_finds_every_expr_of_every_dashboard_file() -> None:
    in_files = sorted(
        expr
        for path in promql.dashboard_files()
        for expr in json_exprs(json.loads(path.read_text(encoding="utf-8")))
    )
    found = sorted(
        e.raw for e in promql.dashboard_expressions() if e.kind in ("panel", "annotation")
    )

    assert found == in_files


def test_finds_every_rule_of_the_alerts_file() -> None:
    document = yaml.safe_load(promql.ALERTS_FILE.read_text(encoding="utf-8"))
    in_file = [str(rule["expr"]).strip() for g in document["groups"] for rule in g["rules"]]

    assert [e.expr for e in promql.alert_expressions()] == in_file


def test_panel_expressions_are_the_panel_targets() -> None:
    panels = promql.panel_expressions()

    assert panels
    assert {e.kind for e in panels} == {"panel"}


def test_no_template_variable_is_left() -> None:
    for expression in promql.all_expressions(model_tag="rf-v1", variables={"handler": "/predict"}):
        assert "$" not in expression.expr, expression.id
        assert "[[" not in expression.expr, expression.id


def test_every_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    assert_valid_promql(promtool, promql.all_expressions(), tmp_path)


def test_expressions_with_concrete_variable_values_are_valid_promql(
    promtool: str, tmp_path: Path
) -> None:
    expressions = promql.all_expressions(
        model_tag='rf-v1.2+(exp "a")', variables={"handler": "/predict"}
    )

    assert_valid_promql(promtool, expressions, tmp_path)


def test_promtool_check_catches_invalid_promql(promtool: str, tmp_path: Path) -> None:
    assert check_syntax(promtool, ["sum(rate(ml_api_predictions_total[1m])"], tmp_path)
    assert not check_syntax(promtool, ["sum(rate(ml_api_predictions_total[1m]))"], tmp_path)


# --------------------------------------------------------------------- promql.py itself


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('x{m=~"$model_tag"}[$__rate_interval]', 'x{m=~"tag"}[1m]'),
        ('x{m=~"${model_tag}"}[${__interval}]', 'x{m=~"tag"}[1m]'),
        ('x{m=~"${model_tag:regex}"}', 'x{m=~"tag"}'),
        ('x{m=~"[[model_tag]]"}[$__range]', 'x{m=~"tag"}[1h]'),
    ],
)
def test_substitute_handles_grafana_variable_syntaxes(expr: str, expected: str) -> None:
    assert promql.substitute(expr, {"model_tag": "tag"}) == expected


def test_substitute_rejects_an_unknown_variable() -> None:
    with pytest.raises(promql.UnresolvedVariableError, match="unknown_var"):
        promql.substitute('x{a=~"$unknown_var"}', {})


def test_concrete_model_tag_is_regex_escaped() -> None:
    assert promql.escape_regex_value("rf-v1.2") == "rf-v1\\\\.2"
    assert promql.escape_regex_value("plain_tag-3") == "plain_tag-3"
    assert promql.escape_regex_value('a"b') == 'a\\"b'
    assert promql.escape_regex_value("a\\b") == "a" + "\\" * 4 + "b"


def test_escaped_model_tag_matches_exactly_that_tag(promtool: str, tmp_path: Path) -> None:
    """Run the escaped matchers in promtool: each tag matches itself and no decoy."""
    tags = ["rf-v1.2", 'a"b', "a\\b", "x+(y)|z", "[v]*^$"]
    decoys = ["rf-v1x2", "z", "v", "ab"]
    series = [
        {"series": f"m{{model_tag={json.dumps(tag)}}}", "values": "1"} for tag in tags + decoys
    ]
    cases = [
        {
            "expr": f'm{{model_tag=~"{promql.escape_regex_value(tag)}"}}',
            "eval_time": "0m",
            "exp_samples": [{"labels": f"m{{model_tag={json.dumps(tag)}}}", "value": 1}],
        }
        for tag in tags
    ]
    test_file = tmp_path / "escape_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
            }
        )
    )

    result = run_promtool(promtool, "test", "rules", test_file)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("label_values(ml_api_model_info, model_tag)", "group by (model_tag) (ml_api_model_info)"),
        (
            'label_values(ml_api_model_info{model_type="rf"}, model_tag)',
            'group by (model_tag) (ml_api_model_info{model_type="rf"})',
        ),
        ("label_values(model_tag)", 'group by (model_tag) ({model_tag=~".+"})'),
        ({"query": "query_result(max(ml_api_model_ready))"}, "max(ml_api_model_ready)"),
    ],
)
def test_variable_queries_become_promql(query: object, expected: str) -> None:
    assert promql.variable_query_expr(query) == expected


def test_nested_layouts_are_searched(tmp_path: Path) -> None:
    """Collapsed rows, expanded rows, wrapped exports and sub-directories are all read."""

    def target(expr: str, **extra: object) -> dict[str, object]:
        return {"refId": "A", "expr": expr, **extra}

    dashboard = {
        "templating": {
            "list": [{"name": "model_tag", "type": "custom", "includeAll": True, "allValue": ".*"}]
        },
        "panels": [
            {"type": "stat", "title": "top", "targets": [target("up")]},
            {"type": "row", "title": "Open", "collapsed": False, "panels": []},
            {"type": "timeseries", "title": "open panel", "targets": [target("a")]},
            {
                "type": "row",
                "title": "Closed",
                "collapsed": True,
                "panels": [
                    {
                        "type": "timeseries",
                        "title": "inner",
                        "targets": [target("b", instant=True)],
                    },
                    {"type": "timeseries", "title": "hidden", "targets": [target("c", hide=True)]},
                    {
                        "type": "logs",
                        "title": "loki",
                        "datasource": {"type": "loki", "uid": "loki"},
                        "targets": [target('{app="x"}')],
                    },
                ],
            },
        ],
    }
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "wrapped.json").write_text(json.dumps({"dashboard": dashboard}))

    found = [(e.location, e.expr, e.instant) for e in promql.dashboard_expressions(tmp_path)]

    assert found == [
        ("top [A]", "up", False),
        ("Open / open panel [A]", "a", False),
        ("Closed / inner [A]", "b", True),
    ]
