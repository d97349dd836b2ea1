"""What a backend call can end in instead of a usable answer: the three kinds the upstream
stage acts on. Kept apart from backend.py (the connection pool, the settings) so that shape.py
— the rules for what counts as an answer, which the doctor and the client SDK apply too —
imports nothing heavy."""

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


class TooLarge(Broken):
    """A whole answer past ``[upstream] max_response_bytes`` (its connection closed): failed
    like an answer that is not one — retrying the same request would get the same answer."""
