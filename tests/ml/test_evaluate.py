"""Stage evaluate: held-out metrics, the seeded robustness check, plot data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.params import Params, RobustnessParams
from ml.schema import missing_mask, model_frame
from ml.stages.evaluate import Evaluation, evaluate, perturb, plot_file_names, score
from ml.stages.preprocess import Prepared
from ml.stages.train import Trained

METRICS = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "log_loss"}


@pytest.fixture(scope="module")
def evaluation(trained_logreg: Trained, prepared_penguins: Prepared, params: Params) -> Evaluation:
    schema = prepared_penguins.schema
    features = model_frame(prepared_penguins.test, schema.features)
    labels = prepared_penguins.test[schema.target]
    return evaluate(trained_logreg.model, features, labels, schema, params.evaluate.robustness)


def test_metrics_cover_clean_and_damaged_inputs(evaluation: Evaluation) -> None:
    metrics = evaluation.metrics

    assert set(metrics) == METRICS | {"robustness"}
    assert set(metrics["robustness"]) == METRICS
    assert metrics["accuracy"] > 0.9
    assert metrics["robustness"]["log_loss"] > metrics["log_loss"]


def test_plot_data_has_one_curve_per_class_and_every_test_row(
    evaluation: Evaluation, prepared_penguins: Prepared
) -> None:
    assert set(evaluation.roc) == set(evaluation.pr) == {"Adelie", "Chinstrap", "Gentoo"}
    assert evaluation.roc["Gentoo"][0] == {"fpr": 0.0, "tpr": 0.0}
    assert evaluation.roc["Gentoo"][-1] == {"fpr": 1.0, "tpr": 1.0}
    assert len(evaluation.confusion) == len(prepared_penguins.test)


def test_perturbation_is_seeded_and_blanks_the_configured_share(
    prepared_penguins: Prepared,
) -> None:
    schema = prepared_penguins.schema
    features = model_frame(prepared_penguins.test, schema.features)
    params = RobustnessParams(noise_scale=0.5, missing_share=0.3, seed=1)

    first = perturb(features, schema, params)
    again = perturb(features, schema, params)
    other = perturb(features, schema, params.model_copy(update={"seed": 2}))

    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    before = missing_mask(features, schema.features).to_numpy().mean()
    added = missing_mask(first, schema.features).to_numpy().mean() - before
    assert 0.2 < added < 0.4
    assert first["island"].dtype == object
    assert first["body_mass_g"].dtype == np.float64
    pd.testing.assert_frame_equal(features, model_frame(prepared_penguins.test, schema.features))


def test_roc_auc_is_null_when_a_class_is_absent_from_the_test_rows() -> None:
    labels = pd.Series(["a", "a", "b", "b"])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])

    metrics = score(labels, probabilities, ["a", "b", "c"])

    assert metrics["roc_auc_ovr"] is None
    assert metrics["accuracy"] == 1.0


def test_binary_roc_auc_uses_the_positive_class_column() -> None:
    labels = pd.Series(["no", "yes", "no", "yes"])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])

    assert score(labels, probabilities, ["no", "yes"])["roc_auc_ovr"] == 1.0


def test_plot_file_names_are_safe_and_distinct() -> None:
    names = plot_file_names(["a b", "a/b", "", "Gentoo"])

    assert names == {
        "a b": "a_b.json",
        "a/b": "a_b_2.json",
        "": "class.json",
        "Gentoo": "Gentoo.json",
    }
