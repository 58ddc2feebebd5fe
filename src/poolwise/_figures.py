"""Figures of reports: built on :class:`matplotlib.figure.Figure` (no pyplot, so no global
backend is switched in the user's process) and saved atomically as PNG and SVG."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from pathlib import Path

from poolwise._io import atomic_path

FORMATS = ("png", "svg")


def figure(figsize: tuple[float, float]) -> Figure:
    """A new :class:`~matplotlib.figure.Figure` (``fig.subplots(...)`` gives the axes)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 130) -> list[str]:
    """Writes ``path`` with each suffix of :data:`FORMATS` (``x.png`` and ``x.svg`` for
    ``path=x.png``) atomically; returns the file names written."""
    path = Path(path)
    names = []
    for fmt in FORMATS:
        target = path.with_suffix("." + fmt)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        names.append(target.name)
    return names
