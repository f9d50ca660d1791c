"""Live figures of a deployment's arms and shadows, read from this server's metrics.

The figures are those of this instance (all its workers, since they started): what the
management API shows next to the spec. Cluster-wide figures are the same series summed over
instances in Prometheus (the Experiments dashboard).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from app.metrics import current_samples
from app.serving.deployment import ServingPlan

Samples = list[tuple[str, dict[str, str], float]]


def deployment_figures(plan: ServingPlan) -> dict[str, Any]:
    samples = current_samples()
    return {
        "arms": _arms(plan, samples),
        "shadows": _shadows(plan, samples),
        "scope": "this instance (all its workers) since it started",
    }


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


def _quantile(samples: Samples, name: str, q: float, **labels: str) -> float | None:
    """``histogram_quantile`` over the ``_bucket`` samples matching ``labels``."""
    buckets: dict[float, float] = defaultdict(float)
    for sample, have, value in samples:
        if sample == f"{name}_bucket" and all(have.get(k) == v for k, v in labels.items()):
            buckets[float(have["le"])] += value
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, count
    return lower


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _arms(plan: ServingPlan, samples: Samples) -> list[dict[str, Any]]:
    spec = plan.spec
    arms = [(spec.primary, "primary"), *((c.tag, "candidate") for c in spec.candidates)]
    served = {
        tag: _sum(samples, "ml_api_model_inference_seconds_count", model_tag=tag, role=role)
        for tag, role in arms
    }
    total = sum(served.values())
    figures = []
    for tag, role in arms:
        requests = served[tag]
        errors = _sum(samples, "ml_api_model_errors_total", model_tag=tag, role=role)
        labels = {"model_tag": tag, "role": role}
        figures.append(
            {
                "tag": tag,
                "role": role,
                "configured_percent": plan.router.weights.get(tag, 0.0),
                "observed_percent": round(100 * requests / total, 3) if total else None,
                "requests": int(requests),
                "errors": int(errors),
                "error_rate": round(errors / (requests + errors), 6) if requests else None,
                "rows": int(_sum(samples, "ml_api_predictions_total", **labels)),
                "latency_p50_ms": _ms(
                    _quantile(samples, "ml_api_model_inference_seconds", 0.5, **labels)
                ),
                "latency_p99_ms": _ms(
                    _quantile(samples, "ml_api_model_inference_seconds", 0.99, **labels)
                ),
            }
        )
    return figures


def _shadows(plan: ServingPlan, samples: Samples) -> list[dict[str, Any]]:
    primary = plan.spec.primary
    figures = []
    for shadow in plan.spec.shadows:
        pair = {"primary_tag": primary, "shadow_tag": shadow.tag}
        rows = _sum(samples, "ml_api_shadow_rows_total", **pair)
        agreed = _sum(samples, "ml_api_shadow_agreements_total", **pair)
        diff_sum = _sum(samples, "ml_api_shadow_probability_diff_sum", **pair)
        figures.append(
            {
                "tag": shadow.tag,
                "percent": shadow.percent,
                "compared_with": primary,
                "mirrored_requests": int(_sum(samples, "ml_api_shadow_requests_total", **pair)),
                "rows_compared": int(rows),
                "label_agreement": round(agreed / rows, 6) if rows else None,
                "mean_max_probability_diff": round(diff_sum / rows, 6) if rows else None,
                "p99_max_probability_diff": _quantile(
                    samples, "ml_api_shadow_probability_diff", 0.99, **pair
                ),
                "dropped": int(_sum(samples, "ml_api_shadow_dropped_total", shadow_tag=shadow.tag)),
                "errors": int(_sum(samples, "ml_api_shadow_errors_total", **pair)),
                "primary_latency_p50_ms": _ms(
                    _quantile(
                        samples, "ml_api_shadow_latency_seconds", 0.5, model="primary", **pair
                    )
                ),
                "shadow_latency_p50_ms": _ms(
                    _quantile(samples, "ml_api_shadow_latency_seconds", 0.5, model="shadow", **pair)
                ),
            }
        )
    return figures
