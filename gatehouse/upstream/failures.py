"""How a backend failed to answer usefully: the three kinds the upstream stage acts on."""

from __future__ import annotations


class BackendFailure(Exception):
    """A backend did not answer usefully; ``detail`` goes to the log, never to the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConnectFailed(BackendFailure):
    pass


class TimedOut(BackendFailure):
    pass


class Broken(BackendFailure):
    """The connection dropped or the answer was cut off."""
