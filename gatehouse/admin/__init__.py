"""The admin API (/admin/v1/): orgs, projects, keys, users and tiers over HTTP."""

from gatehouse.admin.api import build_admin_app

__all__ = ["build_admin_app"]
