"""The console script: every subcommand has --help; commands print what they promise."""

import subprocess
import sys

import pytest

from poolwise.cli import build_parser, main
from poolwise.pooling import list_pools


def subcommand_paths(parser, prefix=()):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield (*prefix, name)
            yield from subcommand_paths(sub, (*prefix, name))


@pytest.mark.parametrize("path", [(), *subcommand_paths(build_parser())])
def test_every_subcommand_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: poolwise" in capsys.readouterr().out


def test_pools_lists_the_registry(capsys):
    assert main(["pools"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list_pools()


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "poolwise", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("poolwise ")
