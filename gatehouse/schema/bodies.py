"""One checker per endpoint. Each returns nothing and raises InvalidRequest on the first fault;
fields it does not know are passed to the backend untouched (backends add their own)."""

from __future__ import annotations

from typing import Any

from gatehouse.config import RequestLimits
from gatehouse.errors import InvalidRequest
from gatehouse.schema.checks import (
    boolean,
    integer,
    max_length,
    number,
    obj,
    require,
    string,
    wrong_type,
)

MAX_DIMENSIONS = 16384  # well above any embedding model served today
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
DEFAULTS = RequestLimits()


def _content_parts(parts: list[Any], where: str) -> None:
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise wrong_type(at, "an object", part)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise InvalidRequest(f"Missing required parameter: '{at}.type'.", param=f"{at}.type",
                                 code="missing_required_parameter") if kind is None \
                else wrong_type(f"{at}.type", "a string", kind)
        if kind == "text" and not isinstance(part.get("text"), str):
            raise wrong_type(f"{at}.text", "a string", part.get("text"))


def _sampling(body: dict[str, Any], limits: RequestLimits) -> None:
    number(body, "temperature", minimum=0, maximum=2)
    number(body, "top_p", minimum=0, maximum=1)
    number(body, "presence_penalty", minimum=-2, maximum=2)
    number(body, "frequency_penalty", minimum=-2, maximum=2)
    integer(body, "n", minimum=1, maximum=limits.max_n)
    integer(body, "max_tokens", minimum=1)
    integer(body, "max_completion_tokens", minimum=1)
    integer(body, "seed")
    stop = body.get("stop")
    if isinstance(stop, list):
        max_length("stop", stop, limits.max_stop)
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise wrong_type("stop", "a string or an array of strings", stop)


def _stream_options(body: dict[str, Any]) -> None:
    stream = boolean(body, "stream")
    options = obj(body, "stream_options")
    if options is not None:
        if not stream:
            raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' "
                                 "is enabled.", param="stream_options")
        if "include_usage" in options and not isinstance(options["include_usage"], bool):
            raise wrong_type("stream_options.include_usage", "a boolean",
                             options["include_usage"])


def _inputs(param: str, value: str | list[Any], limit: int) -> int:
    """How many inputs ``value`` holds: a string, or one array of token ids, is one; an array
    of strings, or of arrays of token ids, holds one per item. Any other mix is refused, and
    every item is looked at: a leading token id once vouched for an array of thousands of
    strings, which then passed the cap on inputs (and on embedding values)."""
    if isinstance(value, str) or _token_ids(value):
        return 1
    max_length(param, value, limit)
    if not value:
        return 0
    kind = _kind(value[0])
    if kind is None:
        raise wrong_type(f"{param}[0]", "a string, a token id or an array of token ids",
                         value[0])
    expected = {"string": "a string", "token": "a token id (an integer)",
                "tokens": "an array of token ids"}[kind]
    for i, item in enumerate(value):
        if _kind(item) != kind:
            raise wrong_type(f"{param}[{i}]", f"{expected}, as the array's first item is", item)
    return len(value)


def _kind(item: Any) -> str | None:
    if isinstance(item, str):
        return "string"
    if type(item) is int:
        return "token"
    if isinstance(item, list) and _token_ids(item):
        return "tokens"
    return None


def _token_ids(value: list[Any]) -> bool:
    """True for a (non-empty) array of integers (booleans are not token ids)."""
    return bool(value) and all(type(v) is int for v in value)


def check_chat(body: dict[str, Any], limits: RequestLimits = DEFAULTS) -> None:
    string(body, "model", required=True)
    messages = require(body, "messages")
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequest("Invalid 'messages': empty array. Expected an array with minimum "
                             "length 1, but got an empty array instead.", param="messages")
    max_length("messages", messages, limits.max_messages)
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise wrong_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            raise InvalidRequest(f"Missing required parameter: '{where}.role'.",
                                 param=f"{where}.role", code="missing_required_parameter")
        if not isinstance(role, str):
            raise wrong_type(f"{where}.role", "a string", role)
        if role not in ROLES:
            raise InvalidRequest(f"Invalid value: '{role}'. Supported values are: "
                                 + ", ".join(f"'{r}'" for r in sorted(ROLES)) + ".",
                                 param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise wrong_type(f"{where}.content", "a string or an array of content parts",
                             content)
        if isinstance(content, list):
            _content_parts(content, f"{where}.content")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise wrong_type("tools", "an array", tools)
        max_length("tools", tools, limits.max_tools)
    _sampling(body, limits)
    _stream_options(body)


def check_completion(body: dict[str, Any], limits: RequestLimits = DEFAULTS) -> None:
    string(body, "model", required=True)
    prompt = require(body, "prompt")
    if not isinstance(prompt, str | list):
        raise wrong_type("prompt", "a string or an array", prompt)
    _inputs("prompt", prompt, limits.max_inputs)
    _sampling(body, limits)
    _stream_options(body)


def check_embedding(body: dict[str, Any], limits: RequestLimits = DEFAULTS) -> None:
    string(body, "model", required=True)
    value = require(body, "input")
    if not isinstance(value, str | list):
        raise wrong_type("input", "a string or an array", value)
    if isinstance(value, list) and not value:
        raise InvalidRequest("'input' must not be an empty array.", param="input")
    if isinstance(value, str) and not value:
        raise InvalidRequest("'input' must not be empty.", param="input")
    count = _inputs("input", value, limits.max_inputs)
    dimensions = integer(body, "dimensions", minimum=1, maximum=MAX_DIMENSIONS)
    if dimensions is not None and count * dimensions > limits.max_embedding_values:
        raise InvalidRequest(
            f"Invalid 'dimensions': {count:,} inputs × {dimensions:,} dimensions is "
            f"{count * dimensions:,} values; this gateway returns at most "
            f"{limits.max_embedding_values:,} per request. Send fewer inputs per request or ask "
            "for fewer dimensions.", param="dimensions")
    fmt = string(body, "encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequest(f"Invalid value: '{fmt}'. Supported values are: 'float' and "
                             "'base64'.", param="encoding_format")
    if boolean(body, "stream"):
        raise InvalidRequest("Embeddings cannot be streamed.", param="stream")


def _typed_items(param: str, items: Any, limit: int, required_type: bool) -> None:
    if not isinstance(items, list):
        raise wrong_type(param, "an array", items)
    max_length(param, items, limit)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise wrong_type(f"{param}[{i}]", "an object", item)
        kind = item.get("type")
        if kind is None and required_type:
            raise InvalidRequest(f"Missing required parameter: '{param}[{i}].type'.",
                                 param=f"{param}[{i}].type", code="missing_required_parameter")
        if kind is not None and not isinstance(kind, str):
            raise wrong_type(f"{param}[{i}].type", "a string", kind)


def check_responses(body: dict[str, Any], limits: RequestLimits = DEFAULTS) -> None:
    string(body, "model", required=True)
    given = body.get("input")
    if given is None and not any(body.get(f) for f in ("previous_response_id", "prompt",
                                                        "conversation")):
        raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                             code="missing_required_parameter")
    if given is not None and not isinstance(given, str):
        _typed_items("input", given, limits.max_messages, required_type=False)
    string(body, "instructions")
    string(body, "previous_response_id")
    truncation = string(body, "truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise InvalidRequest(f"Invalid value: '{truncation}'. Supported values are: 'auto' "
                             "and 'disabled'.", param="truncation")
    if body.get("tools") is not None:
        _typed_items("tools", body["tools"], limits.max_tools, required_type=True)
    number(body, "temperature", minimum=0, maximum=2)
    number(body, "top_p", minimum=0, maximum=1)
    integer(body, "max_output_tokens", minimum=1)
    boolean(body, "store")
    if obj(body, "stream_options") is not None and not boolean(body, "stream"):
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' "
                             "is enabled.", param="stream_options")
    boolean(body, "stream")
    if boolean(body, "background"):
        raise InvalidRequest("Background responses are not supported by this gateway: send "
                             "the request without 'background' (or stream it).",
                             param="background", code="unsupported_parameter")


def _not_streamed(body: dict[str, Any], what: str, *fields: str) -> None:
    for field in fields:
        value = body.get(field)
        if value not in (None, False, "audio"):
            raise InvalidRequest(f"{what} cannot be streamed through this gateway: send the "
                                 f"request without '{field}'.", param=field,
                                 code="unsupported_parameter")


def check_moderation(body: dict[str, Any], limits: RequestLimits = DEFAULTS) -> None:
    string(body, "model", required=True)  # the gateway routes by it: no default model
    value = require(body, "input")
    if not isinstance(value, str | list):
        raise wrong_type("input", "a string or an array", value)
    if isinstance(value, list):
        max_length("input", value, limits.max_inputs)


def check_image(body: dict[str, Any], limits: RequestLimits = DEFAULTS) -> None:
    string(body, "model", required=True)
    string(body, "prompt", required=True)
    integer(body, "n", minimum=1, maximum=10)
    _not_streamed(body, "Images", "stream")


def check_speech(body: dict[str, Any], limits: RequestLimits = DEFAULTS) -> None:
    string(body, "model", required=True)
    string(body, "input", required=True)
    voice = require(body, "voice")
    if not isinstance(voice, str | dict):
        raise wrong_type("voice", "a string or an object", voice)
    _not_streamed(body, "Speech", "stream", "stream_format")


CHECKERS = {"chat.completions": check_chat, "completions": check_completion,
            "embeddings": check_embedding, "responses": check_responses,
            "moderations": check_moderation, "images.generations": check_image,
            "audio.speech": check_speech}
