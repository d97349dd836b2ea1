"""Reading a small url-encoded form without trusting its size."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from gatehouse.errors import RequestTooLarge

FORM_LIMIT = 16 * 1024


async def read_form(request: Request, limit: int = FORM_LIMIT) -> dict[str, str]:
    """The first value of each field; {} for any other content type or a malformed form."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestTooLarge("The form is larger than a sign-in form can be.")
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return {}
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                          max_num_fields=32)
    except ValueError:
        return {}
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields
