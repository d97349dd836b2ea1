"""A small, deterministic tokenizer: words and punctuation marks, each with its leading space.

It is what the demo backend counts with; real backends report their own usage."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")


def split_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))
