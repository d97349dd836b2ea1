"""Pages for people on the web path: sign-in, account, sign-out (Starlette, mounted beside the
API by :mod:`gatehouse.app`)."""

from gatehouse.web.pages import build_web_app

__all__ = ["build_web_app"]
