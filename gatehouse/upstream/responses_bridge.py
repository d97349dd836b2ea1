"""The Responses API over a backend that speaks only chat completions.

:func:`to_chat` turns a ``POST /v1/responses`` body into a chat completions body (or a 400
naming the first field that has no chat equivalent); :func:`to_response` turns the chat answer
back into a ``Response`` object. Streams are translated by :mod:`responses_events`. The table
of what maps and what does not is in docs/api.md ("The Responses API")."""

from __future__ import annotations

import time
from typing import Any

from gatehouse.errors import InvalidRequest

# Responses fields copied to the chat body under the same name
SAME = ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier", "top_logprobs",
        "safety_identifier", "prompt_cache_key")
# fields that change nothing a chat backend can do: accepted and not sent on
IGNORED = frozenset({"model", "input", "instructions", "tools", "tool_choice", "text",
                     "max_output_tokens", "reasoning", "stream", "stream_options", "store",
                     "metadata", "include", "truncation", *SAME})
ROLES = frozenset({"user", "assistant", "system", "developer"})


def refuse(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"{what} cannot be translated for this model, whose backend speaks only chat "
        f"completions (docs/api.md lists what maps). Remove '{param}' or use a model served "
        "by a Responses backend.", param=param, code="unsupported_parameter")


def _text_of(content: Any, where: str) -> str:
    """A content list of text parts as one string (an assistant turn, a tool output)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{where}': expected a string or an array of "
                             "content parts.", param=where, code="invalid_type")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in (
                "input_text", "output_text", "text", "refusal"):
            kind = part.get("type") if isinstance(part, dict) else part
            raise refuse(f"{where}[{j}].type", f"A content part of type {kind!r} here")
        said = part.get("text", part.get("refusal"))
        if not isinstance(said, str):
            raise InvalidRequest(f"Invalid type for '{where}[{j}].text': expected a string.",
                                 param=f"{where}[{j}].text", code="invalid_type")
        texts.append(said)
    return "".join(texts)


def _parts(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A user/system message's content in chat's form: text and image parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{where}': expected a string or an array of "
                             "content parts.", param=where, code="invalid_type")
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            out.append({"type": "text", "text": _text_of([part], where)})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        else:
            what = f"A content part of type {kind!r}" if kind else "A content part"
            if kind == "input_image":
                what = "An image given by file_id"
            raise refuse(f"{where}[{j}]" + (".type" if kind else ""), what)
    return out


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
        return messages
    for i, item in enumerate(given or []):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise InvalidRequest(f"Invalid value for '{where}.role': {role!r}. Supported "
                                     "values are: 'assistant', 'developer', 'system', 'user'.",
                                     param=f"{where}.role")
            content = item.get("content")
            messages.append({"role": role, "content":
                             _text_of(content, f"{where}.content") if role == "assistant"
                             else _parts(content, f"{where}.content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function", "function": {
                "name": item.get("name"), "arguments": item.get("arguments", "")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # parallel calls: one turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": _text_of(output, f"{where}.output")})
        elif kind == "reasoning":
            continue  # a chat backend takes no reasoning back: it reasons afresh
        else:
            raise refuse(f"{where}.type", f"An input item of type {kind!r}")
    return messages


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise refuse(f"tools[{i}].type", f"A tool of type {kind!r} (a hosted tool)")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                    if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise refuse("tool_choice", f"A tool_choice of {kind!r}")


def _format(text: Any) -> dict[str, Any] | None:
    fmt: Any = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description")
                  if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise refuse("text.format.type", f"A text format of type {kind!r}")


def to_chat(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat completions body for ``body`` (checked by the schema stage), or a 400."""
    for field, value in body.items():
        if field not in IGNORED and value is not None:
            if field == "previous_response_id":
                raise refuse(field, "A follow-up to a stored response (previous_response_id)")
            raise refuse(field, f"The parameter '{field}'")
    if body.get("truncation") not in (None, "disabled"):
        raise refuse("truncation", "truncation 'auto'")
    chat: dict[str, Any] = {"model": model, "messages": _messages(body)}
    for field in SAME:
        if body.get(field) is not None:
            chat[field] = body[field]
    if "top_logprobs" in chat:
        chat["logprobs"] = True
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = _tools(body)
    if tools:
        chat["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        chat["tool_choice"] = choice
    fmt = _format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # for response.completed's usage
    return chat


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def skeleton(body: dict[str, Any], rid: str, status: str, created: float | None = None,
             store: bool = False) -> dict[str, Any]:
    """A ``Response`` with no output yet: the request's parameters echoed, as OpenAI does."""
    tools = body.get("tools") or []
    return {
        "id": rid, "object": "response", "created_at": int(created or time.time()),
        "status": status, "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens":
            body.get("max_output_tokens"), "model": body.get("model"), "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": store, "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto", "tools": tools,
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation") or "disabled",
        "usage": None, "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


def usage_of(chat_usage: Any) -> dict[str, Any] | None:
    """Chat usage in the Responses shape (cached and reasoning tokens kept)."""
    if not isinstance(chat_usage, dict) or not isinstance(chat_usage.get("prompt_tokens"), int):
        return None
    prompt = chat_usage["prompt_tokens"]
    completion = chat_usage.get("completion_tokens") or 0
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached,
                                                             "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": chat_usage.get("total_tokens") or prompt + completion}


def ending(finish_reason: Any) -> tuple[str, dict[str, str] | None]:
    """A chat finish_reason as the Response's status and incomplete_details."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def message_item(item_id: str, text: str, status: str = "completed",
                 refusal: bool = False) -> dict[str, Any]:
    part = ({"type": "refusal", "refusal": text} if refusal else
            {"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [part]}


def call_item(item_id: str, call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "function_call", "id": item_id, "call_id": call.get("id") or item_id,
            "name": function.get("name") or "", "arguments": function.get("arguments") or "",
            "status": status}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def input_items(body: dict[str, Any]) -> list[Any]:
    """A request's ``input`` as a list of items (a string is one user message)."""
    given = body.get("input")
    return [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])


def to_response(body: dict[str, Any], chat: dict[str, Any], rid: str,
                usage: dict[str, Any] | None, store: bool = False) -> dict[str, Any]:
    """The chat completion ``chat`` as the ``Response`` to ``body``."""
    suffix = rid.removeprefix("resp_")
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(f"rs_{suffix}", reasoning))
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(message_item(f"msg_{suffix}", message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        output.append(message_item(f"msg_{suffix}_r", message["refusal"], refusal=True))
    for k, call in enumerate(message.get("tool_calls") or []):
        if isinstance(call, dict):
            output.append(call_item(f"fc_{suffix}_{k}", call))
    status, incomplete = ending(choice.get("finish_reason"))
    created = chat.get("created") if isinstance(chat.get("created"), int | float) else None
    out = skeleton(body, rid, status, created, store)
    out.update(output=output, incomplete_details=incomplete,
               usage=usage or usage_of(chat.get("usage")))
    return out
