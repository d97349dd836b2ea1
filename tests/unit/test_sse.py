import orjson

from gatehouse.upstream.sse import StreamTap

CHUNK = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_passes_events_and_takes_usage() -> None:
    tap = StreamTap(drop_usage_chunk=False)
    assert tap.feed(CHUNK + USAGE + DONE) == CHUNK + USAGE + DONE
    assert tap.usage is not None and tap.usage.total_tokens == 5 and tap.done


def test_drops_the_usage_chunk_the_client_did_not_ask_for() -> None:
    tap = StreamTap(drop_usage_chunk=True)
    assert tap.feed(CHUNK) == CHUNK
    assert tap.feed(USAGE + DONE) == DONE
    assert tap.usage is not None and tap.usage.completion_tokens == 2


def test_events_split_across_reads_wait_only_for_their_other_half() -> None:
    tap = StreamTap(drop_usage_chunk=True)
    data = CHUNK + USAGE + DONE
    out = b"".join(tap.feed(data[i:i + 7]) for i in range(0, len(data), 7))
    assert out == CHUNK + DONE and tap.usage is not None and tap.flush() == b""
    assert tap.feed(CHUNK[:10]) == b"" and tap.feed(CHUNK[10:]) == CHUNK


def test_crlf_and_usage_inside_a_content_chunk() -> None:
    # LiteLLM puts the usage nobody asked for on the last chunk with choices: the choices go
    # on, the usage is taken off (and metered)
    tap = StreamTap(drop_usage_chunk=True)
    mixed = {"choices": [{"delta": {}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    event = b"data: " + orjson.dumps(mixed) + b"\r\n\r\n"
    out = tap.feed(event)
    assert orjson.loads(out.removeprefix(b"data: ")) == {"choices": mixed["choices"]}
    assert out.endswith(b"\n\n") and tap.usage is not None and tap.usage.total_tokens == 2
    # a client that asked for usage gets the chunk as it came
    asked = StreamTap(drop_usage_chunk=False)
    assert asked.feed(event) == event.replace(b"\r\n", b"\n")


def test_done_inside_content_is_not_the_end() -> None:
    tap = StreamTap(drop_usage_chunk=False)
    tap.feed(b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n')
    assert not tap.done and not tap.complete
    tap.feed(b"data:[DONE]\n\n")
    assert tap.done


def test_last_event_without_blank_line_is_completed_on_flush() -> None:
    tap = StreamTap(drop_usage_chunk=False)
    assert tap.feed(CHUNK + b"data: [DONE]") == CHUNK
    assert tap.flush() == DONE and tap.done


def test_usage_formats_and_multiline_data() -> None:
    tap = StreamTap(drop_usage_chunk=True)
    spaced = b'data: {"choices": [], "usage" : {"prompt_tokens": 1, "completion_tokens": 2}}\n\n'
    assert tap.feed(spaced) == b"" and tap.usage is not None and tap.usage.total_tokens == 3
    tap = StreamTap(drop_usage_chunk=True)
    multi = b'data: {"choices": [],\ndata: "usage": {"prompt_tokens": 5, "completion_tokens": 1}}\n\n'
    assert tap.feed(multi) == b"" and tap.usage is not None and tap.usage.prompt_tokens == 5


def test_comments_and_finish_reason() -> None:
    tap = StreamTap(drop_usage_chunk=True)
    assert tap.feed(b": ping\n\n") == b": ping\n\n"
    tap.feed(b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}\n\n')
    assert tap.finished and tap.complete and not tap.done


def test_the_text_passed_on_is_kept_read_only_when_asked_and_held_bounded() -> None:
    from gatehouse.upstream import sse

    tap = StreamTap(drop_usage_chunk=False)
    tool = (b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\\"a\\""}}]'
            b'}}]}\n\n')
    tap.feed(CHUNK + tool + CHUNK[:20])
    tap.feed(CHUNK[20:] + DONE)
    assert tap.texts == ["hi", '{"a"', "hi"] and tap.more_chars == 0
    big = StreamTap(drop_usage_chunk=False)  # 10 MB of events: never more than RAW_LIMIT held
    event = b'data: {"choices":[{"delta":{"content":"' + b"x" * 1000 + b'"}}]}\n\n'
    held = 0
    for _ in range(10_000):
        big.feed(event)
        held = max(held, big._raw_size)
    assert held <= sse.RAW_LIMIT + len(event)
    kept = sum(map(len, big.texts))  # what was left unread is read now
    assert kept == big.kept == sse.KEEP_CHARS  # a million characters kept, the rest counted
    assert kept + big.more_chars == 10_000 * 1000
    tiny = StreamTap(drop_usage_chunk=False)  # 100,000 deltas of 3 characters: pieces bounded
    for i in range(100_000):
        tiny.feed(b'data: {"choices":[{"delta":{"content":"%03d"}}]}\n\n' % (i % 1000))
    assert len(tiny.texts) == sse.KEEP_PIECES and tiny.kept == 3 * sse.KEEP_PIECES
    assert tiny.more_chars == 3 * (100_000 - sse.KEEP_PIECES)


def test_an_event_without_end_is_broken_at_the_bound() -> None:
    """A backend sending one event that never ends (no blank line) was held whole, and joined
    again with every piece — 50 MB of it cost ~27 s of the event loop. It is now kept as
    pieces (joined once, when it ends) and cut off past MAX_EVENT."""
    import pytest

    from gatehouse.upstream.failures import Broken
    from gatehouse.upstream.sse import MAX_EVENT

    tap = StreamTap(False)
    piece = b"data: " + b"a" * 65530
    fed = 0
    with pytest.raises(Broken, match="an event of more than"):
        while fed <= MAX_EVENT + len(piece):
            fed += len(piece)
            tap.feed(piece)
    assert MAX_EVENT < fed <= MAX_EVENT + len(piece)


def test_a_large_event_under_the_bound_passes_whole() -> None:
    tap = StreamTap(False)
    text = "b" * (4 << 20)
    event = b'data: {"choices":[{"delta":{"content":"' + text.encode() + b'"}}]}\n\n'
    out = b"".join(tap.feed(event[i:i + 65536]) for i in range(0, len(event), 65536))
    assert out == event
    kept = "".join(tap.texts)  # (up to KEEP_CHARS kept for counting, the rest as a length)
    assert text.startswith(kept) and len(kept) + tap.more_chars == len(text)


def test_any_split_of_a_stream_gives_the_same_events() -> None:
    """Events cut anywhere — inside "\\r\\n", between the two newlines of a blank line, one
    byte at a time — come out as the whole stream does."""
    import random

    stream = (b'data: {"choices":[{"delta":{"content":"a\\r\\nb"}}]}\r\n\r\n'
              b": keep-alive\r\n\r\n"
              b'data: {"choices":[{"delta":{"content":"c"},"finish_reason":"stop"}]}\n\n'
              b"data: [DONE]\r\n\r\n")
    whole = StreamTap(False)
    expected = whole.feed(stream) + whole.flush()
    rng = random.Random(19)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        tap = StreamTap(False)
        out = b"".join(tap.feed(stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)],
                                                               strict=True))
        assert out + tap.flush() == expected
        assert tap.done and tap.finished
    tap = StreamTap(False)
    assert b"".join(tap.feed(stream[i:i + 1]) for i in range(len(stream))) == expected
