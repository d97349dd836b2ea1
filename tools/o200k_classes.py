#!/usr/bin/env python
"""Write gatehouse/quota/o200k_classes.bin: the character classes o200k_base's pre-tokenizer
pattern asks of each code point, as the ``regex`` module (the engine of tiktoken's own
reference implementation of the pattern) answers them.

    .venv/bin/python tools/o200k_classes.py        # rewrites the file
    .venv/bin/python tools/o200k_classes.py --check  # exit 1 if the file is not what it writes

The file is runs: a little-endian u32 count, then per run a u32 first code point and a u8 of
class bits (every code point up to the next run's first has those bits). Bits: 1 letter
(\\p{L}), 2 number (\\p{N}), 4 "upper" ([\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]), 8 "lower"
([\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]), 16 white space (\\s). tests/unit/test_o200k_counter.py checks
that the file is current and that counts equal tiktoken's.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import regex

FILE = Path(__file__).resolve().parent.parent / "gatehouse" / "quota" / "o200k_classes.bin"
CLASSES = ((1, r"\p{L}"), (2, r"\p{N}"), (4, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"),
           (8, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"), (16, r"\s"))


def build() -> bytes:
    everything = "".join(map(chr, range(0x110000)))
    bits = bytearray(0x110000)
    for bit, cls in CLASSES:
        for m in regex.finditer(cls + "+", everything):
            for cp in range(m.start(), m.end()):
                bits[cp] |= bit
    runs = [(cp, bits[cp]) for cp in range(0x110000) if cp == 0 or bits[cp] != bits[cp - 1]]
    return struct.pack("<I", len(runs)) + b"".join(struct.pack("<IB", cp, b) for cp, b in runs)


def main() -> int:
    data = build()
    if "--check" in sys.argv:
        return 0 if FILE.read_bytes() == data else 1
    FILE.write_bytes(data)
    print(f"{FILE}: {(len(data) - 4) // 5} runs, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
