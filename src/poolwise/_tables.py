"""Markdown tables and the number formats of every report and printed table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for an undefined (None) value."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def mean_std(summary: Mapping, digits: int = 3) -> str:
    """``mean ± std`` of a :func:`poolwise.stats.summarise` result; ``(n)`` is appended when
    some values were undefined, so the count behind the mean is visible."""
    if summary["mean"] is None:
        return "n/a"
    std = "" if summary["std"] is None else f" ± {summary['std']:.{digits}f}"
    extra = f" ({summary['n']})" if summary.get("undefined") else ""
    return f"{summary['mean']:.{digits}f}{std}{extra}"
