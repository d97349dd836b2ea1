"""``gatehouse doctor``'s arguments: what cannot be used is a usage error (exit 2) before
anything is sent or written — never a traceback, and never blamed on the network."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatehouse.cli.main import app

runner = CliRunner()
QUIET = ("--no-input", "--skip", "status", "--skip", "network", "--skip", "web",
         "--skip", "health")


def doctor(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["doctor", *args, *QUIET],
                           env={"COLUMNS": "200", "GATEHOUSE_API_KEY": "", "OPENAI_API_KEY": ""})
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exc_info
    return result.exit_code, result.output


@pytest.mark.parametrize(("args", "said"), [
    (("http://127.0.0.1:99999",), "Port out of range"),
    (("http://127.0.0.1:0",), "port 0"),
    (("http://127.0.0.1:9/\x1bx",), "no spaces or control characters"),
    (("http://127.0.0.1:9/a b",), "no spaces or control characters"),
    (("ftp://127.0.0.1:9",), "http:// and https:// only"),
    (("http:///v1",), "no host"),
    (("http://[::1",), "Invalid IPv6 URL"),
    (("http://127.0.0.1:9", "--status-url", "file:///etc/passwd"), "http:// and https://"),
    (("http://127.0.0.1:9", "--host", "example.com:99999"), "host:port (1-65535)"),
    (("http://127.0.0.1:9", "--timeout", "nan"), "seconds above 0"),
    (("http://127.0.0.1:9", "--timeout", "inf"), "seconds above 0"),
    (("http://127.0.0.1:9", "--timeout", "-1"), "seconds above 0"),
    (("http://127.0.0.1:9", "--timeout", "0"), "seconds above 0"),
    (("http://127.0.0.1:9", "--timeout", "1e300"), "at most 3600"),
    (("http://127.0.0.1:9", "--trust-store", "/nonexistent/roots.pem"), "No such file"),
    (("http://127.0.0.1:9", "--trust-store", "/"), "Is a directory"),
    (("http://127.0.0.1:9", "--json", "/"), "Is a directory"),
    (("http://127.0.0.1:9", "--report", "/nonexistent/x.md"), "No such file"),
])
def test_unusable_arguments_are_usage_errors(args: tuple[str, ...], said: str) -> None:
    code, output = doctor(*args)
    assert code == 2, output
    assert said in " ".join(output.replace("│", " ").split()), output


def test_a_trust_store_that_is_not_pem(tmp_path: Path) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    for content in (b"not a certificate\n", broken):
        (tmp_path / "roots.pem").write_bytes(content)
        code, output = doctor("http://127.0.0.1:9", "--trust-store", str(tmp_path / "roots.pem"))
        assert code == 2 and "--trust-store" in output, output


def test_output_paths_are_checked_before_the_run_and_left_alone(tmp_path: Path) -> None:
    """Nothing is run (the port would be refused: exit 50 or 20) and no file is left."""
    code, output = doctor("http://127.0.0.1:9", "--report", str(tmp_path / "r.md"),
                          "--json", str(tmp_path / "no" / "r.json"))
    assert code == 2 and "--json" in output, output
    assert list(tmp_path.iterdir()) == []


def test_a_har_that_cannot_be_read_is_exit_2_with_why(tmp_path: Path) -> None:
    path = tmp_path / "[bold]x.har"  # a name that is Rich markup is printed as it is
    path.write_text('{"log": {"entries": [{"response": {"status": 1e300}}]}}')
    code, output = doctor("http://127.0.0.1:9", "--har", str(path))
    assert code == 2, output
    assert "this HAR file cannot be read" in output and "[bold]x.har" in output
