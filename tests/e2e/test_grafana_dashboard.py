"""docs/grafana/gatehouse.json: a Grafana dashboard whose every query names only metrics a real
gateway exports (scraped from its /metrics after some traffic)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.support.procs import Gateway

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "gatehouse.json"
HELLO = [{"role": "user", "content": "hello"}]
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",), "summary": ("_sum", "_count")}
CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers,
    ranges, grouping clauses, functions and numbers are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = CLAUSE.sub(" ", text)
    text = re.sub(r"label_values\(([^,()]*),\s*\w+\s*\)", r" \1 ", text)  # Grafana's: a label
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        after = text[match.end():].lstrip()
        if after.startswith("(") or text[:match.start()].endswith(("$", ".")):
            continue  # a function or aggregation, or a $variable
        if re.fullmatch(r"e\d*|Inf|NaN", match.group()):
            continue
        names.add(match.group())
    return names


def exported(text: str) -> set[str]:
    """Every sample name /metrics may carry, from its TYPE lines and its samples."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total")
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_the_dashboard_is_grafana_json() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    assert d["__inputs"][0]["pluginId"] == "prometheus" and d["uid"] and d["title"]
    assert isinstance(d["schemaVersion"], int) and d["id"] is None
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels(d):
        grid = p["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and grid["x"] + grid["w"] <= 24
        if p["type"] == "row":
            continue
        assert p["type"] == "timeseries" and p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}" and t["expr"].count("(") == \
                t["expr"].count(")"), t["expr"]
    variables = d["templating"]["list"]
    assert all(v["datasource"]["uid"] == "${DS_PROMETHEUS}" for v in variables)


def test_every_query_names_metrics_the_gateway_exports(shared_gateway: Gateway) -> None:
    gw = shared_gateway
    with httpx.Client(timeout=30) as c:
        assert c.post(gw.url + "/v1/chat/completions",
                      json={"model": "m", "messages": HELLO}).status_code == 200
        with c.stream("POST", gw.url + "/v1/chat/completions",
                      json={"model": "m", "messages": HELLO, "stream": True}) as s:
            assert s.status_code == 200
            s.read()
        assert c.post(gw.url + "/v1/chat/completions",
                      json={"model": "nope", "messages": HELLO}).status_code == 404
        scraped = c.get(gw.url + "/metrics").text
    have = exported(scraped)
    d = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in panels(d) for t in p.get("targets", [])]
    queries += [v["definition"] for v in d["templating"]["list"]]
    read = set()
    for expr in queries:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        read |= names
    assert read - have == set(), "metrics the gateway does not export"
    # the panels the operators look at first have data, not only a TYPE line
    samples = {line.split("{")[0].split()[0] for line in scraped.splitlines()
               if line and not line.startswith("#")}
    assert {"gatehouse_requests_total", "gen_ai_server_request_duration_seconds_bucket",
            "gen_ai_server_time_to_first_token_seconds_bucket", "gen_ai_client_token_usage_sum",
            "gen_ai_client_operation_duration_seconds_bucket"} <= samples
    # and the parser finds what it should
    assert metric_names('histogram_quantile(0.95, sum by (le, model) (rate(x_bucket{a="b(c"}'
                        '[$__rate_interval])))') == {"x_bucket"}
    assert metric_names("label_values(y_count, some_label)") == {"y_count"}
