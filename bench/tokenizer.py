#!/usr/bin/env python
"""What counting a prompt costs: the gateway's tokenizers on 1k, 8k and 32k-token prompts.

For each tokenizer (``o200k_base`` — gatehouse's compiled counter — and beside it the same
encoding in quicktok, the counter it replaced; ``cl100k_base``, ``words``, ``chars``) and
each size, the median of ``--repeats`` timings (µs) of what the quota stage does per request:
take the prompt's texts from the body and count them (``Tokenizer.count_async``: pieces of
32 K characters cut at whitespace, yielding between them). Also the one-off load time of each
encoding, the memory its load adds to a fresh interpreter (RSS after ``malloc_trim``, its
library's import included), and the worst case of a byte-pair merge: one piece of 32 K characters (a run of
``!``, which the pattern does not cut), counted whole. The prompt is prose and code mixed (the
repository's docs and sources), cut to the exact number of o200k tokens, so every tokenizer
gets the same text.

    .venv/bin/python bench/tokenizer.py              # ~30 s
    .venv/bin/python bench/tokenizer.py --repeats 15

Single process, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gatehouse.quota.policy import prompt_texts
from gatehouse.quota.tokenizer import Tokenizer, load

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1_000, 8_000, 32_000)
TOKENIZERS = ("o200k_base", "o200k_base/quicktok", "cl100k_base", "words", "chars")
RUN = "!" * 32_768
# RSS loading a tokenizer adds to a fresh interpreter that has imported gatehouse's tokenizer
# module (its own library's import included), after malloc_trim
RESIDENT = """
import ctypes, sys
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
sys.path.insert(0, {bench!r})
from tokenizer import load_named
before = rss()
kept = load_named(sys.argv[1])  # alive while measured
kept.count(["warm up"])
ctypes.CDLL("libc.so.6").malloc_trim(0)
print(rss() - before)
"""


def load_named(name: str) -> Tokenizer:
    if name == "o200k_base/quicktok":
        import quicktok  # type: ignore[import-untyped]

        return Tokenizer(name, quicktok.get_encoding("o200k_base").count)
    return load(name)


def resident(name: str) -> float:
    done = subprocess.run([sys.executable, "-c", RESIDENT.format(bench=str(ROOT / "bench")), name],
                          capture_output=True, text=True, timeout=300, check=True)
    return float(done.stdout)


def corpus() -> str:
    files = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "gatehouse").rglob("*.py"))
    return "\n".join(f.read_text() for f in files)


def prompt(tokens: int, o200k: Tokenizer | None = None) -> str:
    """The longest start of the corpus with at most ``tokens`` o200k tokens."""
    o200k = o200k or load("o200k_base")
    text = corpus()
    lo, hi = 0, len(text)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if o200k.count([text[:mid]]) <= tokens else (lo, mid)
    return text[:lo]


async def timed(tok: Tokenizer, body: dict[str, Any], repeats: int
                ) -> tuple[float, float, int]:
    times, counted = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        counted = await tok.count_async(prompt_texts(body))
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    loads = {}
    tokenizers = {}
    for name in TOKENIZERS:
        started = time.perf_counter()
        tokenizers[name] = load_named(name)
        tokenizers[name].count(["warm up"])
        loads[name] = time.perf_counter() - started
    text = corpus()
    ids_chars = {n: len(prompt(n, tokenizers["o200k_base"])) for n in SIZES}
    print(f"{'tokenizer':<20} {'load s':>7} {'MB':>5} " + " ".join(
        f"{f'{n // 1000}k: p50 µs':>12} {'min':>6} {'count':>6}" for n in SIZES)
        + f" {'32K run µs':>10}")
    for name, tok in tokenizers.items():
        cells = []
        for n in SIZES:
            body = {"messages": [{"role": "user", "content": text[:ids_chars[n]]}]}
            median, least, counted = asyncio.run(timed(tok, body, args.repeats))
            cells.append(f"{median * 1e6:>12.0f} {least * 1e6:>6.0f} {counted:>6}")
        run = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            tok.count_one(RUN)
            run.append(time.perf_counter() - started)
        print(f"{name:<20} {loads[name]:>7.2f} {resident(name):>5.1f} " + " ".join(cells)
              + f" {statistics.median(run) * 1e6:>10.0f}")
    print("(µs per prompt: median and fastest of the repeats; count = tokens counted; "
          "characters in the prompt: "
          + ", ".join(f"{n // 1000}k={ids_chars[n]}" for n in SIZES) + "; MB: RSS the "
          "tokenizer's load adds to a fresh interpreter; 32K run: one piece of 32,768 '!', counted "
          "whole)")


if __name__ == "__main__":
    main()
