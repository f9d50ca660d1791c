from __future__ import annotations

import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from app.errors import ModelRejected
from app.registry.model_file import dump_model, load_model, sha256_hex
from tests.models import trained


def _custom_function(x: object) -> object:
    return x


def test_round_trip_of_a_trusted_model() -> None:
    data = dump_model(trained("hgb"))
    model = load_model(data, expected_sha256=sha256_hex(data))
    assert list(model.classes_) == ["Adelie", "Chinstrap", "Gentoo"]


def test_hash_mismatch_is_refused() -> None:
    data = dump_model(trained("logreg"))
    with pytest.raises(ModelRejected, match="sha256"):
        load_model(data, expected_sha256="0" * 64)


def test_untrusted_type_is_refused_even_with_a_matching_hash() -> None:
    data = sio.dumps(FunctionTransformer(func=_custom_function))
    with pytest.raises(ModelRejected, match="untrusted types"):
        load_model(data, expected_sha256=sha256_hex(data))


def test_dump_refuses_a_model_the_service_could_not_load() -> None:
    with pytest.raises(ModelRejected, match="allow-list"):
        dump_model(FunctionTransformer(func=_custom_function))


def test_garbage_is_refused() -> None:
    data = b"definitely not a zip file"
    with pytest.raises(ModelRejected):
        load_model(data, expected_sha256=sha256_hex(data))
