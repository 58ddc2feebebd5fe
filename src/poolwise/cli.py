"""The ``poolwise`` command: thin subcommands over library code.

Library modules never parse argv or print; this module does both.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from poolwise import __version__
from poolwise.pooling import describe_pools


def _cmd_pools(args: argparse.Namespace) -> int:
    pools = describe_pools()
    width = max(map(len, pools))
    for name, text in pools.items():
        print(f"{name:<{width}}  {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolwise",
        description="Structure-aware pooling: GGeM heads for ViTs and L-SFAN pain detection.",
    )
    parser.add_argument("--version", action="version", version=f"poolwise {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pools = commands.add_parser(
        "pools",
        help="list the registered pooling operators",
        description="List the registered pooling operators.",
    )
    pools.set_defaults(run=_cmd_pools)

    from poolwise.pain.cli import add_pain_commands

    add_pain_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"poolwise: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
