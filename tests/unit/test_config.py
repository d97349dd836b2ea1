from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.app import build_router
from gatehouse.config import ConfigError, load_settings
from gatehouse.telemetry.metrics import Metrics


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gatehouse.toml"
    path.write_text(text)
    return path


def test_defaults_serve_the_demo_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.server.port == 8787 and settings.demo.enabled
    router, _ = build_router(settings, Metrics(), environ={})
    assert list(router.routes) == ["demo"]


def test_file_and_env_overlay(tmp_path: Path) -> None:
    path = write(tmp_path, """
[server]
port = 9000
[upstreams.vllm]
base_url = "http://10.0.0.5:8000/v1/"
api_key_env = "VLLM_KEY"
[models.llama]
backends = ["vllm", { upstream = "vllm", model = "meta/llama", weight = 3 }]
""")
    settings = load_settings(path, environ={"GATEHOUSE_SERVER__PORT": "9100",
                                            "GATEHOUSE_DEMO__ENABLED": "false"})
    assert settings.server.port == 9100 and not settings.demo.enabled
    assert settings.upstreams["vllm"].base_url == "http://10.0.0.5:8000/v1"
    assert [b.model for b in settings.models["llama"].backends] == [None, "meta/llama"]
    router, _ = build_router(settings, Metrics(), environ={"VLLM_KEY": "secret"})
    assert [t.model for t in router.routes["llama"].targets] == ["llama", "meta/llama"]


@pytest.mark.parametrize("text, key, reason", [
    ("[server]\nport = 'x'", "server.port", "valid integer"),
    ("[server]\nprot = 1", "server.prot", "unknown key"),
    # a rule is a dataclass, not a model: its misspellings are refused all the same
    ("[[edge.rules]]\naction = 'deny'\ncidrs = '192.0.2.1'", "edge.rules.0.cidrs", "unknown key"),
    ("[[edge.rules]]\naction = 'deny'\nlist_file = 'a.txt'", "edge.rules.0.list_file",
     "unknown key"),
    ("[[edge.rules]]\naction = 'deny'\ncidr = 'x'", "edge.rules.0", "cidr: 'x' is not"),
    ("[[edge.rules]]\ncidr = '192.0.2.1'", "edge.rules.0.action", "required key is missing"),
    ("[[edge.rules]]\naction = 'deny'\nname = 'ok'\ndifficulty = 40", "edge.rules.0.difficulty",
     "less than or equal to 32"),
    # a rule that is not a table: worded as any section's (a model's), as before
    ("[edge]\nrules = ['x']", "edge.rules.0",
     "Input should be a valid dictionary or instance of EdgeRuleSettings"),
    ("[edge]\ndetector = 'x'", "edge.detector",
     "Input should be a valid dictionary or instance of DetectorSettings"),
    ("[server\nport = 1", "", "not valid TOML"),
    ("[upstreams.a]\nbase_url = 'ftp://x'", "upstreams.a.base_url", "http://"),
    # found by a review: a newline in a backend's URL passed `gatehouse check`
    ('[upstreams.a]\nbase_url = "http://a\\nb/"', "upstreams.a.base_url",
     "control character (U+000A at position 8)"),
    ('[telemetry]\notlp_endpoint = "http://c\\td:4318"', "telemetry.otlp_endpoint",
     "control character (U+0009"),
    ('[status]\nslack_webhook_urls = ["http://x\\u0000y"]', "status.slack_webhook_urls",
     "control character (U+0000"),
    ("[upstreams.a]\nconnect_timeout = 1", "upstreams.a.base_url", "required key is missing"),
    ("[models.m]\nbackends = ['ghost']", "", "no [upstreams.ghost]"),
    ("[models.demo]\nbackends = ['a']\n[upstreams.a]\nbase_url = 'http://x'", "",
     "clashes with the built-in demo model"),
    ("[telemetry]\nrollup_hour_days = 7", "telemetry",
     "rollup_minute_days ≤ rollup_hour_days ≤ rollup_day_days (got 14, 7, 400)"),
    ("[telemetry]\nrollup_day_days = 0", "telemetry.rollup_day_days", "greater than 0"),
    ("[server]\nmin_send_rate = 0", "server.min_send_rate", "greater than or equal to 1"),
    ("[server]\nmin_send_rate = 'fast'", "server.min_send_rate", "valid integer"),
    ("[quota]\nlimiter_timeout = 0", "quota.limiter_timeout", "greater than 0"),
    ("[quota]\nlimiter_timeout = 3600", "quota.limiter_timeout", "less than or equal to 60"),
])
def test_bad_config_names_file_key_and_reason(tmp_path: Path, text: str, key: str,
                                              reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.source == str(path)
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(path) in str(info.value)


def test_missing_file_and_missing_api_key_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    # found by hypothesis (test_parser_properties.py): these escaped as UnicodeDecodeError
    # and ValueError, a traceback instead of the file's name and what is wrong with it
    (tmp_path / "latin1.toml").write_bytes(b"[server]\nhost = '\xe9'\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(tmp_path / "latin1.toml", environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(None, environ={"GATEHOUSE_CONFIG": "gate\0house.toml"})
    settings = load_settings(write(tmp_path, "[upstreams.o]\nbase_url = 'https://api.openai.com/v1'"
                                             "\napi_key_env = 'OPENAI_API_KEY'"), environ={})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        build_router(settings, Metrics(), environ={})


def test_env_values_are_typed(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={
        "GATEHOUSE_DEMO__FAILURE_RATE": "0.5", "GATEHOUSE_SERVER__HOST": "0.0.0.0"})
    assert settings.demo.failure_rate == 0.5 and settings.server.host == "0.0.0.0"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), environ={"GATEHOUSE_SERVER__PORT": "99999"})
    assert info.value.key == "server.port" and "environment" in info.value.source


def test_deeply_nested_values_are_a_configuration_error(tmp_path: Path) -> None:
    # found by a review: ~2,000 levels were a RecursionError traceback from every command
    # (tomllib reading the file or a variable's value, then the merge of the two)
    deep = "[" * 2000 + "]" * 2000
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, f"# [\ns = '[[['\na = {deep}\n"), environ={})
    assert "nested more than 32 levels" in info.value.reason and "(line 3)" in info.value.reason
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), environ={"GATEHOUSE_SERVER__HOST": deep})
    assert info.value.source == "GATEHOUSE_SERVER__HOST" and info.value.key == "server.host"
    dotted = ".".join(["a"] * 3000)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, f"{dotted} = 1\n"),
                      environ={"GATEHOUSE_" + dotted.replace(".", "__").upper(): "2"})
    assert "nested more than 32 levels" in info.value.reason
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, f"{dotted} = 1\n"), environ={})
    assert info.value.key == "a.a.a.a.…"
    with pytest.raises(ConfigError) as info:  # under the bound: pydantic's word, as before
        load_settings(write(tmp_path, "[server]\nhost = " + "[" * 30 + "]" * 30), environ={})
    assert info.value.key == "server.host" and "valid string" in info.value.reason


def test_edge_rules_are_listed_as_written(tmp_path: Path) -> None:
    """The admin listing and the compiled rules read a rule's written form: its keys in the
    order they are declared, ``list`` by its TOML name, the keys not given left out."""
    path = write(tmp_path, """
[[edge.rules]]
action = "challenge"
difficulty = 20
path = "^/login"
name = "login"

[[edge.rules]]
list = "bad.txt"
action = "deny"
country = ["NL", "be"]
asn = 64500
""")
    rules = load_settings(path, environ={}).edge.rules
    written = [rule.written() for rule in rules]
    assert written == [{"action": "challenge", "name": "login", "path": "^/login",
                        "difficulty": 20},
                       {"action": "deny", "list": "bad.txt", "country": ["NL", "be"],
                        "asn": 64500}]
    assert [list(w) for w in written] == [["action", "name", "path", "difficulty"],
                                          ["action", "list", "country", "asn"]]
