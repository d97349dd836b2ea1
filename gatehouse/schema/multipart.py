"""Uploads (``/v1/audio/transcriptions``, ``/translations``): a ``multipart/form-data`` body
read whole (bounded by ``[limits] max_audio_bytes``), checked just enough to route it — its
``model`` field — and passed on with that field renamed to the backend's model. The file itself
is never parsed."""

from __future__ import annotations

import re

from gatehouse.errors import InvalidRequest

_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)
_HEAD_END = b"\r\n\r\n"


def boundary_of(content_type: str) -> bytes:
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest("Send the file as multipart/form-data (Content-Type: "
                             "multipart/form-data; boundary=…), as OpenAI's API takes it.",
                             param="file", code="invalid_value")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise InvalidRequest("The multipart/form-data Content-Type names no boundary.",
                             param="file", code="invalid_value")
    return found.group(1).encode("latin-1")


def _field(raw: bytes, boundary: bytes, name: str) -> tuple[int, int] | None:
    """Where the value of the form field ``name`` lies in ``raw`` (start, end), or None."""
    delimiter = b"--" + boundary
    wanted = re.compile(rb'content-disposition:\s*form-data;\s*name="' + re.escape(
        name.encode()) + rb'"(?:\s*;|\s*$)', re.IGNORECASE | re.MULTILINE)
    at = raw.find(delimiter)
    while at >= 0:
        head_start = at + len(delimiter) + 2
        head_end = raw.find(_HEAD_END, head_start)
        if head_end < 0:
            return None
        following = raw.find(b"\r\n" + delimiter, head_end)
        if following < 0:
            return None
        if wanted.search(raw, head_start, head_end):
            return head_end + len(_HEAD_END), following
        at = following + 2
    return None


def form_value(raw: bytes, content_type: str, name: str) -> str | None:
    """The text of a small form field, or None when the form has none."""
    span = _field(raw, boundary_of(content_type), name)
    if span is None:
        return None
    return raw[span[0]:span[1]].decode("utf-8", "replace")


def upload_model(raw: bytes, content_type: str) -> str:
    """The form's ``model``, or a 400 naming what is wrong; streamed uploads are refused."""
    model = form_value(raw, content_type, "model")
    if not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model",
                             code="missing_required_parameter")
    if _field(raw, boundary_of(content_type), "file") is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file",
                             code="missing_required_parameter")
    if (form_value(raw, content_type, "stream") or "").strip().lower() == "true":
        raise InvalidRequest("Transcriptions cannot be streamed through this gateway: send "
                             "the request without 'stream'.", param="stream",
                             code="unsupported_parameter")
    return model.strip()


def with_model(raw: bytes, content_type: str, model: str) -> bytes:
    """The form with its ``model`` field set to ``model`` (the backend's name for it)."""
    span = _field(raw, boundary_of(content_type), "model")
    if span is None:  # checked by upload_model before
        return raw
    return raw[:span[0]] + model.encode() + raw[span[1]:]
