"""Counting tokens offline: the prompt a request reserves, the completion of a stream whose
backend reports no usage.

Each model names its tokenizer (``[models.X] tokenizer``):

- ``o200k_base`` (the default for HTTP backends) or ``cl100k_base``: OpenAI's encodings, whose
  vocabularies the ``quicktok-v1`` package ships inside its wheel (exact, tiktoken's counts; no
  download ever). o200k_base is counted by gatehouse's own compiled counter (gatehouse/quota/
  o200k.py: ~3.4 MB) when the install built it, else by quicktok (~56 MB); cl100k_base by
  quicktok;
- a path to a ``tokenizer.json`` (the model's own, for the ``tokenizers`` library);
- ``words``: the demo backend's word-and-punctuation count (its default, as that is how the
  demo counts);
- ``chars``: characters ÷ 4, the old estimate, kept only as a fallback.

An encoding is loaded once per process, on first use, off the event loop's thread (o200k
takes ~15 ms with gatehouse's counter; with quicktok 1–3 s, holding the GIL while it loads, so
the first request to need it waits).
Counting a long text yields to the event loop between pieces of ``PIECE`` characters, cut at a
whitespace, so a huge prompt never holds the loop for more than a millisecond or two.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gatehouse.upstream.tokens import split_tokens

log = logging.getLogger("gatehouse.quota")
ENCODINGS = ("o200k_base", "cl100k_base")
DEFAULT = "o200k_base"
PIECE = 32_768  # characters counted between two yields to the event loop (~0.6 ms, o200k;
# quicktok slows down 5x per character on texts above ~50,000 characters)
MANY = 2_048  # short texts counted between two yields at most (~1 ms of quicktok's calls)
EXACT_UP_TO = 4_000_000  # characters counted exactly by the sync count; beyond, scaled


@dataclass(frozen=True, slots=True)
class Tokenizer:
    name: str
    count_one: Callable[[str], int]

    def count(self, texts: Iterable[str]) -> int:
        """Synchronously, for places that cannot wait (a stream's last words): exact for the
        first ``EXACT_UP_TO`` characters, scaled beyond."""
        counted = chars = unseen = 0
        for text in texts:
            if chars + len(text) <= EXACT_UP_TO:
                counted += self.count_one(text)
                chars += len(text)
            else:
                unseen += len(text)
        if unseen:
            counted += math.ceil(unseen * counted / chars) if chars else math.ceil(unseen / 4)
        return counted

    async def count_async(self, texts: Iterable[str]) -> int:
        """Exactly (up to a token per piece boundary), yielding to the loop between pieces —
        a long text's, or every ``PIECE`` characters or ``MANY`` texts of short ones (a body
        of a hundred thousand small parts is counted in steps too)."""
        total = 0
        since = 0  # characters counted since the last pause, a text weighing PIECE // MANY more
        for text in texts:
            if len(text) < PIECE // 2:  # most prompts' parts: one count, no pause
                total += self.count_one(text)
                since += len(text) + PIECE // MANY
                if since >= PIECE:
                    since = 0
                    await asyncio.sleep(0)
                continue
            for piece in pieces(text):
                total += self.count_one(piece)
                if len(piece) >= PIECE // 2:
                    await asyncio.sleep(0)
        return total


def pieces(text: str) -> Iterable[str]:
    """``text`` in pieces of at most about ``PIECE`` characters, each cut before a space or
    newline (where the encodings split words anyway), so counting them apart changes little."""
    start = 0
    while len(text) - start > PIECE:
        end = start + PIECE
        cut = max(text.rfind(" ", start + PIECE // 2, end), text.rfind("\n", start + PIECE // 2, end))
        if cut > start:
            end = cut
        yield text[start:end]
        start = end
    yield text[start:]


def _words(text: str) -> int:
    return len(split_tokens(text))


def _chars(text: str) -> int:
    return math.ceil(len(text) / 4)


def _encoding(name: str) -> Callable[[str], int]:
    if name == "o200k_base":
        from gatehouse.quota.o200k import counter

        lean = counter()
        if lean is not None:
            return lean
    import quicktok  # type: ignore[import-untyped]  # only when a model uses an encoding

    enc = quicktok.get_encoding(name)
    count: Callable[[str], int] = enc.count
    return count


def _tokenizer_json(path: str) -> Callable[[str], int]:
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer.from_file(path)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count


def check(spec: str) -> str:
    """A configured tokenizer's name, or ValueError saying what is accepted."""
    if spec in ENCODINGS or spec in ("words", "chars"):
        return spec
    if spec.endswith(".json"):
        if not Path(spec).is_file():
            raise ValueError(f"tokenizer file {spec!r} does not exist")
        return spec
    raise ValueError(f"unknown tokenizer {spec!r}: use one of {', '.join(ENCODINGS)}, "
                     "words, chars, or the path of a tokenizer.json")


def load(spec: str) -> Tokenizer:
    """Build a tokenizer (blocking: call it off the event loop for the encodings)."""
    if spec == "words":
        return Tokenizer(spec, _words)
    if spec == "chars":
        return Tokenizer(spec, _chars)
    if spec in ENCODINGS:
        return Tokenizer(spec, _encoding(spec))
    return Tokenizer(spec, _tokenizer_json(check(spec)))


def _trim_heap() -> None:
    """Give the C heap's free pages back to the system: loading o200k leaves ~10 MB of its
    builder's temporaries freed but resident (55 instead of 64 MB per worker). glibc only."""
    import ctypes  # here, not at import: the configuration (and every CLI command) imports this

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class Tokenizers:
    """Each model's tokenizer, loaded once per process when first needed."""

    def __init__(self, specs: dict[str, str], default: str = DEFAULT) -> None:
        self.specs = specs
        self.default = default
        self._ready: dict[str, Tokenizer] = {"words": load("words"), "chars": load("chars")}
        self._lock = threading.Lock()
        self._loading: dict[str, asyncio.Future[Tokenizer]] = {}

    def spec_of(self, model: str | None) -> str:
        return self.specs.get(model or "", self.default)

    def ready(self, model: str | None) -> Tokenizer | None:
        """The model's tokenizer if it is loaded already, else None (for sync callers)."""
        return self._ready.get(self.spec_of(model))

    async def get(self, model: str | None) -> Tokenizer:
        spec = self.spec_of(model)
        found = self._ready.get(spec)
        if found is not None:
            return found
        return await asyncio.shield(self._start(spec))

    def warm(self, model: str | None) -> None:
        """Start loading the model's tokenizer (if not loaded yet) without waiting for it."""
        spec = self.spec_of(model)
        if spec not in self._ready:
            self._start(spec)

    def _start(self, spec: str) -> asyncio.Future[Tokenizer]:
        loading = self._loading.get(spec)
        if loading is None:
            loading = self._loading[spec] = asyncio.ensure_future(
                asyncio.to_thread(self._load, spec))
        return loading

    def _load(self, spec: str) -> Tokenizer:
        with self._lock:  # one load per spec even from several event loops
            if spec not in self._ready:
                started = time.perf_counter()
                try:
                    self._ready[spec] = load(spec)
                except Exception as exc:  # noqa: BLE001  # a tokenizer.json that is not one
                    log.error("tokenizer %s cannot be loaded (%s: %s); counting characters ÷ 4 "
                              "instead", spec, type(exc).__name__, exc)
                    self._ready[spec] = Tokenizer("chars", _chars)
                else:
                    log.info("tokenizer %s loaded in %.2f s", spec,
                             time.perf_counter() - started)
                    _trim_heap()
            return self._ready[spec]

    def count_now(self, model: str | None, texts: Iterable[str]) -> int:
        """Synchronously with the model's tokenizer, or characters ÷ 4 while it is not loaded
        yet (used where awaiting is not possible)."""
        tok = self.ready(model) or self._ready["chars"]
        return tok.count(texts)
