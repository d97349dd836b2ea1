"""Run ``gatehouse serve ARGS`` in this process, for probes that must be in the worker (a
tracer, a heartbeat): ``serve`` execs the serving module, which would start an interpreter
without them, so its options go into the environment the way ``serve`` puts them and the
serving module runs here."""

from __future__ import annotations

import os
import runpy


def serve(argv: list[str]) -> None:
    options = dict(zip(argv[1::2], argv[2::2], strict=False))  # after "serve"
    os.environ["GATEHOUSE_CONFIG"] = options["--config"]
    for name in ("host", "port", "workers"):
        if f"--{name}" in options:
            os.environ[f"GATEHOUSE_SERVER__{name.upper()}"] = options[f"--{name}"]
    runpy.run_module("gatehouse.cli.serving", run_name="__main__")
