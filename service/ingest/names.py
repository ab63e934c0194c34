"""Archive member names: normalisation, safety checks, and matching dataset image references.

Member names are normalised by turning backslashes into '/', and dropping empty and '.'
components (so a leading './' goes). A dataset image reference matches a member:
  1. exactly (after the same normalisation; a leading '/' is dropped from references), else
  2. the one member whose path ends with '/<reference>' (the archive has an extra top folder), else
  3. the one member with the same file name (basename), if exactly one has it.
Several candidates at step 2 or 3 are reported (`ambiguous_image`) rather than guessed between.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from .errors import ArchiveError

_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_NAME_CHARS = 4096
_MAX_COMPONENT_BYTES = 255  # NAME_MAX of Linux file systems


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def normalise_member_name(raw: str) -> str:
    """The safe relative path of an archive member, or ArchiveError('unsafe_archive_member')."""

    def unsafe(why: str) -> ArchiveError:
        return ArchiveError("unsafe_archive_member", f"archive member {raw[:300]!r} {why}", member=raw[:300])

    if "\x00" in raw:
        raise unsafe("contains a NUL character")
    if len(raw) > _MAX_NAME_CHARS:
        raise unsafe(f"has a name over {_MAX_NAME_CHARS} characters")
    slashed = raw.replace("\\", "/")
    if slashed.startswith("/") or _DRIVE.match(slashed):
        raise unsafe("has an absolute path; archive paths must be relative")
    parts = _parts(slashed)
    if ".." in parts:
        raise unsafe("has a '..' component (path traversal)")
    if not parts:
        raise unsafe("has an empty name")
    if any(len(p.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT_BYTES for p in parts):
        raise unsafe(f"has a path component over {_MAX_COMPONENT_BYTES} bytes")
    return "/".join(parts)


def normalise_ref(ref: str) -> str:
    """A dataset image reference in member-name form (lenient: it is only used for lookups)."""
    return "/".join(_parts(ref))


class MemberIndex:
    """Finds the archive member a dataset image reference names (rules in the module docstring)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)
        self._by_base: dict[str, list[str]] = defaultdict(list)
        for name in sorted(self.names):
            self._by_base[name.rsplit("/", 1)[-1]].append(name)

    def lookup(self, ref: str) -> list[str]:
        """The members `ref` may name: [] none, [one] a match, several an ambiguity to report."""
        norm = normalise_ref(ref)
        if norm in self.names:
            return [norm]
        candidates = self._by_base.get(norm.rsplit("/", 1)[-1], [])
        suffixed = [c for c in candidates if c.endswith("/" + norm)]
        return suffixed or candidates
