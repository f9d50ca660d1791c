"""prometheus/alertmanager.yml: valid, and routing the retraining alerts to ml-api."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.monitoring.alertmanager import CONFIG

AMTOOL = shutil.which("amtool")
pytestmark = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (apt-get install prometheus-alertmanager)"
)


def amtool(*args: str) -> str:
    assert AMTOOL is not None
    result = subprocess.run([AMTOOL, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_config_is_valid() -> None:
    assert "SUCCESS" in amtool("check-config", str(CONFIG))


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=MlApiInputDrift", "model_tag=a"], "ml-api-retrain,on-call"),
        (["alertname=MlApiOnlineAccuracyBelowOffline"], "ml-api-retrain,on-call"),
        (["alertname=MlApiDown"], "on-call"),
        (["alertname=MlApiInputDriftX"], "on-call"),
    ],
)
def test_retraining_alerts_reach_ml_api_and_on_call(labels: list[str], receivers: str) -> None:
    routed = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert routed.strip() == receivers
