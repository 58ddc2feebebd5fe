"""The shared report helpers: Markdown tables, number formats, figures in two formats."""

from poolwise._figures import figure, save_figure
from poolwise._tables import markdown_table, mean_std, number
from poolwise.stats import summarise


def test_markdown_table_and_formats():
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, None]]) == (
        "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | None |")
    assert number(None) == "n/a" and number(0.12345) == "0.123" and number(2, 1) == "2.0"
    assert mean_std(summarise([0.5, 0.7])) == "0.600 ± 0.141"
    assert mean_std(summarise([0.5, None, 0.7]), 2) == "0.60 ± 0.14 (2)"  # 1 undefined
    assert mean_std(summarise([0.5])) == "0.500" and mean_std(summarise([None])) == "n/a"


def test_save_figure_writes_png_and_svg(tmp_path):
    fig = figure((2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    assert save_figure(fig, tmp_path / "line.png") == ["line.png", "line.svg"]
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "line.svg").read_bytes()[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line.png", "line.svg"]  # no temps
