"""Generate the Grafana dashboards of ml-api as code (grafana-foundation-sdk).

Run ``python grafana/generate_dashboards.py`` after editing this file and commit both the
generator and the JSON it writes to ``grafana/dashboards/``. A test regenerates the JSON and
fails when the committed file is stale.

Every query reads the metrics ml-api exports at ``GET /metrics``. The service runs several
workers in prometheus-client multiprocess mode, so gauges may arrive as one series per worker:
every gauge is aggregated (``max``/``sum``) before it is shown.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"

#: The datasource provisioned in grafana/provisioning/datasources/prometheus.yml.
DATASOURCE = dash_models.DataSourceRef(type_val="prometheus", uid="prometheus")

MODEL_MONITORING_UID = "ml-api-model-monitoring"
MODEL_ROW = "Model"
SERVICE_ROW = "Service"

#: Grafana.com dashboard 1860 "Node Exporter Full" keeps this uid when imported.
NODE_EXPORTER_FULL_UID = "rYdddlPWk"

MODEL = 'model_tag=~"$model_tag"'
HANDLER = 'handler=~"$handler"'
RATE = "$__rate_interval"

FULL_WIDTH = 24
HALF_WIDTH = 12
STAT_HEIGHT = 4
GRAPH_HEIGHT = 8


def query(expr: str, legend: str = "__auto", ref_id: str = "A") -> prometheus.Dataquery:
    """A range query on the provisioned Prometheus datasource."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .range()
        .datasource(DATASOURCE)
    )


def instant_query(expr: str, legend: str = "__auto", ref_id: str = "A") -> prometheus.Dataquery:
    """An instant query, for stat panels that show one value for the whole time range."""
    return query(expr, legend, ref_id).instant()


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(dash_models.ThresholdsMode.ABSOLUTE)
        .steps([dash_models.Threshold(value=value, color=color) for value, color in steps])
    )


def stat_panel(title: str, description: str, *targets: prometheus.Dataquery) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(6)
        .height(STAT_HEIGHT)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def graph_panel(title: str, description: str, *targets: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(HALF_WIDTH)
        .height(GRAPH_HEIGHT)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def stacked(panel: timeseries.Panel) -> timeseries.Panel:
    return panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))


# --------------------------------------------------------------------------- model row


def active_model() -> stat.Panel:
    return stat_panel(
        "Active model",
        "The primary model tag (and model type) serving predictions. More than one tag means "
        "workers disagree, e.g. in the middle of a hot swap. Canaries and shadows: see the "
        "Experiments dashboard.",
        instant_query(
            'max by (model_tag, model_type) (ml_api_model_info{role="primary"}) > 0',
            legend="{{model_tag}} ({{model_type}})",
        ),
    ).text_mode(common.BigValueTextMode.NAME)


def model_ready() -> stat.Panel:
    return (
        stat_panel(
            "Model ready",
            "1 when a model is loaded and serving (any worker), 0 when none is.",
            instant_query("max(ml_api_model_ready)", legend="ready"),
        )
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .mappings(
            [
                dash_models.ValueMap(
                    options={
                        "0": dash_models.ValueMappingResult(text="not ready", color="red"),
                        "1": dash_models.ValueMappingResult(text="ready", color="green"),
                    }
                )
            ]
        )
        .thresholds(thresholds((None, "red"), (1, "green")))
    )


def swaps_in_range() -> stat.Panel:
    return (
        stat_panel(
            "Model swaps in time range",
            "Hot swaps attempted during the selected time range, by result. Any failure means a "
            "candidate model was rejected and the previous model kept serving.",
            instant_query(
                "sum by (result) (increase(ml_api_model_swaps_total[$__range]))",
                legend="{{result}}",
            ),
        )
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .decimals(0)
        .override_by_name(
            "failure",
            [
                dash_models.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "red"}
                )
            ],
        )
    )


def model_load_time() -> stat.Panel:
    return (
        stat_panel(
            "Average model load time",
            "Mean time to load (and verify) a model, over all loads since the workers started.",
            instant_query(
                "sum(ml_api_model_load_seconds_sum) / sum(ml_api_model_load_seconds_count)",
                legend="load time",
            ),
        )
        .unit("s")
        .decimals(2)
    )


def swap_events() -> timeseries.Panel:
    return (
        graph_panel(
            "Model swap events",
            "Hot swaps per interval, by result (success or failure). Successful swaps are also "
            "drawn as annotations on every graph.",
            query(
                f"sum by (result) (increase(ml_api_model_swaps_total[{RATE}]))",
                legend="{{result}}",
            ),
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .decimals(0)
        .min(0)
        .override_by_name(
            "failure",
            [
                dash_models.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "red"}
                )
            ],
        )
    )


def average_confidence() -> timeseries.Panel:
    return (
        graph_panel(
            "Average confidence",
            "Mean probability of the predicted (top) class, per model tag. A sustained drop "
            "below 0.5 fires the MlApiConfidenceCollapse alert.",
            query(
                f"sum by (model_tag) (rate(ml_api_prediction_confidence_sum{{{MODEL}}}[{RATE}]))"
                f" / sum by (model_tag) "
                f"(rate(ml_api_prediction_confidence_count{{{MODEL}}}[{RATE}]))",
                legend="{{model_tag}}",
            ),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "red"), (0.5, "transparent")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    )


def confidence_distribution() -> heatmap.Panel:
    return (
        heatmap.Panel()
        .title("Confidence distribution")
        .description(
            "How many predictions fell in each top-class probability bucket per interval. Mass "
            "moving to the low buckets means the model is unsure about recent inputs."
        )
        .datasource(DATASOURCE)
        .span(HALF_WIDTH)
        .height(GRAPH_HEIGHT)
        .with_target(
            query(
                f"sum by (le) (increase(ml_api_prediction_confidence_bucket{{{MODEL}}}[{RATE}]))",
                legend="{{le}}",
            ).format(PromQueryFormat.HEATMAP)
        )
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .y_axis(heatmap.YAxisConfig().unit("percentunit").decimals(2))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .cell_gap(1)
        .show_legend()
    )


def predictions_by_class() -> timeseries.Panel:
    return stacked(
        graph_panel(
            "Predictions by class",
            "Predicted rows per second, by predicted class label (stacked). A shift in the mix "
            "is often the first visible sign of drift.",
            query(
                f"sum by (label) (rate(ml_api_predictions_total{{{MODEL}}}[{RATE}]))",
                legend="{{label}}",
            ),
        )
    ).unit("cps")


def drift_by_feature() -> timeseries.Panel:
    return (
        graph_panel(
            "Input drift (PSI) by feature",
            "Population stability index of recent inputs against the training distribution, "
            "for the model active at each moment. Below 0.1: stable; 0.1-0.2: moderate shift; "
            "above 0.2 for 15 minutes fires MlApiInputDrift.",
            query(
                f"max by (model_tag, feature) (ml_api_input_drift_psi{{{MODEL}}})"
                " and on (model_tag) "
                f"(max by (model_tag) (ml_api_model_info{{{MODEL}}}) > 0)",
                legend="{{feature}} ({{model_tag}})",
            ),
        )
        .min(0)
        .decimals(3)
        .thresholds(thresholds((None, "transparent"), (0.1, "yellow"), (0.2, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE_AND_AREA
            )
        )
    )


def unknown_categories() -> timeseries.Panel:
    return (
        graph_panel(
            "Unknown categories by feature",
            "Categorical values never seen in training, per interval and feature. The model "
            "still answers, but these rows are out of its training distribution.",
            query(
                f"sum by (feature) (increase(ml_api_unknown_categories_total{{{MODEL}}}[{RATE}]))",
                legend="{{feature}}",
            ),
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .min(0)
    )


# ------------------------------------------------------------------------- service row


def targets_up() -> stat.Panel:
    return (
        stat_panel(
            "Instances up",
            "ml-api instances Prometheus scrapes successfully (up == 1).",
            instant_query('sum(up{job="ml-api"})', legend="up"),
        )
        .span(4)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .thresholds(thresholds((None, "red"), (1, "green")))
    )


def successful_requests() -> stat.Panel:
    return (
        stat_panel(
            "Successful requests",
            "Requests answered with a 2xx status during the selected time range.",
            instant_query(
                'sum(increase(ml_api_http_requests_total{status=~"2.."}[$__range]))',
                legend="2xx",
            ),
        )
        .span(5)
        .unit("short")
        .decimals(0)
    )


def success_ratio() -> stat.Panel:
    return (
        stat_panel(
            "Success ratio",
            "Share of requests answered with 2xx during the selected time range (4xx count as "
            "unsuccessful: they are rejected inputs).",
            instant_query(
                '(sum(increase(ml_api_http_requests_total{status=~"2.."}[$__range])) or vector(0))'
                " / sum(increase(ml_api_http_requests_total[$__range]))",
                legend="2xx ratio",
            ),
        )
        .span(5)
        .unit("percentunit")
        .decimals(2)
        .thresholds(thresholds((None, "red"), (0.9, "yellow"), (0.99, "green")))
    )


def server_error_ratio() -> stat.Panel:
    return (
        stat_panel(
            "5xx ratio",
            "Share of requests answered with 5xx during the selected time range. Above 5% for "
            "5 minutes fires MlApiHigh5xxRatio.",
            instant_query(
                '(sum(increase(ml_api_http_requests_total{status=~"5.."}[$__range])) or vector(0))'
                " / sum(increase(ml_api_http_requests_total[$__range]))",
                legend="5xx ratio",
            ),
        )
        .span(5)
        .unit("percentunit")
        .decimals(2)
        .thresholds(thresholds((None, "green"), (0.01, "yellow"), (0.05, "red")))
    )


def in_flight_now() -> stat.Panel:
    return (
        stat_panel(
            "In-flight now",
            "Requests being processed right now, summed over all workers and instances.",
            instant_query("sum(ml_api_http_requests_in_progress)", legend="in flight"),
        )
        .span(5)
        .decimals(0)
    )


def requests_by_status() -> timeseries.Panel:
    return stacked(
        graph_panel(
            "Requests by status",
            "Requests per second by HTTP status code (stacked).",
            query(
                f"sum by (status) (rate(ml_api_http_requests_total[{RATE}]))",
                legend="{{status}}",
            ),
        )
    ).unit("reqps")


def throughput() -> timeseries.Panel:
    return graph_panel(
        "Throughput by route",
        "Requests per second by route and method (filtered by the handler variable).",
        query(
            f"sum by (handler, method) (rate(ml_api_http_requests_total{{{HANDLER}}}[{RATE}]))",
            legend="{{method}} {{handler}}",
        ),
    ).unit("reqps")


def latency() -> timeseries.Panel:
    targets = [
        query(
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(ml_api_http_request_duration_seconds_bucket{{{HANDLER}}}[{RATE}])))",
            legend=legend,
            ref_id=ref_id,
        )
        for quantile, legend, ref_id in (
            ("0.5", "p50", "A"),
            ("0.95", "p95", "B"),
            ("0.99", "p99", "C"),
        )
    ]
    return graph_panel(
        "Latency p50 / p95 / p99",
        "Request duration quantiles over the routes selected by the handler variable, from "
        "the request duration histogram. p99 above 1 s on /predict routes fires "
        "MlApiHighP99Latency.",
        *targets,
    ).unit("s")


def in_flight() -> timeseries.Panel:
    return graph_panel(
        "In-flight requests",
        "Requests being processed, by route, summed over workers and instances.",
        query(
            f"sum by (handler) (ml_api_http_requests_in_progress{{{HANDLER}}})",
            legend="{{handler}}",
        ),
    ).decimals(0)


def invalid_requests() -> timeseries.Panel:
    return stacked(
        graph_panel(
            "Invalid requests by reason",
            "Rejected inputs per second by reason (missing_feature, wrong_type, malformed_csv, "
            "too_many_rows, ...). A jump usually means a client changed its payload.",
            query(
                f"sum by (reason) (rate(ml_api_invalid_requests_total[{RATE}]))",
                legend="{{reason}}",
            ),
        )
    ).unit("reqps")


def rows_per_request() -> timeseries.Panel:
    return graph_panel(
        "Rows per request",
        "Batch size of prediction requests: median, p95 and mean rows per request.",
        query(
            f"histogram_quantile(0.5, sum by (le) (rate(ml_api_rows_per_request_bucket[{RATE}])))",
            legend="p50",
            ref_id="A",
        ),
        query(
            f"histogram_quantile(0.95, sum by (le) (rate(ml_api_rows_per_request_bucket[{RATE}])))",
            legend="p95",
            ref_id="B",
        ),
        query(
            f"sum(rate(ml_api_rows_per_request_sum[{RATE}]))"
            f" / sum(rate(ml_api_rows_per_request_count[{RATE}]))",
            legend="mean",
            ref_id="C",
        ),
    ).min(0)


# ------------------------------------------------------------------------------ dashboard


def label_values_variable(
    name: str, label: str, metric: str, query_label: str
) -> dash.QueryVariable:
    """A multi-value variable with an "All" option matching every value (``.*``)."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {query_label})")
        .refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dash_models.VariableOption(selected=True, text="All", value="$__all"))
    )


def model_monitoring() -> dash.Dashboard:
    """The "Model monitoring" dashboard: a model row and a service row."""
    model_panels: list[Callable[[], stat.Panel | timeseries.Panel | heatmap.Panel]] = [
        active_model,
        model_ready,
        swaps_in_range,
        model_load_time,
        swap_events,
        average_confidence,
        confidence_distribution,
        predictions_by_class,
        drift_by_feature,
        unknown_categories,
    ]
    service_panels: list[Callable[[], stat.Panel | timeseries.Panel | heatmap.Panel]] = [
        targets_up,
        successful_requests,
        success_ratio,
        server_error_ratio,
        in_flight_now,
        requests_by_status,
        throughput,
        latency,
        in_flight,
        invalid_requests,
        rows_per_request,
    ]
    builder = (
        dash.Dashboard("Model monitoring")
        .uid(MODEL_MONITORING_UID)
        .description(
            "ml-api: the active model, its predictions, confidence and input drift, and the "
            "HTTP service around it. Host CPU/memory: see the Node Exporter Full link."
        )
        .tags(["ml-api", "prometheus"])
        .editable()
        .tooltip(dash_models.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(
            label_values_variable("model_tag", "Model tag", "ml_api_model_info", "model_tag")
        )
        .with_variable(
            label_values_variable("handler", "Route", "ml_api_http_requests_total", "handler")
        )
        .annotation(
            dash.AnnotationQuery()
            .name("Model swaps")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("purple")
            .expr(f'sum(increase(ml_api_model_swaps_total{{result="success"}}[{RATE}])) > 0')
        )
        .link(
            dash.DashboardLink("Node Exporter Full (host CPU / memory)")
            .type(dash_models.DashboardLinkType.LINK)
            .url(f"/d/{NODE_EXPORTER_FULL_UID}/node-exporter-full")
            .icon("dashboard")
            .tooltip("Grafana.com dashboard 1860, imported into this Grafana")
            .keep_time(True)
            .target_blank(False)
        )
        .link(
            dash.DashboardLink("Grafana.com dashboard 1860")
            .type(dash_models.DashboardLinkType.LINK)
            .url("https://grafana.com/grafana/dashboards/1860")
            .icon("external link")
            .tooltip("Import this dashboard by id 1860 for host metrics from node-exporter")
            .target_blank(True)
        )
    )

    panel_id = 0
    for row_title, panels in ((MODEL_ROW, model_panels), (SERVICE_ROW, service_panels)):
        panel_id += 1
        builder = builder.with_row(dash.Row(row_title).id(panel_id))
        for make_panel in panels:
            panel_id += 1
            builder = builder.with_panel(make_panel().id(panel_id))
    return builder


# ---------------------------------------------------------------------- experiments

EXPERIMENTS_UID = "ml-api-experiments"
ARMS = 'role=~"primary|candidate"'
PAIR = "primary_tag, shadow_tag"


def observed_traffic_share() -> timeseries.Panel:
    return (
        graph_panel(
            "Traffic share by model (observed)",
            "Share of prediction requests each model answered (primary and candidates). "
            "Compare with the configured weights next to it; a candidate whose share falls to "
            "0 was probably taken out by the canary guard.",
            query(
                f"sum by (model_tag) (rate(ml_api_model_inference_seconds_count{{{ARMS}}}[{RATE}]))"
                f" / scalar(sum(rate(ml_api_model_inference_seconds_count{{{ARMS}}}[{RATE}])))",
                legend="{{model_tag}}",
            ),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
    )


def configured_traffic() -> timeseries.Panel:
    return (
        graph_panel(
            "Configured traffic by model",
            "Percent of requests each arm is configured to answer (for shadows: percent of "
            "requests mirrored), from the deployment spec (or the bandit's current weights).",
            query(
                "max by (model_tag, role) (ml_api_traffic_weight_percent)",
                legend="{{model_tag}} ({{role}})",
            ),
        )
        .min(0)
        .max(100)
    )


def model_requests() -> timeseries.Panel:
    return graph_panel(
        "Requests by model and role",
        "Prediction requests per second each model served (shadows: mirrored requests scored).",
        query(
            f"sum by (model_tag, role) (rate(ml_api_model_inference_seconds_count[{RATE}]))",
            legend="{{model_tag}} ({{role}})",
        ),
    ).unit("reqps")


def model_latency() -> timeseries.Panel:
    return graph_panel(
        "Model latency p99 by model",
        "99th percentile of the time from a request reaching its model to its probabilities "
        "(micro-batching included), per model and role. The canary guard compares these.",
        query(
            f"histogram_quantile(0.99, sum by (model_tag, role, le) "
            f"(rate(ml_api_model_inference_seconds_bucket[{RATE}])))",
            legend="{{model_tag}} ({{role}})",
        ),
    ).unit("s")


def model_errors() -> timeseries.Panel:
    return (
        graph_panel(
            "Model errors by model",
            "Failed model calls per second. A candidate's failures are answered by the primary "
            "and count against the candidate in the canary guard.",
            query(
                f"sum by (model_tag, role) (rate(ml_api_model_errors_total[{RATE}]))",
                legend="{{model_tag}} ({{role}})",
            ),
        )
        .unit("reqps")
        .min(0)
    )


def class_mix_by_model() -> timeseries.Panel:
    return (
        graph_panel(
            "Class mix by model",
            "Share of predicted rows per class, per model (shadows included): arms that see the "
            "same traffic should predict a similar mix.",
            query(
                f"sum by (model_tag, label) (rate(ml_api_predictions_total[{RATE}]))"
                f" / ignoring(label) group_left "
                f"sum by (model_tag) (rate(ml_api_predictions_total[{RATE}]))",
                legend="{{model_tag}}: {{label}}",
            ),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
    )


def shadow_agreement() -> timeseries.Panel:
    return (
        graph_panel(
            "Shadow label agreement",
            "Share of mirrored rows on which the shadow predicted the primary's label.",
            query(
                f"sum by ({PAIR}) (rate(ml_api_shadow_agreements_total[{RATE}]))"
                f" / sum by ({PAIR}) (rate(ml_api_shadow_rows_total[{RATE}]))",
                legend="{{shadow_tag}} vs {{primary_tag}}",
            ),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
    )


def shadow_probability_difference() -> timeseries.Panel:
    return (
        graph_panel(
            "Shadow probability difference",
            "Per mirrored row, the largest absolute difference in any class probability between "
            "shadow and primary: median and 99th percentile.",
            *(
                query(
                    f"histogram_quantile({q}, sum by ({PAIR}, le) "
                    f"(rate(ml_api_shadow_probability_diff_bucket[{RATE}])))",
                    legend=f"p{int(float(q) * 100)} {{{{shadow_tag}}}} vs {{{{primary_tag}}}}",
                    ref_id=ref,
                )
                for q, ref in (("0.5", "A"), ("0.99", "B"))
            ),
        )
        .min(0)
        .max(1)
    )


def shadow_latency() -> timeseries.Panel:
    return graph_panel(
        "Shadow latency: primary vs shadow (p50)",
        "Median model time of mirrored requests, for the primary (when it answered) and the "
        "shadow (whose mirrors are scored together, off the answer's path).",
        query(
            f"histogram_quantile(0.5, sum by (shadow_tag, model, le) "
            f"(rate(ml_api_shadow_latency_seconds_bucket[{RATE}])))",
            legend="{{shadow_tag}}: {{model}}",
        ),
    ).unit("s")


def shadow_drops() -> timeseries.Panel:
    return (
        graph_panel(
            "Shadow mirrors, drops and errors",
            "Mirrored requests compared, those dropped because the shadow queue was full (the "
            "shadow yields to live traffic), and shadow calls that failed. None ever affects "
            "an answer.",
            query(
                f"sum by (shadow_tag) (rate(ml_api_shadow_requests_total[{RATE}]))",
                legend="compared {{shadow_tag}}",
                ref_id="C",
            ),
            query(
                f"sum by (shadow_tag) (rate(ml_api_shadow_dropped_total[{RATE}]))",
                legend="dropped {{shadow_tag}}",
                ref_id="A",
            ),
            query(
                f"sum by (shadow_tag) (rate(ml_api_shadow_errors_total[{RATE}]))",
                legend="errors {{shadow_tag}}",
                ref_id="B",
            ),
        )
        .unit("reqps")
        .min(0)
    )


def guard_events() -> stat.Panel:
    return (
        stat_panel(
            "Canary guard events in time range",
            "Candidates the canary guard took out of the traffic, by model and reason "
            "(error_rate or latency). They stay out until a person puts them back.",
            instant_query(
                "sum by (model_tag, reason) (increase(ml_api_canary_guard_events_total[$__range]))",
                legend="{{model_tag}} {{reason}}",
            ),
        )
        .span(HALF_WIDTH)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .decimals(0)
        .thresholds(thresholds((None, "green"), (1, "red")))
    )


def deployment_changes() -> timeseries.Panel:
    return (
        graph_panel(
            "Deployment changes",
            "Changes of the deployment spec per interval, by action (put, replace, promote, "
            "rollback, guard) and result.",
            query(
                f"sum by (action, result) (increase(ml_api_deployment_changes_total[{RATE}]))",
                legend="{{action}} {{result}}",
            ),
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .decimals(0)
        .min(0)
    )


def online_vs_offline_accuracy() -> timeseries.Panel:
    return (
        graph_panel(
            "Online vs offline accuracy",
            "Per model: the share of labelled feedbacks (POST /feedback) on which it predicted "
            "the true label, over the last hour, beside the accuracy recorded when it was "
            "trained. MlApiOnlineAccuracyBelowOffline fires when the primary falls 5 points "
            "below.",
            query(
                'sum by (model_tag) (increase(ml_api_feedback_total{result="correct"}[1h]))'
                " / sum by (model_tag) "
                '(increase(ml_api_feedback_total{result=~"correct|incorrect"}[1h]))',
                legend="{{model_tag}} online",
                ref_id="A",
            ),
            query(
                "max by (model_tag) (ml_api_model_offline_accuracy)",
                legend="{{model_tag}} offline",
                ref_id="B",
            ),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
    )


def feedback_received() -> timeseries.Panel:
    return (
        graph_panel(
            "Feedback received",
            "Feedback items per second by outcome: accepted, duplicate, or why they were refused "
            "(malformed, forged, unknown or expired request id, row out of range, unknown label, "
            "store unavailable).",
            query(
                f"sum by (outcome) (rate(ml_api_feedback_items_total[{RATE}]))",
                legend="{{outcome}}",
            ),
        )
        .unit("reqps")
        .min(0)
    )


def ab_success_rate() -> timeseries.Panel:
    return (
        graph_panel(
            "A/B success rate with confidence interval",
            "Per arm of the running split: the success rate from labelled feedback, with the "
            "bounds of its Wilson confidence interval (GET /deployment/report has the full "
            "statistics).",
            query(
                "max by (model_tag, bound) (ml_api_ab_success_rate)",
                legend="{{model_tag}} {{bound}}",
            ),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
    )


def ab_p_values() -> timeseries.Panel:
    return (
        graph_panel(
            "A/B p-values and sample ratio",
            "p-value of each candidate's difference from the primary (z-test on success rates, "
            "Welch's t-test on rewards), and of the sample-ratio check: below 0.001 the traffic "
            "is not split as configured and the comparison cannot be trusted.",
            query(
                "max by (model_tag, test) (ml_api_ab_p_value)",
                legend="{{model_tag}} {{test}}",
                ref_id="A",
            ),
            query("max(ml_api_ab_srm_p_value)", legend="sample ratio", ref_id="B"),
        )
        .min(0)
        .max(1)
    )


def bandit_probability_best() -> timeseries.Panel:
    return (
        graph_panel(
            "Bandit: probability of being best",
            "Per arm of a bandit, the posterior probability that it is the best; Thompson sampling "
            "shares traffic by it (each arm keeps at least the configured floor).",
            query("max by (model_tag) (ml_api_bandit_probability_best)", legend="{{model_tag}}"),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
    )


def experiments() -> dash.Dashboard:
    """The "Experiments" dashboard: traffic split, shadows, canary guard, per-model health."""
    rows: list[tuple[str, list[Callable[[], stat.Panel | timeseries.Panel]]]] = [
        ("Traffic", [observed_traffic_share, configured_traffic, model_requests, guard_events]),
        ("Models", [model_latency, model_errors, class_mix_by_model, deployment_changes]),
        (
            "Shadows",
            [shadow_agreement, shadow_probability_difference, shadow_latency, shadow_drops],
        ),
        (
            "Feedback",
            [
                online_vs_offline_accuracy,
                feedback_received,
                ab_success_rate,
                ab_p_values,
                bandit_probability_best,
            ],
        ),
    ]
    builder = (
        dash.Dashboard("Experiments")
        .uid(EXPERIMENTS_UID)
        .description(
            "ml-api live experiments: how traffic is split between the primary and its "
            "candidates, how shadows compare with the primary, and the canary guard."
        )
        .tags(["ml-api", "prometheus", "experiments"])
        .editable()
        .tooltip(dash_models.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .annotation(
            dash.AnnotationQuery()
            .name("Canary guard")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr(f"sum(increase(ml_api_canary_guard_events_total[{RATE}])) > 0")
        )
        .annotation(
            dash.AnnotationQuery()
            .name("Deployment changes")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("purple")
            .expr(f'sum(increase(ml_api_deployment_changes_total{{result="success"}}[{RATE}])) > 0')
        )
        .link(
            dash.DashboardLink("Model monitoring")
            .type(dash_models.DashboardLinkType.LINK)
            .url(f"/d/{MODEL_MONITORING_UID}")
            .icon("dashboard")
            .keep_time(True)
        )
    )
    panel_id = 0
    for title, panels in rows:
        panel_id += 1
        builder = builder.with_row(dash.Row(title).id(panel_id))
        for make_panel in panels:
            panel_id += 1
            builder = builder.with_panel(make_panel().id(panel_id))
    return builder


# --------------------------------------------------------------------- host and processes

HOST_UID = "ml-api-host"
NODE = 'job="node-exporter"'
DISKS = 'fstype!~"tmpfs|overlay|squashfs|ramfs"'


def host_cpu() -> timeseries.Panel:
    return stacked(
        graph_panel(
            "Host CPU by mode",
            "Cores busy per mode (user, system, iowait, steal, ...), summed over the host's "
            "cores. Steal is CPU the hypervisor gave to other machines: on a shared host it "
            "explains latency that nothing in ml-api does.",
            query(
                f'sum by (instance, mode) (rate(node_cpu_seconds_total{{{NODE}, mode!="idle"}}'
                f"[{RATE}]))",
                legend="{{instance}} {{mode}}",
            ),
        )
    ).min(0)


def host_load() -> timeseries.Panel:
    return graph_panel(
        "Host load and cores",
        "1-minute load average against the number of cores: above it, work waits for a CPU.",
        query(f"max by (instance) (node_load1{{{NODE}}})", legend="{{instance}} load1", ref_id="A"),
        query(
            f'count by (instance) (node_cpu_seconds_total{{{NODE}, mode="idle"}})',
            legend="{{instance}} cores",
            ref_id="B",
        ),
    ).min(0)


def host_memory() -> timeseries.Panel:
    return (
        graph_panel(
            "Host memory used",
            "Share of the host's memory in use (1 - available / total).",
            query(
                f"1 - max by (instance) (node_memory_MemAvailable_bytes{{{NODE}}})"
                f" / max by (instance) (node_memory_MemTotal_bytes{{{NODE}}})",
                legend="{{instance}}",
            ),
        )
        .unit("percentunit")
        .min(0)
        .max(1)
    )


def host_disk() -> timeseries.Panel:
    return graph_panel(
        "Disk space used and I/O",
        "Share of each real filesystem in use, and bytes read and written per second.",
        query(
            f"1 - max by (instance, mountpoint) (node_filesystem_avail_bytes{{{NODE}, {DISKS}}})"
            f" / max by (instance, mountpoint) (node_filesystem_size_bytes{{{NODE}, {DISKS}}})",
            legend="{{instance}} {{mountpoint}} used",
            ref_id="A",
        ),
        query(
            f"sum by (instance) (rate(node_disk_read_bytes_total{{{NODE}}}[{RATE}]))",
            legend="{{instance}} read B/s",
            ref_id="B",
        ),
        query(
            f"sum by (instance) (rate(node_disk_written_bytes_total{{{NODE}}}[{RATE}]))",
            legend="{{instance}} written B/s",
            ref_id="C",
        ),
    ).min(0)


def host_network() -> timeseries.Panel:
    return (
        graph_panel(
            "Network traffic",
            "Bytes received and sent per second on the host's interfaces (loopback excluded).",
            query(
                f'sum by (instance) (rate(node_network_receive_bytes_total{{{NODE}, device!="lo"}}'
                f"[{RATE}]))",
                legend="{{instance}} received",
                ref_id="A",
            ),
            query(
                f'sum by (instance) (rate(node_network_transmit_bytes_total{{{NODE}, device!="lo"}}'
                f"[{RATE}]))",
                legend="{{instance}} sent",
                ref_id="B",
            ),
        )
        .unit("Bps")
        .min(0)
    )


def worker_cpu() -> timeseries.Panel:
    return graph_panel(
        "CPU per ml-api worker",
        "Cores used by each worker process (from its own CPU time): an uneven split means "
        "connections are not spread across workers; one worker at 1.0 is saturated.",
        query(
            f"max by (instance, pid) (rate(ml_api_worker_cpu_seconds[{RATE}]))",
            legend="{{instance}} pid {{pid}}",
        ),
    ).min(0)


def worker_memory() -> timeseries.Panel:
    return (
        graph_panel(
            "Resident memory per ml-api worker",
            "Resident memory of each worker process: every loaded model adds to it; it should come "
            "back down when models leave the deployment spec.",
            query(
                "max by (instance, pid) (ml_api_worker_resident_memory_bytes)",
                legend="{{instance}} pid {{pid}}",
            ),
        )
        .unit("bytes")
        .min(0)
    )


def host() -> dash.Dashboard:
    """The "Host and processes" dashboard: node-exporter beside ml-api's own workers."""
    rows: list[tuple[str, list[Callable[[], timeseries.Panel]]]] = [
        ("Host", [host_cpu, host_load, host_memory, host_disk, host_network]),
        ("ml-api workers", [worker_cpu, worker_memory]),
    ]
    builder = (
        dash.Dashboard("Host and processes")
        .uid(HOST_UID)
        .description(
            "The machine under ml-api (node-exporter: CPU, load, memory, disk, network) and "
            "each ml-api worker's CPU and resident memory."
        )
        .tags(["ml-api", "prometheus", "host"])
        .editable()
        .tooltip(dash_models.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .link(
            dash.DashboardLink("Model monitoring")
            .type(dash_models.DashboardLinkType.LINK)
            .url(f"/d/{MODEL_MONITORING_UID}")
            .icon("dashboard")
            .keep_time(True)
        )
    )
    panel_id = 0
    for title, panels in rows:
        panel_id += 1
        builder = builder.with_row(dash.Row(title).id(panel_id))
        for make_panel in panels:
            panel_id += 1
            builder = builder.with_panel(make_panel().id(panel_id))
    return builder


#: file name -> dashboard factory. Add new dashboards here.
DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "model-monitoring.json": model_monitoring,
    "experiments.json": experiments,
    "host.json": host,
}


def render(dashboard: dash.Dashboard) -> str:
    """Stable JSON text for one dashboard (sorted keys, two-space indent, final newline)."""
    return json.dumps(dashboard.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write_dashboards(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, factory in DASHBOARDS.items():
        path = out_dir / file_name
        path.write_text(render(factory()), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DASHBOARDS_DIR,
        help="directory to write the dashboard JSON files to (default: grafana/dashboards)",
    )
    args = parser.parse_args(argv)
    for path in write_dashboards(args.out_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
