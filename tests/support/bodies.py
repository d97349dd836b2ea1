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


def tiny_parts(parts: int) -> list[dict[str, Any]]:
    """4,096 user messages of ``parts`` one-letter text parts each: 4,096 × (2 + ``parts``)
    arrays and objects (the caps' "many tiny parts" body; 90 parts: 10 MB, 368,640 parts)."""
    part = {"type": "text", "text": "a"}
    return [{"role": "user", "content": [part] * parts} for _ in range(4096)]
