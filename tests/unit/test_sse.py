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
