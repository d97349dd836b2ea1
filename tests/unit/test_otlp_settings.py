"""The ``[telemetry] otlp_*`` settings: checked, secrets kept out of messages and reprs, and
the OpenTelemetry SDK loaded only when the export is on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gatehouse.config import ConfigError, load_settings

SECRET = "Bearer otlp-secret-value"


def load(tmp_path: Path, telemetry: str) -> object:
    path = tmp_path / "gatehouse.toml"
    path.write_text("[telemetry]\n" + telemetry + "\n")
    return load_settings(path, environ={})


@pytest.mark.parametrize(("line", "says"), [
    ('otlp_endpoint = "ftp://collector:4318"', "http:// or https://"),
    ('otlp_endpoint = "collector:4318"', "http:// or https://"),
    ('otlp_endpoint = "http://user:pw@collector:4318"', "credentials"),
    ('otlp_endpoint = "http://collector:4318/?x=1"', "query"),
    ('otlp_endpoint = "http://collector:99999"', "not a URL"),
    ('otlp_headers = {"bad name" = "x"}', "header name"),
    ('otlp_sample_ratio = 1.5', "less than or equal to 1"),
    ('otlp_metrics_interval = 0.1', "greater than or equal to 0.5"),
    ('otlp_service_name = ""', "at least 1"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, line: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, line)
    assert err.value.key.startswith("telemetry.otlp_") and says in err.value.reason


def test_header_values_are_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, 'otlp_headers = {authorization = "Bearer otlp-secret\\u0007"}')
    assert "otlp-secret" not in str(err.value) and "authorization" in str(err.value)
    ok = load(tmp_path, f'otlp_endpoint = "https://collector:4318/"\n'
                        f'otlp_headers = {{authorization = "{SECRET}"}}')
    telemetry = ok.telemetry  # type: ignore[attr-defined]
    assert telemetry.otlp_endpoint == "https://collector:4318"
    assert telemetry.otlp_headers == {"authorization": SECRET}
    assert SECRET not in repr(ok) and SECRET not in repr(telemetry)
    shown = ok.model_dump_json()  # type: ignore[attr-defined]  # what `gatehouse check` prints
    assert SECRET not in shown and '"otlp_headers":{"authorization":"(hidden)"}' in shown


def test_the_sdk_is_loaded_only_when_the_export_is_on(tmp_path: Path) -> None:
    code = """if True:
        import sys
        from gatehouse.app import create_app
        from gatehouse.config import Settings
        base = {"storage": {"database_url": "sqlite+aiosqlite:///:memory:"},
                "identity": {"secret": "x" * 40}, "telemetry": {"access_log": False}}
        create_app(Settings.model_validate(base))
        print("off", any(m.startswith("opentelemetry.sdk") for m in sys.modules))
        base["telemetry"]["otlp_endpoint"] = "http://127.0.0.1:9"
        create_app(Settings.model_validate(base))
        print("on", any(m.startswith("opentelemetry.sdk") for m in sys.modules))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, cwd=Path(__file__).parents[2]).stdout
    assert out.split() == ["off", "False", "on", "True"]


def test_without_the_sdk_the_setting_says_what_to_install() -> None:
    code = """if True:
        import sys
        sys.modules["opentelemetry.sdk"] = None  # as if the otlp extra were not installed
        from gatehouse.app import create_app
        from gatehouse.config import ConfigError, Settings
        try:
            create_app(Settings.model_validate({
                "storage": {"database_url": "sqlite+aiosqlite:///:memory:"},
                "identity": {"secret": "x" * 40},
                "telemetry": {"otlp_endpoint": "http://127.0.0.1:9"}}))
        except ConfigError as exc:
            print(exc.key, "|", exc.reason)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, cwd=Path(__file__).parents[2]).stdout
    assert out.startswith("telemetry.otlp_endpoint |") and "gatehouse-llm[otlp]" in out
