"""JSON values an event may hold: those PostgreSQL stores, and the hash covers, exactly.

Anything else is refused rather than silently changed: NaN and infinities (stored as null),
numbers beyond ±(2**53 - 1) or with more digits than a double holds (hashed as their nearest
double, so an edit of them would pass verify), lone surrogates (stored as U+FFFD), NUL
(PostgreSQL cannot store it) and nesting deeper than MAX_DEPTH (the encoders recurse).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""Compact UTF-8 JSON, as events are stored (one encoder: `json.dumps` builds one a call)."""


@dataclass(frozen=True)
class InexactNumber:
    """A JSON number as sent, which no double holds exactly (see `loads_exact`)."""

    text: str


def _float(text: str) -> float | InexactNumber:
    value = float(text)
    if math.isfinite(value) and Decimal(text) == Decimal(repr(value)):
        return value
    return InexactNumber(text)


def loads_exact(text: str | bytes) -> Any:
    """`json.loads`, except that a number a double would change (and NaN, Infinity) comes
    back as InexactNumber, for `unsafe_json` to name instead of a rounded float."""
    return json.loads(text, parse_float=_float, parse_constant=InexactNumber)


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON, as events are stored."""
    return len(_COMPACT.encode(value).encode("utf-8"))


def _member(path: str, key: str) -> str:
    # Keys are shown JSON-escaped when not plain names, so a problem never echoes bad text.
    part = f".{key}" if _NAME.match(key) else f"[{json.dumps(key)}]"
    return part[1:] if not path and part.startswith(".") else path + part


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters (PostgreSQL cannot store them)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate such as \\udc00)"
    return None


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (NaN and infinities cannot be stored)"
    if abs(value) > MAX_SAFE_INTEGER:
        return f"must lie within ±{MAX_SAFE_INTEGER:,} (2^53 - 1), where doubles are exact"
    return None


def _inexact(item: Any) -> str | None:
    if isinstance(item, InexactNumber):
        if not math.isfinite(float(item.text)):
            return "must be a finite number (NaN and infinities cannot be stored)"
        return (
            f"the number {item.text[:40]} cannot be stored exactly: use at most 17"
            " significant digits, within the range of a double (or send it as text)"
        )
    return None


def _leaf_problem(item: Any) -> str | None:
    if isinstance(item, str):
        return _text_problem(item)
    if isinstance(item, int | float) and not isinstance(item, bool):
        return _number_problem(item)
    if item is None or isinstance(item, bool):
        return None
    return _inexact(item) or f"is not a JSON value ({type(item).__name__})"


def _first(
    value: Any, root: str, max_depth: int | None, judge: Callable[[Any], str | None]
) -> str | None:
    """The first problem `judge` finds in a leaf, a key or the nesting, as "where: why";
    without recursion, so any depth is walked safely."""
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        item, path, depth = stack.pop()
        problem: str | None = None
        if isinstance(item, dict | list) and max_depth is not None and depth >= max_depth:
            problem = f"is nested deeper than {max_depth} levels"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if not isinstance(key, str):
                    return f"{path or 'value'}: keys must be text"
                where = _member(path, key)
                if (why := _text_problem(key)) is not None:
                    return f"{where}: the key {why}"
                stack.append((child, where, depth + 1))
        elif isinstance(item, list):
            stack.extend(
                (child, f"{path}[{index}]", depth + 1)
                for index, child in reversed(list(enumerate(item)))
            )
        else:
            problem = judge(item)
        if problem is not None:
            return f"{path or 'value'}: {problem}"
    return None


def unsafe_json(value: Any, root: str = "", max_depth: int = MAX_DEPTH) -> str | None:
    """The first value in `value` that could not be stored exactly, as "where: why" (where
    like `root.a[2]`), or None when all is well."""
    return _first(value, root, max_depth, _leaf_problem)


# What a dump writes for a number beyond ±2**53: 16 digits or more, or an exponent up
# (repr's "1e+16"). Found in a string too, it only costs the walk.
_SIXTEEN_DIGITS = re.compile(r"[0-9]{16}")


def checked_size(value: Any, root: str = "", max_depth: int = MAX_DEPTH) -> tuple[str | None, int]:
    """(`unsafe_json(value)`, `encoded_size(value)`) of a value decoded from JSON text, in
    one C-speed dump when the text shows nothing to look at closer: no NUL, no lone
    surrogate, no number of 16 digits or a positive exponent (beyond ±2**53), fewer
    containers than `max_depth`. Else the walk that names the place (the size then 0 if
    it found a problem)."""
    try:
        text = _COMPACT.encode(value)
        encoded = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):  # InexactNumber, NaN, surrogates...
        pass
    else:
        if (
            "\\u0000" not in text
            and text.count("[") + text.count("{") < max_depth
            and "e+" not in text
            and _SIXTEEN_DIGITS.search(text) is None
        ):
            return None, len(encoded)
    problem = unsafe_json(value, root, max_depth)
    return problem, (encoded_size(value) if problem is None else 0)


def inexact_number(value: Any, root: str = "") -> str | None:
    """The first InexactNumber in `value` (from `loads_exact`), as "where: why", or None."""
    return _first(value, root, None, _inexact)
