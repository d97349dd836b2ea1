"""The gateway's o200k_base and cl100k_base counts are tiktoken's, offline.

The vocabularies bundled in the quicktok package are first checked to be OpenAI's published
ones byte for byte: written back in the ``.tiktoken`` format, each has the SHA-256 that
tiktoken itself requires of the file it downloads. tiktoken's own encoder (the reference,
OpenAI's Rust code) is then built on them, with no network (its download is replaced by the
bundled ranks), and must count an adversarial corpus exactly as the gateway does: repeated
punctuation, CJK, code, emoji and joiners, digits, contractions, whitespace of every kind,
control characters, special-token text, and a seeded random mix of all of these."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator

import pytest
import tiktoken
from tiktoken_ext import openai_public

from gatehouse.quota.tokenizer import ENCODINGS, load


def bundled_ranks(name: str) -> dict[bytes, int]:
    import quicktok  # type: ignore[import-untyped]

    enc = quicktok.get_encoding(name)
    ranks = {}
    for i in range(enc.n_vocab):
        if enc.is_special_token(i):
            continue
        try:
            ranks[enc.decode_single_token_bytes(i)] = i
        except KeyError:  # o200k: the unused ids between the last token and the specials
            continue
    return ranks


def tiktoken_file(ranks: dict[bytes, int]) -> bytes:
    """The ranks as OpenAI publishes them: ``base64(token) rank`` lines, in rank order."""
    return b"".join(base64.b64encode(token) + b" %d\n" % rank
                    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]))


@pytest.fixture(scope="module", params=ENCODINGS)
def reference(request: pytest.FixtureRequest) -> Iterator[tuple[str, tiktoken.Encoding]]:
    name: str = request.param
    ranks = bundled_ranks(name)
    hashes: list[str | None] = []

    def offline(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        hashes.append(expected_hash)
        return ranks

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openai_public, "load_tiktoken_bpe", offline)
        spec = getattr(openai_public, name)()
    assert hashes and hashes[0] == hashlib.sha256(tiktoken_file(ranks)).hexdigest(), \
        f"the bundled {name} is not OpenAI's published vocabulary"
    yield name, tiktoken.Encoding(**spec)


PIECES = [
    "!", "!!", "...", "?!", "—", "–", "“", "”", "'", "\"", "``", "--", "==", "=>", "::", "#",
    "'s", "'S", "'ll", "'LL", "'ve", "'re", "'d", "'t", "n't", "O'Neil", "DON'T",
    "日本語", "のテキスト", "中文", "处理", "한국어", "ไทย", "עברית", "العربية", "русский", "Ελληνικά",
    "🙂", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "\u200d", "\u200b", "\ufeff", "é", "e\u0301", "ﬁ",
    "0", "7", "42", "123", "1234", "3.14159", "1e-9", "0x1F", "1,000,000", "٣٤٥", "²",
    " ", "  ", "\t", "\n", "\r\n", "\n\n\n", " \n", "\u00a0", "\u3000", "\u2028", "\x0b",
    "\x00", "\x07", "\x1b[31m", "\x7f",
    "def", "return", "{", "}", "()", "[]", "=>", "->", "//", "/*", "*/", "</div>", "&amp;",
    "http://example.com/a?b=c&d=e", "snake_case", "camelCase", "SCREAMING", "ALLCAPSword",
    "<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>",
]

CORPUS = [
    ",".join("a" * 300), "!" * 1000, "?!" * 500, "." * 777, "-" * 513, "=" * 64 + "\n",
    " " * 100 + "x", "\n" * 50, "\t\t\t" * 40, " \n" * 60 + "end",
    "日本語のテキストを処理する。中文文本处理测试。한국어 텍스트." * 20,
    "def f(x):\n    return {k: v for k, v in x.items() if v}\n" * 30,
    "for (let i = 0; i < n; i++) {\r\n\tsum += a[i] * b[i];\r\n}\r\n" * 20,
    "🙂👍🏽" * 200, "👨‍👩‍👧‍👦🏳️‍🌈" * 50, "e\u0301" * 300,
    "1234567890" * 300, "3.14159265358979323846" * 40,
    "The quick brown fox jumps over the lazy dog. " * 50,
    "I'M SURE THEY'LL SAY WE'VE DONE IT, DON'T YOU THINK? she'd've" * 10,
    "<|endoftext|>Hello<|endofprompt|>" * 10, "\x00\x01\x02 control \x1b[0m" * 20,
]


def mixed(seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 400)))


@pytest.mark.parametrize("text", CORPUS + PIECES, ids=range(len(CORPUS) + len(PIECES)))
def test_the_corpus_counts_exactly_as_tiktoken(reference: tuple[str, tiktoken.Encoding],
                                               text: str) -> None:
    name, enc = reference
    assert load(name).count([text]) == len(enc.encode_ordinary(text))


def test_a_seeded_random_mix_counts_exactly_as_tiktoken(
        reference: tuple[str, tiktoken.Encoding]) -> None:
    name, enc = reference
    ours = load(name)
    differ = [seed for seed in range(400)
              if ours.count([mixed(seed)]) != len(enc.encode_ordinary(mixed(seed)))]
    assert differ == []
