"""Every PromQL expression the monitoring of ml-api sends to Prometheus, ready to run.

Sources:

- the Grafana dashboards in ``grafana/dashboards/`` (recursively, any depth): every panel
  target, including panels nested in collapsed rows, every Prometheus annotation and every
  query variable (``label_values(metric, label)`` becomes ``group by (label) (metric)``);
- the rules in ``prometheus/alerts.yml`` (alerting and recording).

Functions: :func:`all_expressions`, :func:`dashboard_expressions` (panels, annotations,
variables), :func:`panel_expressions`, :func:`alert_expressions`.

Dashboard expressions have their template variables substituted the way Grafana would before
sending them: ``$__rate_interval`` and ``$__interval`` become ``1m``, ``$__range`` becomes
``1h``, and a dashboard variable becomes its "All" value (``.*``) unless a value is given. A
concrete ``model_tag`` is regex-escaped, because the dashboards match variables with ``=~``.

Typical use::

    for expression in all_expressions():
        response = client.get("/api/v1/query", params={"query": expression.expr})
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO_ROOT / "grafana" / "dashboards"
ALERTS_FILE = REPO_ROOT / "prometheus" / "alerts.yml"

#: Grafana's built-in interval variables, as Grafana would fill them for a one-hour range with
#: a 15 s scrape interval ($__rate_interval = 4 x scrape interval).
BUILTIN_VARIABLES: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__rate_interval_ms": "60000",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

ExpressionKind = Literal["panel", "annotation", "variable", "alert", "record"]

# $name, ${name}, ${name:format}, [[name]], [[name:format]]
_VARIABLE = re.compile(
    r"\$(?P<plain>\w+)"
    r"|\$\{(?P<braced>\w+)(?::(?P<braced_fmt>[^}]+))?\}"
    r"|\[\[(?P<bracketed>\w+)(?::(?P<bracketed_fmt>[^\]]+))?\]\]"
)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+),\s*)?(?P<label>\w+)\s*\)\s*$")
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.DOTALL)
_ML_API_METRIC = re.compile(r"\bml_api_[A-Za-z0-9_:]*")
# What Grafana's Prometheus datasource escapes in a multi-value variable (the value ends up in
# a double-quoted PromQL string, hence the doubled backslash).
_REGEX_SPECIAL = re.compile(r"""[$^*{}\[\]'+?.()|]""")


class UnresolvedVariableError(ValueError):
    """An expression still holds a template variable after substitution."""


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from."""

    kind: ExpressionKind
    #: File it was read from, relative to the repository root when inside it.
    source: str
    #: Where in that file: "Row / Panel title [refId]", "annotation Name", "alert Name", ...
    location: str
    #: The expression as written in the file (template variables unsubstituted).
    raw: str
    #: The expression ready for the Prometheus query API.
    expr: str
    #: True when Grafana runs it as an instant query (stat panels), else a range query.
    instant: bool = False

    @property
    def id(self) -> str:
        """A short unique-enough name, e.g. for ``pytest.mark.parametrize(ids=...)``."""
        return f"{Path(self.source).name}: {self.location}"


def escape_regex_value(value: str) -> str:
    """Escape one variable value for a ``label=~"..."`` matcher, as Grafana does.

    Regex metacharacters get a backslash, written doubled because the value sits in a
    double-quoted PromQL string; a double quote is escaped for that string.
    """
    escaped = value.replace("\\", "\\" * 4)
    escaped = _REGEX_SPECIAL.sub(lambda match: "\\" * 2 + match.group(0), escaped)
    return escaped.replace('"', '\\"')


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana template variables in ``expr``; raise if one is unknown."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("plain") or match.group("braced") or match.group("bracketed")
        if name in variables:
            return variables[name]
        if name in BUILTIN_VARIABLES:
            return BUILTIN_VARIABLES[name]
        raise UnresolvedVariableError(f"unknown template variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


def referenced_metrics(expr: str) -> set[str]:
    """Identifiers in ``expr`` that name ml-api metrics (``ml_api_...``), suffixes included."""
    return set(_ML_API_METRIC.findall(expr))


def dashboard_files(dashboards_dir: Path = DASHBOARDS_DIR) -> list[Path]:
    """Every dashboard JSON file under ``dashboards_dir``, recursively, sorted."""
    return sorted(dashboards_dir.rglob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object")
    # A dashboard exported with "Export for sharing externally" or saved through the HTTP API
    # wraps the model in {"dashboard": {...}}.
    inner = data.get("dashboard")
    return inner if isinstance(inner, dict) and "panels" in inner else data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Every panel with the title of the row it belongs to (``None`` above the first row).

    Handles both row layouts Grafana writes: panels following an expanded row at the top
    level, and panels nested inside a collapsed row. Rows themselves are yielded too.
    """

    def walk(
        panels: list[dict[str, Any]], row: str | None
    ) -> Iterator[tuple[str | None, dict[str, Any]]]:
        current_row = row
        for panel in panels:
            if panel.get("type") == "row":
                current_row = str(panel.get("title", ""))
                yield current_row, panel
                yield from walk(panel.get("panels") or [], current_row)
            else:
                yield current_row, panel
                # Library panels or other containers may nest panels too.
                yield from walk(panel.get("panels") or [], current_row)

    yield from walk(dashboard.get("panels") or [], None)


def dashboard_variables(
    dashboard: Mapping[str, Any], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Values for the dashboard's template variables: overrides, else the default value.

    The default of a variable with an "All" option is its ``allValue`` (``.*``); otherwise the
    current value, else the first option.
    """
    values: dict[str, str] = {}
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        name = str(variable["name"])
        if variable.get("includeAll") and variable.get("allValue") is not None:
            values[name] = str(variable["allValue"])
            continue
        current = (variable.get("current") or {}).get("value")
        if current is None and variable.get("options"):
            current = variable["options"][0].get("value")
        if isinstance(current, list):
            current = "|".join(str(item) for item in current)
        if current is not None and current != "$__all":
            values[name] = str(current)
    values.update(overrides or {})
    return values


def variable_query_expr(query: object) -> str:
    """The PromQL equivalent of a Prometheus query variable."""
    text = query.get("query", "") if isinstance(query, Mapping) else query
    if not isinstance(text, str):
        raise ValueError(f"unsupported variable query: {query!r}")
    if match := _LABEL_VALUES.match(text):
        label = match.group("label")
        selector = match.group("selector") or f'{{{label}=~".+"}}'
        return f"group by ({label}) ({selector})"
    if match := _QUERY_RESULT.match(text):
        return match.group("expr").strip()
    raise ValueError(f"unsupported variable query: {text!r}")


def _is_prometheus(datasource: object) -> bool:
    if datasource is None:
        return True  # the default datasource, which is Prometheus here
    if isinstance(datasource, Mapping):
        return datasource.get("type") in (None, "prometheus")
    return True  # a datasource name or a variable: assume Prometheus


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def dashboard_expressions(
    dashboards_dir: Path = DASHBOARDS_DIR,
    *,
    model_tag: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[Expression]:
    """Every PromQL expression of every dashboard, template variables substituted.

    ``model_tag`` picks one model (regex-escaped); ``variables`` sets any variable's raw value
    (e.g. ``{"handler": "/predict"}``); unset variables take their "All" value.
    """
    overrides = dict(variables or {})
    if model_tag is not None:
        overrides["model_tag"] = escape_regex_value(model_tag)
    expressions: list[Expression] = []
    for path in dashboard_files(dashboards_dir):
        dashboard = load_dashboard(path)
        values = dashboard_variables(dashboard, overrides)
        source = _relative(path)

        for row, panel in iter_panels(dashboard):
            panel_name = str(panel.get("title") or f"panel {panel.get('id')}")
            location = f"{row} / {panel_name}" if row and panel.get("type") != "row" else panel_name
            for target in panel.get("targets") or []:
                raw = target.get("expr")
                if not raw or target.get("hide") is True:
                    continue
                if not _is_prometheus(target.get("datasource", panel.get("datasource"))):
                    continue
                expressions.append(
                    Expression(
                        kind="panel",
                        source=source,
                        location=f"{location} [{target.get('refId', '?')}]",
                        raw=raw,
                        expr=substitute(raw, values),
                        instant=bool(target.get("instant")) and not target.get("range"),
                    )
                )

        for annotation in (dashboard.get("annotations") or {}).get("list") or []:
            raw = annotation.get("expr")
            if raw and _is_prometheus(annotation.get("datasource")):
                expressions.append(
                    Expression(
                        kind="annotation",
                        source=source,
                        location=f"annotation {annotation.get('name')}",
                        raw=raw,
                        expr=substitute(raw, values),
                    )
                )

        for variable in (dashboard.get("templating") or {}).get("list") or []:
            if variable.get("type") != "query" or not _is_prometheus(variable.get("datasource")):
                continue
            raw = variable_query_expr(variable.get("query"))
            expressions.append(
                Expression(
                    kind="variable",
                    source=source,
                    location=f"variable {variable.get('name')}",
                    raw=raw,
                    expr=substitute(raw, values),
                    instant=True,
                )
            )
    return expressions


def panel_expressions(
    dashboards_dir: Path = DASHBOARDS_DIR,
    *,
    model_tag: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[Expression]:
    """Only the panel targets of :func:`dashboard_expressions`."""
    return [
        expression
        for expression in dashboard_expressions(
            dashboards_dir, model_tag=model_tag, variables=variables
        )
        if expression.kind == "panel"
    ]


def alert_expressions(alerts_file: Path = ALERTS_FILE) -> list[Expression]:
    """Every rule expression of a Prometheus rule file (alerting and recording rules)."""
    document = yaml.safe_load(alerts_file.read_text(encoding="utf-8")) or {}
    expressions: list[Expression] = []
    for group in document.get("groups") or []:
        for rule in group.get("rules") or []:
            kind: ExpressionKind = "alert" if "alert" in rule else "record"
            raw = str(rule["expr"]).strip()
            expressions.append(
                Expression(
                    kind=kind,
                    source=_relative(alerts_file),
                    location=f"{kind} {rule.get(kind)} (group {group.get('name')})",
                    raw=raw,
                    expr=raw,
                    instant=True,
                )
            )
    return expressions


def all_expressions(
    *,
    dashboards_dir: Path = DASHBOARDS_DIR,
    alerts_file: Path = ALERTS_FILE,
    model_tag: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[Expression]:
    """Dashboard expressions followed by rule expressions."""
    return [
        *dashboard_expressions(dashboards_dir, model_tag=model_tag, variables=variables),
        *alert_expressions(alerts_file),
    ]
