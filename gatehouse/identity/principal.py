"""The principal: who a request is for, as every later stage (quota, admission) sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "key" | "session" | "anonymous"
    tier: str
    scope: str = "api"  # "api" | "admin"
    org_id: str | None = None
    org: str | None = None
    project_id: str | None = None
    project: str | None = None
    key_id: str | None = None
    key_display: str | None = None
    user_id: str | None = None
    user_email: str | None = None

    @property
    def label(self) -> str:
        """A short, secret-free name for logs: ``acme/support-bot key_…`` or ``user_…``."""
        if self.kind == "key":
            where = f"{self.org}/{self.project}" if self.project else "admin"
            return f"{where} {self.key_id}"
        if self.kind == "session":
            return f"{self.user_id}"
        return "anonymous"
