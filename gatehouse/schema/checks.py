"""Field checks that word their errors the way OpenAI's API does."""

from __future__ import annotations

from typing import Any

from gatehouse.errors import InvalidRequest

_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
               list: "an array", dict: "an object", type(None): "null"}


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param=param, code="invalid_type")


def require(body: dict[str, Any], param: str) -> Any:
    if param not in body or body[param] is None:
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                             code="missing_required_parameter")
    return body[param]


def string(body: dict[str, Any], param: str, *, required: bool = False) -> str | None:
    value = require(body, param) if required else body.get(param)
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    if required and not value:
        raise InvalidRequest(f"'{param}' must not be empty.", param=param)
    return value


def boolean(body: dict[str, Any], param: str) -> bool:
    value = body.get(param)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise wrong_type(param, "a boolean", value)
    return value


def integer(body: dict[str, Any], param: str, *, minimum: int | None = None,
            maximum: int | None = None) -> int | None:
    value = body.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(param, "an integer", value)
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"Invalid '{param}': integer below minimum value. Expected a value "
                             f">= {minimum}, but got {value} instead.", param=param)
    if maximum is not None and value > maximum:
        raise InvalidRequest(f"Invalid '{param}': integer above maximum value. Expected a value "
                             f"<= {maximum}, but got {value} instead.", param=param)
    return value


def number(body: dict[str, Any], param: str, *, minimum: float, maximum: float) -> float | None:
    value = body.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(param, "a number", value)
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"Invalid '{param}': expected a value between {minimum} and "
                             f"{maximum}, but got {value} instead.", param=param)
    return float(value)


def obj(body: dict[str, Any], param: str) -> dict[str, Any] | None:
    value = body.get(param)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise wrong_type(param, "an object", value)
    return value


def max_length(param: str, items: list[Any], maximum: int) -> None:
    if len(items) > maximum:
        raise InvalidRequest(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{maximum}, but got an array with length {len(items)} instead.",
            param=param, code="array_above_max_length")


def too_deep(param: str | None, limit: int) -> InvalidRequest:
    where = f"'{param}' nests" if param else "The body nests"
    return InvalidRequest(
        f"{where} arrays and objects more than {limit} levels deep (the body itself is level "
        "1); this gateway accepts at most that. Flatten the structure.",
        param=param, code="json_too_deep")


def too_many(param: str, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"The body holds more than {limit:,} arrays and objects (the last counted in "
        f"'{param}'); this gateway accepts at most that. Send fewer, larger pieces — one text "
        "part rather than thousands of small ones.", param=param, code="json_too_complex")


def nesting(body: dict[str, Any], limit: int, most: int | None = None) -> None:
    """Raise when arrays and objects nest more than ``limit`` levels deep, or when there are
    more than ``most`` of them, naming the top-level field. Walked a level at a time, never by
    recursion, and ``set(map(type, …))`` keeps the per-item cost in C, so it runs first on
    every body and later code may recurse safely; it stops as soon as ``most`` is passed, so
    its own cost is bounded too (and with it, every later walk of the body)."""
    seen = 0
    for param, value in body.items():
        level = [value] if type(value) is dict or type(value) is list else []
        depth = 2
        while level:
            if depth > limit:
                raise too_deep(param, limit)
            seen += len(level)
            if most is not None and seen > most:
                raise too_many(param, most)
            below: list[Any] = []
            for node in level:
                items = node.values() if type(node) is dict else node
                kinds = set(map(type, items))
                if dict in kinds or list in kinds:
                    below += [i for i in items if type(i) is dict or type(i) is list]
                    if most is not None and seen + len(below) > most:
                        raise too_many(param, most)
            level = below
            depth += 1
