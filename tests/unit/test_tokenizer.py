"""The gateway's own token counts: OpenAI's encodings from the package's bundled data, a
model's tokenizer.json, and the long-text and failure paths."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from gatehouse.config import Settings
from gatehouse.quota.policy import estimate, prompt_texts
from gatehouse.quota.tokenizer import MANY, PIECE, Tokenizers, check, load, pieces

# (text, o200k_base, cl100k_base): counts of tiktoken's reference encoder
ADVERSARIAL = [
    (",".join("a" * 200), 200, 200),
    ("日本語のテキストを処理する。中文文本处理测试。한국어 텍스트." * 20, 440, 580),
    ("def f(x):\n    return {k: v for k, v in x.items() if v}\n" * 30, 630, 630),
    ("🙂👍🏽" * 200, 800, 1600),
    ("1234567890" * 300, 1000, 1000),
    ("The quick brown fox jumps over the lazy dog. " * 50, 501, 501),
]


@pytest.mark.parametrize(("text", "o200k", "cl100k"), ADVERSARIAL)
def test_openai_encodings_count_like_tiktoken(text: str, o200k: int, cl100k: int) -> None:
    assert load("o200k_base").count([text]) == o200k
    assert load("cl100k_base").count([text]) == cl100k


def test_the_old_estimate_undercounts_what_the_tokenizer_gets_right() -> None:
    commas = {"messages": [{"role": "user", "content": ",".join("a" * 200)}]}
    tok = load("o200k_base")
    exact = estimate(commas, 16, tok.count(prompt_texts(commas)))
    assert exact.prompt == 200 + 4 and estimate(commas, 16).prompt == 100 + 4


def test_a_models_own_tokenizer_json(tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "!": 3}
    hf = HFTokenizer(WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = Whitespace()
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    assert check(str(path)) == str(path)
    assert load(str(path)).count(["hello world!", "hello there"]) == 3 + 2


def test_http_models_count_with_o200k_and_the_demo_with_words_unless_configured() -> None:
    settings = Settings.model_validate({
        "upstreams": {"u": {"base_url": "http://127.0.0.1:1"}},
        "models": {"m": {"backends": ["u"]}, "n": {"backends": ["u"], "tokenizer": "chars"}}})
    assert settings.quota.tokenizer == "o200k_base" and settings.demo.tokenizer == "words"
    assert settings.models["m"].tokenizer is None and settings.models["n"].tokenizer == "chars"


def test_words_and_chars() -> None:
    assert load("words").count(["Hello, world!"]) == 4
    assert load("chars").count(["abcdefgh", "a"]) == 2 + 1


@pytest.mark.parametrize("bad", ["o300k", "gpt2", "missing/tokenizer.json", ""])
def test_unknown_tokenizers_are_refused_in_the_configuration(bad: str) -> None:
    with pytest.raises(ValueError):
        check(bad)
    with pytest.raises(ValidationError, match="tokenizer"):
        Settings.model_validate({"upstreams": {"u": {"base_url": "http://127.0.0.1:1"}},
                                 "models": {"m": {"backends": ["u"], "tokenizer": bad}}})


def test_long_texts_are_cut_at_whitespace_and_counted_almost_exactly() -> None:
    text = "word, another word; " * 40_000  # 800,000 characters
    parts = list(pieces(text))
    assert "".join(parts) == text and all(len(p) <= PIECE for p in parts)
    assert all(p.endswith(" ") or p[-1] != " " for p in parts)
    tok = load("o200k_base")
    whole = tok.count([text])
    counted = asyncio.run(tok.count_async([text]))
    assert abs(counted - whole) <= len(parts)
    no_space = "x" * (3 * PIECE)  # nowhere to cut: cut anyway, bounded
    assert [len(p) for p in pieces(no_space)] == [PIECE, PIECE, PIECE]


async def counted_with_ticks(texts: list[str]) -> tuple[int, int]:
    """``texts`` counted with o200k, and how many times another task ran meanwhile."""
    tok = load("o200k_base")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    counted = await tok.count_async(texts)
    task.cancel()
    return counted, ticks


async def test_counting_a_huge_prompt_yields_to_the_event_loop() -> None:
    _, ticks = await counted_with_ticks(["lorem ipsum dolor sit amet " * 100_000])  # 2.7 M chars
    assert ticks >= 2_700_000 // PIECE // 2
    # the counter's dearest text: one run the pattern does not cut, no whitespace to cut at
    counted, ticks = await counted_with_ticks(["!" * 1_000_000])
    assert counted > 0 and ticks >= 1_000_000 // PIECE - 1


async def test_many_short_texts_are_counted_in_steps_too() -> None:
    """90,112 one-letter parts (a body just under [limits] max_json_containers) were counted
    in one go, holding the loop for all of them."""
    counted, ticks = await counted_with_ticks(["a"] * 90_112)
    assert counted == 90_112
    assert ticks >= 90_112 // MANY - 2  # (a tick or two either side of the first)
    _, ticks = await counted_with_ticks(["lorem ipsum dolor " * 100] * 1_000)  # 1.8 M, short
    assert ticks >= 1_800_000 // PIECE - 2


async def test_each_tokenizer_loads_once_and_models_fall_back_to_the_default() -> None:
    toks = Tokenizers({"demo": "words"}, "cl100k_base")
    assert toks.ready("other") is None  # not loaded until needed
    first, second = await asyncio.gather(toks.get("other"), toks.get("another"))
    assert first is second and first.name == "cl100k_base"
    assert (await toks.get("demo")).name == "words"
    assert toks.count_now("other", ["hello world"]) == 2


async def test_a_broken_tokenizer_json_counts_characters_instead(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    toks = Tokenizers({"m": str(path)})
    with caplog.at_level(logging.ERROR, "gatehouse.quota"):
        tok = await toks.get("m")
    assert tok.name == "chars" and tok.count(["abcdefgh"]) == 2
    assert "cannot be loaded" in caplog.text


async def test_token_limits_load_the_models_tokenizers_before_the_first_request(
        tmp_path: Path) -> None:
    """A load holds the GIL for seconds (o200k): on a first request it stalled every request
    of the worker. With a limit that counts prompt tokens it happens at start instead."""
    from gatehouse.quota.memory import MemoryLimiter
    from gatehouse.quota.stage import QuotaStage
    from gatehouse.telemetry.metrics import Metrics
    from tests.unit.conftest import make_settings

    hf = HFTokenizer(WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    hf.pre_tokenizer = Whitespace()
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    models = {"upstreams": {"u": {"base_url": "http://127.0.0.1:1"}},
              "models": {"m": {"backends": ["u"], "tokenizer": str(path)}}}
    for limits, loaded in (({"requests_per_minute": 10}, False),
                           ({"tokens_per_minute": 1000}, True)):
        settings = make_settings(tmp_path, tiers={"default": {"project_limits": limits}},
                                 **models)
        toks = Tokenizers({"m": str(path)}, "words")
        stage = QuotaStage(MemoryLimiter(), settings, Metrics(), tokenizers=toks)
        await stage.start()
        assert (toks.ready("m") is not None) is loaded, limits
        await stage.aclose()
