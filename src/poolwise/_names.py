"""Identifiers as a person reads them: two names that print alike are one name to the reader,
so poolwise refuses them rather than count two entities (two subjects, two classes)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

# characters that print as nothing: zero-width space, non-joiner, joiner, word joiner, BOM
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def printed(name: str) -> str:
    """What ``name`` looks like printed: compatibility-normalised (NFKC: full-width letters,
    ligatures and composed accents become one form), without invisible characters, surrounding
    white space, or runs of inner white space."""
    text = unicodedata.normalize("NFKC", str(name)).translate(_INVISIBLE)
    return " ".join(text.split())


def alike(names: Iterable[str]) -> list[list[str]]:
    """Groups of two or more distinct names that print alike, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(str(n) for n in names):
        groups.setdefault(printed(name), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def check_distinct(names: Iterable[str], what: str, where: str) -> None:
    """Raises ValueError naming the first names (``what``: "subject", "class") in ``where``
    that print alike, with their exact spelling."""
    found = alike(names)
    if found:
        shown = "; ".join(" and ".join(repr(n) for n in group) for group in found[:3])
        raise ValueError(f"{where}: {what} names that print alike but differ ({shown}); "
                         f"rename them so that each {what} reads differently, or make them "
                         "one name")
