"""Request bodies that test the caps on one request's work (issue 12)."""

from __future__ import annotations

from typing import Any

TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


def nested(depth: int) -> Any:
    """A value that takes ``depth`` levels of arrays (``[]`` is one level), built without
    recursion."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value
