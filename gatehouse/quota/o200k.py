"""o200k_base counted in ~3.4 MB: gatehouse/quota/_o200k.c (a C extension built at install),
on the vocabulary file the quicktok package ships and the pattern's character classes in
o200k_classes.bin (tools/o200k_classes.py). Exact: tiktoken's counts (tests/unit/
test_tokenizer_reference.py, test_o200k_counter.py); quicktok's own o200k holds ~56 MB of
tables per process for the same counts, and takes 0.3–3 s to load (this: ~15 ms).

Without the extension (an install with no C compiler or no Python headers), ``counter()``
returns None and the caller counts with quicktok instead."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gatehouse.quota")
CLASSES = Path(__file__).with_name("o200k_classes.bin")
REBUILD = ("Install a C compiler and Python's headers (Debian: apt-get install gcc python3-dev), "
           "then reinstall gatehouse.")


def vocabulary() -> Path:
    """quicktok's o200k.vocab (found without importing quicktok, which would load its own
    library for nothing)."""
    spec = importlib.util.find_spec("quicktok")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the quicktok package (its o200k.vocab) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k.vocab"


def built() -> bool:
    """Whether the install built the extension (without loading it)."""
    return importlib.util.find_spec("gatehouse.quota._o200k") is not None


def counter() -> Callable[[str], int] | None:
    """``count(text)`` for o200k_base, or None when the extension was not built."""
    try:
        from gatehouse.quota._o200k import Counter
    except ImportError:
        log.warning("gatehouse was installed without its compiled token counter: counting "
                    "o200k_base with quicktok, ~56 MB more per worker. %s", REBUILD)
        return None
    count: Callable[[str], int] = Counter(vocabulary().read_bytes(), CLASSES.read_bytes()).count
    return count
