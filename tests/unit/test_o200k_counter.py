"""gatehouse's own o200k_base counter (gatehouse/quota/_o200k.c): what the gateway counts with,
piece for piece the pattern tiktoken uses, count for count quicktok's (tiktoken's own counts
are test_tokenizer_reference.py's), within bounded memory, and strict about what it loads."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import quicktok  # type: ignore[import-untyped]
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.quota import o200k
from gatehouse.quota.tokenizer import load

ROOT = Path(__file__).resolve().parents[2]
# tiktoken's o200k_base pattern (tiktoken_ext/openai_public.py), as the regex module reads it
PATTERN = regex.compile("|".join([  # noqa: FLY002  # one branch a line
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
]))
# characters where the pattern's branches meet: each class, the contraction's letters in both
# cases (and U+017F, which folds to "s"), marks alone and after letters, the spaces \s has
ALPHABET = list("aA zZ'sStTrReEvVmMlLdDk\r\n\t/.,!?-_0123456789") + [
    "\u017f", "\u212a", "é", "e\u0301", "\u0301", "日", "本", "ǅ", "ʰ", "ー", "Ⅻ", "²", "٣",
    "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "🙂", "\u200d",
    "\ufe0f", "ß", "İ", "ﬁ", "\x00", "ᾈ", "ǈ", "\u0903", "\u20dd", "ab", "AB", "Ab", "aB"]


@pytest.fixture(scope="module")
def counter() -> Any:
    from gatehouse.quota._o200k import Counter

    return Counter(o200k.vocabulary().read_bytes(), o200k.CLASSES.read_bytes())


@pytest.fixture(scope="module")
def reference() -> quicktok.Tokenizer:
    return quicktok.get_encoding("o200k_base")


def test_the_gateway_counts_o200k_with_its_own_counter() -> None:
    """The install built the extension, and o200k_base is counted by it (were it missing, the
    gateway would count with quicktok: the same numbers in ~56 MB more per worker)."""
    assert importlib.util.find_spec("gatehouse.quota._o200k") is not None, \
        "gatehouse/quota/_o200k.c was not built: the install needs a C compiler and Python's headers"
    count = load("o200k_base").count_one
    assert type(count.__self__).__name__ == "Counter"  # type: ignore[attr-defined]
    assert load("o200k_base").count(["Hello, world!"]) == 4


def test_the_class_table_is_the_one_the_regex_module_gives() -> None:
    """o200k_classes.bin is current (tools/o200k_classes.py rewrites it)."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "o200k_classes.py"), "--check"],
                          timeout=60, check=False)
    assert done.returncode == 0, "run tools/o200k_classes.py and commit the file"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join))
def test_pieces_and_counts_where_the_patterns_branches_meet(counter, reference, text) -> None:  # type: ignore[no-untyped-def]
    assert counter.pieces(text) == PATTERN.findall(text)
    assert counter.count(text) == reference.count(text)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=60))
def test_pieces_and_counts_of_any_text(counter, reference, text) -> None:  # type: ignore[no-untyped-def]
    assert counter.pieces(text) == PATTERN.findall(text)
    assert counter.count(text) == reference.count(text)


def test_the_repository_counts_as_quicktok_does(counter, reference) -> None:  # type: ignore[no-untyped-def]
    texts = [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    texts += [p.read_text() for p in sorted((ROOT / "gatehouse").rglob("*.py"))]
    assert [counter.count(t) for t in texts] == [reference.count(t) for t in texts]


@pytest.mark.parametrize("run", ["!", " ", "-", "a", "日", "1", "\n", "🙂"])
def test_long_runs_of_one_class_count_exactly_up_to_64_kib(counter, reference, run) -> None:  # type: ignore[no-untyped-def]
    """A run of one class is one piece: merged exactly up to 64 KiB of it, beyond in parts of
    64 KiB (a token more per part at most), so what one count holds stays bounded."""
    within = run * (60_000 // len(run.encode()))
    assert counter.count(within) == reference.count(within)
    beyond = run * (300_000 // len(run.encode()))
    parts = len(beyond.encode()) // 65_536 + 1
    assert 0 <= counter.count(beyond) - reference.count(beyond) <= parts


def test_a_huge_run_is_counted_in_bounded_memory() -> None:
    """4 million characters of one piece, in a fresh interpreter: its peak grows by a few MB
    (parts of 64 KiB), not by a merge table of the whole run (~110 MB)."""
    # VmHWM, not ru_maxrss: the latter keeps the forking pytest's peak across exec
    code = ("from gatehouse.quota.o200k import counter; count = counter(); text = '!' * 4_000_000\n"
            "def peak(): return next(int(line.split()[1]) for line in open('/proc/self/status')"
            " if line.startswith('VmHWM'))\n"
            "before = peak(); n = count(text); print(n, peak() - before)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    tokens, grown_kib = map(int, done.stdout.split())
    assert tokens >= 4_000_000 // 128
    assert grown_kib < 10_000


def test_lone_surrogates_count_as_tiktoken_counts_them(counter) -> None:  # type: ignore[no-untyped-def]
    """tiktoken's encode mends them to U+FFFD (a pair of halves to the one character)."""
    assert counter.count("\ud800") == counter.count("\ufffd")
    assert counter.count("a\udfffb") == counter.count("a\ufffdb")
    assert counter.count("\ud83d\ude00") == counter.count("\U0001f600")


def test_what_it_loads_is_checked() -> None:
    from gatehouse.quota._o200k import Counter

    vocab, classes = o200k.vocabulary().read_bytes(), o200k.CLASSES.read_bytes()
    for bad_vocab in (b"", vocab[:-1], vocab[:4] + vocab[4:1000], b"\x00\x00\x00\x00"):
        with pytest.raises(ValueError, match="vocabulary"):
            Counter(bad_vocab, classes)
    for bad_classes in (b"", classes[:-1], b"\x01\x00\x00\x00\x05\x00\x00\x00\x00"):
        with pytest.raises(ValueError, match="class table"):
            Counter(vocab, bad_classes)
    loaded = Counter(vocab, classes)
    with pytest.raises(RuntimeError, match="once"):
        loaded.__init__(vocab, classes)
    with pytest.raises(TypeError):
        loaded.count(b"bytes")
    with pytest.raises(RuntimeError, match="not loaded"):
        Counter.__new__(Counter).count("hi")
    # the vocabulary's bytes (~1.3 MB), a table at most 80 % full (2 MB), the classes
    assert loaded.nbytes() < 4_000_000


TINY_VOCAB = """
import struct, sys
from gatehouse.quota import o200k
from gatehouse.quota._o200k import Counter
n = int(sys.argv[1])
vocab = struct.pack("<I", n) + b"".join(
    struct.pack("<H", 1) + bytes([i]) + struct.pack("<I", i) for i in range(n))
try:
    Counter(vocab, o200k.CLASSES.read_bytes())
except ValueError as exc:
    print(exc)
"""


@pytest.mark.parametrize("tokens", [1, 2, 3, 4, 255])
def test_a_vocabulary_too_small_to_be_one_is_refused_not_looked_up_for_ever(tokens: int) -> None:
    """Every byte must be a token: a vocabulary of a few is refused. Its table still has an
    empty slot for the lookups that miss to stop at (a full one made them loop for ever). In
    a child process with a deadline, so a regression fails instead of hanging the suite."""
    done = subprocess.run([sys.executable, "-c", TINY_VOCAB, str(tokens)], capture_output=True,
                          text=True, timeout=60, check=True, cwd=ROOT)
    assert "not a vocabulary this counter reads" in done.stdout


def test_a_missing_extension_falls_back_to_quicktok(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "gatehouse.quota._o200k", None)  # import fails
    assert o200k.counter() is None
    assert "without its compiled token counter" in caplog.text
    tok = load("o200k_base")
    assert type(tok.count_one.__self__).__module__.startswith("quicktok")  # type: ignore[attr-defined]
    assert tok.count(["Hello, world!"]) == 4


def test_check_says_when_the_install_has_no_compiled_counter(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gatehouse.cli.main import app

    config = tmp_path / "gatehouse.toml"
    config.write_text("")
    said = CliRunner().invoke(app, ["check", "--config", str(config)])
    assert said.exit_code == 0 and "quicktok" not in said.output
    monkeypatch.setattr(o200k, "built", lambda: False)
    said = CliRunner().invoke(app, ["check", "--config", str(config)])
    assert said.exit_code == 0
    assert "counted with quicktok" in said.output and "python3-dev" in said.output
