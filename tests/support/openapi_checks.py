"""Schemathesis hooks for the gateway's runs (loaded through ``SCHEMATHESIS_HOOKS``): every error
answer is OpenAI's error body with a request id, and names it in ``x-request-id``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import schemathesis

FIELDS = {"message", "type", "param", "code"}


@schemathesis.check
def openai_error_shape(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} answer is not JSON: "
                             f"{response.content[:200]!r}") from exc
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not FIELDS <= error.keys():
        raise AssertionError(f"{response.status_code} answer is not OpenAI's error shape: {body!r}")
    assert isinstance(error["message"], str) and isinstance(error["type"], str), body
    if not response.headers.get("x-request-id"):
        raise AssertionError(f"{response.status_code} answer without x-request-id")


def fuzz(schema: str, base_url: str, key: str, max_examples: int, *extra: str) -> int:
    """``schemathesis run`` of ``schema`` against ``base_url`` with every check but
    ``positive_data_acceptance`` (the documents admit values only the store can refuse: a tier
    that does not exist, a revoked key), plus :func:`openai_error_shape`. Deterministic
    (derandomized) so a failure reproduces; the examples, coverage and fuzzing phases. Returns
    how many cases were sent; fails the test, with the run's report, on any failure."""
    root = Path(__file__).resolve().parents[2]
    args = [str(Path(sys.executable).parent / "schemathesis"), "run", schema, "--url", base_url,
            "-H", f"Authorization: Bearer {key}", "--max-examples", str(max_examples),
            "--generation-deterministic", "--phases", "examples,coverage,fuzzing",
            "--exclude-checks", "positive_data_acceptance", "--continue-on-failure",
            "--request-timeout", "30", "--no-color", "--warnings", "off", *extra]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.openapi_checks",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "120"}
    with tempfile.TemporaryDirectory() as workdir:  # where it keeps its .schemathesis cache
        run = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env,
                             cwd=workdir, check=False)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counted, report[-5_000:]
    assert counted[1] == counted[2], report[-5_000:]
    print(f"schemathesis: {counted[0]} ({schema}, --max-examples {max_examples})")
    return int(counted[1])
