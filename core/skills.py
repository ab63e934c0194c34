"""Skill names: what a dataset, a record or an evaluation set may call a skill."""
from __future__ import annotations

from typing import Any

MAX_SKILL_CHARS = 100  # the width of the skill columns (datasets, samples, pool_eval_sets)


def skill_problem(value: Any) -> str | None:
    """Why `value` is not a usable skill name, or None when it is: a string whose stripped text is
    non-empty, at most 100 characters and free of control characters. Names are compared stripped."""
    if not isinstance(value, str):
        return f"must be a string, got {value!r}"
    text = value.strip()
    if not text:
        return "must not be empty"
    if len(text) > MAX_SKILL_CHARS:
        return f"is {len(text)} characters, over the limit of {MAX_SKILL_CHARS}"
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        return "must not contain control characters"
    return None


def clean_skill(value: Any) -> str:
    """`value` stripped, or ValueError("the skill ...") saying why it is not a skill name."""
    if (problem := skill_problem(value)) is not None:
        raise ValueError(f"the skill {problem}")
    return value.strip()
