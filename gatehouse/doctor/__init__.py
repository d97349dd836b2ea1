"""``gatehouse doctor``: the seeds' 10-minute triage matrix, run instead of read.

Five probes — the status page (statuspage.py), the network path with TLS interception
(network.py, certs.py), the API path (api.py), the web path (web.py) and a browser HAR
(har.py) — gathered by run.py into :class:`Findings`; matrix.py names the branch, the next step
and the stop condition; report.py and markdown.py write the support-ready report.
docs/doctor.md describes every check, branch and exit code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatehouse.doctor.findings import Answers, Findings
from gatehouse.doctor.matrix import EXIT_CODES, Branch, Verdict, decide
from gatehouse.doctor.report import SCHEMA, build
from gatehouse.doctor.run import Checkup, Progress, examine


async def diagnose(checkup: Checkup, progress: Progress | None = None,
                   now: datetime | None = None) -> tuple[Findings, Verdict, dict[str, Any]]:
    """Examine, decide, and build the report."""
    findings = await examine(checkup, progress)
    verdict = decide(findings)
    return findings, verdict, build(findings, verdict, now or datetime.now().astimezone())


__all__ = ["EXIT_CODES", "SCHEMA", "Answers", "Branch", "Checkup", "Findings", "Progress",
           "Verdict", "decide", "diagnose", "examine"]
