"""Edge-rule regexes (``user_agent``, ``path``), matched by RE2 in time linear in the text.

Python's ``re`` backtracks: ``(a+)+$`` against a 26-character User-Agent held the event loop
for seconds, and every other user of the gateway with it. RE2 (Cloudflare and Envoy match
their rules with it, or with Rust's ``regex``, for this reason) never backtracks, and so has
no backreferences, lookaround, atomic groups, possessive quantifiers, conditionals or the
``x``/``a``/``L``/``u`` flags: a pattern using them is refused where the rule is written.

A pattern must also be valid Python (what earlier versions compiled), and the spellings the
two read differently are rewritten to mean what Python meant: ``\\Z`` (RE2's ``\\z``),
``\\uXXXX`` / ``\\UXXXXXXXX``, ``x{,n}`` (a literal in RE2), ``[\\b]`` (a backspace), an
escaped non-ASCII character, ``[`` inside a class (RE2 reads ``[[:alpha:]]`` as a POSIX
class); and ``$`` also matches before a final newline, as in Python (a percent-decoded path
can end in one, and the routes still answer it). One difference is kept: ``\\d \\w \\s
\\b`` are ASCII, as with Python's ``re.ASCII`` — RE2's Unicode classes cost 100+ KB of
program each, too much over thousands of rules.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence

import re2

_NEVER = r"[^\x00-\x{10FFFF}]"  # matches nothing: \Z just before a final newline
_OPEN_REPEAT = re.compile(r"\{,(\d*)\}")
DIALECT = "RE2 syntax is used (linear-time matching)"
UNSUPPORTED = (f"{DIALECT}: no backreferences, lookahead or lookbehind, atomic groups, "
               "possessive quantifiers, conditionals, or the x, a, L and u flags")


class RegexError(ValueError):
    """A pattern that cannot be used, and why."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False   # a refused pattern is the writer's error, not a log line
    options.never_capture = True  # only "is there a match" is asked: no group bookkeeping
    return options


_OPTIONS = _options()


def _translate(source: str) -> tuple[str, str]:
    """RE2 spellings of a valid Python pattern: one for the whole text, and one for the text
    without its final newline (where Python's ``\\Z`` cannot match)."""
    whole: list[str] = []
    cut: list[str] = []
    i, n = 0, len(source)
    in_class = False
    class_body = 0  # where the class's first member starts (a "]" there is a member)
    while i < n:
        c = source[i]
        piece = alt = c
        if c == "\\" and i + 1 < n:
            e = source[i + 1]
            i += 1
            piece = alt = "\\" + e
            if e in "uU":
                width = 4 if e == "u" else 8
                piece = alt = "\\x{" + source[i + 1:i + 1 + width] + "}"
                i += width
            elif e == "Z":
                piece, alt = r"\z", _NEVER
            elif e == "b" and in_class:
                piece = alt = r"\x08"
            elif not e.isascii():
                piece = alt = e
        elif in_class:
            if c == "]" and i > class_body:
                in_class = False
            elif c == "[":  # a member in Python; "[:alpha:]" would be a POSIX class in RE2
                piece = alt = r"\["
        elif c == "[":
            in_class = True
            class_body = i + 1 + (source[i + 1:i + 2] == "^")
        elif c == "{" and (m := _OPEN_REPEAT.match(source, i)):
            piece = alt = "{0," + m.group(1) + "}"
            i = m.end() - 1
        whole.append(piece)
        cut.append(alt)
        i += 1
    return "".join(whole), "".join(cut)


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes RE2 reads as such


def _finder(source: str) -> Callable[[bytes], bool]:
    """Whether RE2 finds ``source`` in a UTF-8 text. The public ``search`` builds a match
    object through a generator (1.1 µs a call, against 0.4 µs for the binding under it: the
    scan pays it once per regex rule on a request that some rule's regex matches)."""
    compiled = re2.compile(source, _OPTIONS)
    match = getattr(getattr(compiled, "_regexp", None), "Match", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if match is None or anchor is None:  # another google-re2 layout: the public API
        return lambda data: compiled.search(data) is not None
    return lambda data: bool(match(anchor, data, 0, len(data))[0][0] >= 0)


class Regex:
    """A rule's regex; :meth:`search` answers whether it matches anywhere in a text."""

    __slots__ = ("_cut", "_sources", "_whole", "source")

    def __init__(self, source: str, whole: str, cut: str) -> None:
        self.source = source  # as written
        self._sources = (whole, cut)  # as RE2 reads it (for unions)
        self._whole = _finder(whole)
        self._cut = self._whole if cut == whole else _finder(cut)

    @classmethod
    def parse(cls, source: str) -> Regex:
        """RegexError when either engine cannot read it, with the reason."""
        try:
            with warnings.catch_warnings():  # "[[" (nested set, some day): read as Python does now
                warnings.simplefilter("ignore", FutureWarning)
                re.compile(source)
        except re.error as exc:
            raise RegexError(f"not a valid regular expression ({exc})") from None
        try:
            return cls(source, *_translate(source))
        except re2.error as exc:
            reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(
                exc.args[0], bytes) else str(exc)
            raise RegexError(f"{UNSUPPORTED} ({reason})") from None

    def search(self, text: str) -> bool:
        return self.found(utf8(text))

    def found(self, data: bytes) -> bool:
        """:meth:`search` on a text already encoded with :func:`utf8` (the matcher encodes a
        request's path and User-Agent once, not once per rule)."""
        if self._whole(data):
            return True
        # Python's "$" also matches just before a final newline; RE2's only at the very end
        return data[-1:] == b"\n" and self._cut(data[:-1])

    def __repr__(self) -> str:
        return f"Regex({self.source!r})"


def any_of(patterns: Sequence[Regex]) -> Regex | None:
    """One regex that matches wherever any of ``patterns`` would (their union), or None when
    there are none or the union is too large for RE2 (then each is tried on its own)."""
    if not patterns:
        return None
    # RE2 scopes a leading flag group such as (?i) to the group around it
    whole = "|".join(f"(?:{p._sources[0]})" for p in patterns)
    cut = "|".join(f"(?:{p._sources[1]})" for p in patterns)
    try:
        return Regex("|".join(p.source for p in patterns), whole, cut)
    except re2.error:
        return None
