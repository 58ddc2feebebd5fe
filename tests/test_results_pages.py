"""Every committed results page says how to make it again: the command, the machine, the
versions and the wall time, as the results index promises."""

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
# pages made before they recorded their machine, versions and wall time; each is regenerated
# by its grid (docs/results/README.md says which are current), and the mark must then go
STALE = {"synthetic": "the seven-model report, made before reports named machine and time",
         "clip-fashion-mnist": "made with the engine's earlier hand-written schedule"}


def _page(folder: Path) -> Path:
    for name in ("README.md", "report.md"):
        if (folder / name).is_file():
            return folder / name
    raise AssertionError(f"{folder}: no README.md or report.md")


def _folders():
    for folder in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        marks = ([pytest.mark.xfail(strict=True, reason=STALE[folder.name])]
                 if folder.name in STALE else [])
        yield pytest.param(folder, id=folder.name, marks=marks)


def test_the_index_lists_every_results_folder():
    index = (RESULTS / "README.md").read_text()
    for folder in (p for p in RESULTS.iterdir() if p.is_dir()):
        assert f"[{folder.name}/]({folder.name}/" in index


@pytest.mark.parametrize("folder", list(_folders()))
def test_a_results_page_names_its_command_machine_versions_and_wall_time(folder):
    text = _page(folder).read_text()
    commands = re.findall(r"^(?:poolwise|python) .+$", text, flags=re.M)
    assert commands, "no command line starting with `poolwise` or `python`"
    assert re.search(r"\b\d+[ -]cores?\b", text), "no machine (its core count)"
    assert re.search(r"\btorch \d+\.\d+", text), "no torch version"
    assert re.search(r"\bpoolwise \d+\.\d+|\bcommit [0-9a-f]{7}", text), \
        "no poolwise version or commit"
    assert re.search(r"[Ww]all time[^.\n]*?\d", text), "no wall time"
