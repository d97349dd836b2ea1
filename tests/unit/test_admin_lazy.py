"""The admin API (FastAPI, ~20 MB per worker) is built on the first request under /admin/, not
in every worker at start: checked in a fresh interpreter's ``sys.modules`` (not with a clock),
and the first requests, even concurrent ones, get the admin API's own answers. The password
hasher (argon2-cffi) likewise waits for the first password, and checks them right after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import asyncio, gc, json, sys
from pathlib import Path

import httpx

from gatehouse.app import create_app
from tests.unit.conftest import make_settings


async def main() -> None:
    sections = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    app = create_app(make_settings(Path(sys.argv[1]), **sections))
    await app.startup()
    at_start = "fastapi" in sys.modules
    # argon2-cffi (cffi's backend: ~0.5 MB) waits for the first password; the status feeds
    # escape with html, not xml.sax (six modules)
    lazy = {m: m in sys.modules for m in ("argon2", "_cffi_backend", "xml.sax")}
    admin = next(o for o in gc.get_objects() if type(o).__name__ == "LazyAdmin")
    usual, during = sys.getswitchinterval(), []
    build = admin.build
    def watched_build():
        during.append(sys.getswitchinterval())  # how often the building thread yields the GIL
        return build()
    admin.build = watched_build
    frozen_before = gc.get_freeze_count()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as c:
        answers = await asyncio.gather(*(c.get("/admin/v1/orgs") for _ in range(5)))
        docs = await c.get("/admin/v1/docs")
    frozen_after = gc.get_freeze_count()
    walked = {id(o) for o in gc.get_objects()}  # what a collection walks (not the frozen)
    app_walked = id(admin._app) in walked
    await app.aclose()
    from gatehouse.identity.passwords import hash_password, verify_password
    stored = hash_password("correct horse battery")
    checks = [await verify_password(stored, "correct horse battery"),
              await verify_password(stored, "wrong horse battery"),
              await verify_password(None, "correct horse battery"),
              await verify_password("not a hash", "correct horse battery")]
    print(json.dumps({"lazy": lazy, "argon2_after": "argon2" in sys.modules, "checks": checks,
                      "at_start": at_start, "after": "fastapi" in sys.modules,
                      "status": [r.status_code for r in answers],
                      "errors": [r.json()["error"]["type"] for r in answers],
                      "docs": docs.status_code, "frozen": frozen_after - frozen_before,
                      "app_walked": app_walked, "usual_interval": usual,
                      "interval_during_build": during,
                      "interval_after": sys.getswitchinterval()}))


asyncio.run(main())
"""


def probe(tmp_path: Path, **sections: object) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), json.dumps(sections)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_the_admin_app_is_built_on_its_first_request(tmp_path: Path) -> None:
    report = probe(tmp_path)
    assert report["at_start"] is False, "FastAPI was imported before any /admin/ request"
    assert report["after"] is True
    # no key: the admin API's own 401 in OpenAI's error shape, the same for each of the
    # concurrent first requests (one build, every caller waits for it)
    assert report["status"] == [401] * 5
    assert len(set(report["errors"])) == 1
    assert report["docs"] == 200
    # what the app holds (~13 MB of objects) lives as long as the worker: frozen out of the
    # GC's passes once built — a full collection walking it held the loop ~12-27 ms
    assert report["app_walked"] is False
    assert report["frozen"] > 50_000
    # built once, in a thread that hands the GIL back to the loop every 0.5 ms, not every 5:
    # the requests a worker serves meanwhile each wait that long at most at an await
    assert report["interval_during_build"] == [0.0005]
    assert report["usual_interval"] == report["interval_after"] == 0.005


def test_admin_at_start_builds_the_admin_app_before_the_worker_serves(tmp_path: Path) -> None:
    """``[server] admin_at_start``: the build (~1.4 s, which holds up the requests a worker
    serves meanwhile) happens at start instead; the first requests get the same answers."""
    report = probe(tmp_path, server={"admin_at_start": True})
    assert report["at_start"] is True, "the admin app was not built at start"
    assert report["status"] == [401] * 5 and len(set(report["errors"])) == 1
    assert report["docs"] == 200


def test_a_worker_loads_the_password_hasher_on_the_first_password(tmp_path: Path) -> None:
    report = probe(tmp_path)
    assert report["lazy"] == {"argon2": False, "_cffi_backend": False, "xml.sax": False}
    assert report["argon2_after"] is True
    assert report["checks"] == [True, False, False, False]
