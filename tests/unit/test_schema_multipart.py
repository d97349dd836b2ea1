"""The multipart form of audio uploads: the model found and renamed, the file left alone."""

from __future__ import annotations

import pytest

from gatehouse.errors import InvalidRequest
from gatehouse.schema.multipart import form_value, upload_model, with_model

TYPE = 'multipart/form-data; boundary="XyZ"'


def form(*parts: tuple[str, bytes, str]) -> bytes:
    out = b""
    for name, value, extra in parts:
        out += (b"--XyZ\r\nContent-Disposition: form-data; name=\"" + name.encode() + b'"'
                + extra.encode() + b"\r\n\r\n" + value + b"\r\n")
    return out + b"--XyZ--\r\n"


def test_the_model_is_found_and_renamed_and_the_file_kept_byte_for_byte() -> None:
    sound = b"RIFF\r\n--XyZ-not-a-boundary\r\n" + bytes(range(256))
    raw = form(("file", sound, '; filename="a.wav"\r\nContent-Type: audio/wav'),
               ("model", b"whisper", ""), ("models", b"other", ""))
    assert upload_model(raw, TYPE) == "whisper"
    renamed = with_model(raw, TYPE, "backend-whisper")
    assert form_value(renamed, TYPE, "model") == "backend-whisper"
    assert form_value(renamed, TYPE, "models") == "other"
    assert renamed.replace(b"backend-whisper", b"whisper") == raw


@pytest.mark.parametrize(("raw", "kind", "param"), [
    (form(("file", b"x", "")), TYPE, "model"),
    (form(("model", b"m", "")), TYPE, "file"),
    (form(("model", b"m", ""), ("file", b"x", ""), ("stream", b"true", "")), TYPE, "stream"),
    (b"{}", "application/json", "file"),
    (form(("model", b"m", "")), "multipart/form-data", "file"),
])
def test_what_cannot_be_routed_is_a_400_naming_it(raw: bytes, kind: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        upload_model(raw, kind)
    assert caught.value.param == param
