"""Text every store accepts: PostgreSQL refuses NUL in text, and UTF-8 cannot encode an unpaired
surrogate (JSON's "\\ud800" decodes to one)."""
from __future__ import annotations

import re

_BAD = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    match = _BAD.search(value)
    if match is None:
        return None
    what = "a NUL character" if match.group() == "\x00" else f"an unpaired surrogate (U+{ord(match.group()):04X})"
    return f"contains {what} at offset {match.start()}"
