"""The files in deploy/ say what the gateway really accepts: the Kubernetes manifests and the
compose file load as gatehouse settings, their probes are the gateway's, the compose nginx
configuration is the tested one (tests/cluster runs deploy/nginx/gatehouse.conf), and the
systemd unit runs options `gatehouse serve` has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from gatehouse.cli.main import app as cli_app
from gatehouse.config import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def settings_of(toml: str | None, env: dict[str, str], tmp: Path) -> Settings:
    path = None
    if toml is not None:
        path = tmp / "gatehouse.toml"
        path.write_text(toml)
    return load_settings(path, environ=env)


def test_kubernetes_manifests_load_as_settings_with_real_probes(tmp_path: Path) -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes" /
                                                      "gatehouse.yaml").read_text())}
    assert set(docs) == {"Secret", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    settings = settings_of(docs["ConfigMap"]["data"]["gatehouse.toml"],
                           docs["Secret"]["stringData"], tmp_path)
    assert settings.storage.database_url.startswith("postgresql+asyncpg://")
    assert settings.storage.state_url.startswith("redis://")
    assert settings.identity.secret and "llama-3-8b" in settings.models
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    # streams in flight get the whole grace before Kubernetes kills the pod
    assert pod["terminationGracePeriodSeconds"] > settings.server.shutdown_grace_seconds + pause


def test_compose_environment_loads_as_settings(tmp_path: Path) -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    replicas = [name for name in services if name.startswith("gatehouse-")]
    assert len(replicas) == 3
    settings = settings_of(None, services["gatehouse-1"]["environment"], tmp_path)
    assert settings.storage.database_url.endswith("@postgres:5432/gatehouse")
    assert settings.storage.state_url == "redis://redis:6379/0"
    assert [str(n) for n in settings.edge.trusted_proxies] == ["172.16.0.0/12"]
    # compose's nginx is the shipped (and tested) one with the compose service names
    shipped = (DEPLOY / "nginx" / "gatehouse.conf").read_text()
    body = shipped[shipped.index("upstream gatehouse"):]
    for n in (1, 2, 3):
        body = body.replace(f"server 127.0.0.1:880{n} ", f"server gatehouse-{n}:8787 ")
    compose_conf = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert compose_conf[compose_conf.index("upstream gatehouse"):] == body


def test_systemd_unit_runs_options_serve_has() -> None:
    unit = (DEPLOY / "systemd" / "gatehouse@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert exec_start
    argv = shlex.split(exec_start.group(1))
    assert argv[1] == "serve"
    help_text = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for option in (a for a in argv if a.startswith("--")):
        assert option in help_text, option
    stop = float(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert stop > Settings().server.shutdown_grace_seconds
