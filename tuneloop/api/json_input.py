"""Untrusted JSON, parsed once and the same way for every route that reads a raw body or a JSON
form field: every way a hostile text can break the parser or what comes after it is a 400.

Refused: malformed JSON, text that is not UTF-8, nesting too deep for the parser (a
RecursionError), integers over Python's 4,300-digit limit, ``NaN`` / ``Infinity`` (not JSON
numbers; they would poison metrics and the store), and NUL characters and lone UTF-16
surrogates (``"\\ud800"``) in strings, which PostgreSQL cannot store (one NUL in a batch of
feedback would fail the whole group commit, for every tenant in it).
"""

from __future__ import annotations

import json
import re
from typing import Any

from services.errors import InvalidInput

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number or null")


def parse_json(raw: bytes | str, *, what: str = "request body", param: str | None = None) -> Any:
    """The parsed value of ``raw``, or InvalidInput naming ``what`` and the problem."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise InvalidInput(f"{what} nests too deeply; flatten it", param=param) from None
    except ValueError as exc:  # also UnicodeDecodeError and the integer digit limit
        raise InvalidInput(f"{what} is not valid JSON: {exc}", param=param) from exc
    _check_strings(value, what, param)
    return value


def _check_strings(value: Any, what: str, param: str | None) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidInput(f"{what} has a NUL character (\\u0000) in a string; remove it",
                                   param=param)
            if not item.isascii() and _SURROGATE.search(item):
                raise InvalidInput(f"{what} has a lone UTF-16 surrogate (\\ud800-\\udfff) in a "
                                   "string; send valid Unicode", param=param)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
