"""Figures of reports: built on :class:`matplotlib.figure.Figure` (no pyplot, so no global
backend is switched in the user's process) and saved atomically as PNG and SVG (with its text
kept as text)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from pathlib import Path

from poolwise._io import atomic_path

FORMATS = ("png", "svg")


def figure(figsize: tuple[float, float], *, layout: str | None = None) -> Figure:
    """A new :class:`~matplotlib.figure.Figure` (``fig.subplots(...)`` gives the axes);
    ``layout="constrained"`` for figures with shared colorbars."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout=layout)


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 130) -> list[str]:
    """Writes ``path`` with each suffix of :data:`FORMATS` (``x.png`` and ``x.svg`` for
    ``path=x.png``) atomically; returns the file names written."""
    import matplotlib

    path = Path(path)
    names = []
    for fmt in FORMATS:
        target = path.with_suffix("." + fmt)
        # SVG text stays text (editable, searchable), not outlines
        with matplotlib.rc_context({"svg.fonttype": "none"}), atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        names.append(target.name)
    return names
