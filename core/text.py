"""Text and JSON every store accepts: PostgreSQL refuses NUL in text and NaN in JSON, and UTF-8
cannot encode an unpaired surrogate (JSON's "\\ud800" decodes to one)."""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

_BAD = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    match = _BAD.search(value)
    if match is None:
        return None
    what = "a NUL character" if match.group() == "\x00" else f"an unpaired surrogate (U+{ord(match.group()):04X})"
    return f"contains {what} at offset {match.start()}"


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def json_leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any, bool]]:
    """Every dict key and scalar of a decoded JSON value, depth first, keys before their values:
    (path, leaf, is_key). A scalar's path is its own (`a.b[0]`); a key's is its dict's."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, True
            yield from json_leaves(item, join_path(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from json_leaves(item, f"{path}[{i}]")
    else:
        yield path, value, False


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float made None, recursively, and numpy scalars made Python
    ones (JSON has no NaN, and PostgreSQL's JSON columns refuse it)."""
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
