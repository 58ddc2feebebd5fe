"""The ``poolwise`` command: thin subcommands over library code.

Library modules never parse argv or print; this module does both.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from poolwise import __version__
from poolwise._argtypes import positive_int
from poolwise._io import FolderBusyError
from poolwise._logs import hide_cuda_home_notice
from poolwise.runs.slurm import SlurmError, Submitted


def _cmd_pools(args: argparse.Namespace) -> int:
    from poolwise._tables import markdown_table
    from poolwise.pooling import list_pools, pool_info

    rows = []
    for name in list_pools():
        info = pool_info(name)
        rows.append([name, info.family, info.learnable or "none", ", ".join(info.inputs),
                     ", ".join(info.needs) or "-", info.source, info.description])
    print(markdown_table(["pool", "family", "learns", "inputs", "needs", "from",
                          "description"], rows))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from poolwise.demo import pain_summary, run_demo, vision_summary

    def on_fold(record: dict, resumed: bool) -> None:
        f1 = record["metrics"]["macro_f1"]
        text = "undefined" if f1 is None else f"{f1:.3f}"
        print(f"    held out {record['test_subject']}: macro F1 {text}", flush=True)

    def on_cell(pool: str, seed: int, r: dict) -> None:
        print(f"    {pool} seed {seed}: accuracy {100 * r['accuracy']:.2f}%", flush=True)

    report, images = run_demo(
        args.out, subjects=args.subjects, epochs=args.epochs, seed=args.seed,
        image_epochs=args.image_epochs, image_seeds=args.image_seeds,
        on_stage=lambda text: print(f"== {text}", flush=True), on_fold=on_fold, on_cell=on_cell,
    )
    print(f"\nreport: {report}")
    print("\n".join(pain_summary(report.parent)))
    print(f"\nimage pools: {images}")
    print("\n".join(vision_summary(images.parent)))
    return 0


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: ...)`` to an option's help where the default is a value (not None,
    not False) and the text does not show it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or isinstance(action.default, bool)):
            return text
        return f"{text} (default: %(default)s)"


def subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (subcommands of subcommands too), depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *subparsers(sub)]
    return found


# the command groups; each is imported only when its commands are needed
_GROUPS = {"pain": "poolwise.pain.cli:add_pain_commands",
           "vision": "poolwise.vision.cli:add_vision_commands"}


def _command_named(argv: Sequence[str]) -> str | None:
    """The top-level command ``argv`` names (its first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the top-level ``command`` a run names, the parser of that
    command only, so that ``poolwise pain ...`` never imports the vision side (and vice
    versa). Help and errors about the top-level command use the whole parser."""
    parser = argparse.ArgumentParser(
        prog="poolwise", formatter_class=HelpFormatter,
        description="Structure-aware pooling: GGeM heads for ViTs and L-SFAN pain detection.",
    )
    parser.add_argument("--version", action="version", version=f"poolwise {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: POOLWISE_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pools = commands.add_parser(
        "pools",
        help="list the registered pooling operators",
        description="List the registered pooling operators.",
    )
    pools.set_defaults(run=_cmd_pools)

    demo = commands.add_parser(
        "demo",
        help="the main job: a short end-to-end run on embedded data (about 3 minutes on a "
        "2-core CPU)",
        description="Generate a synthetic EmoPain-like cohort, run a short leave-one-subject-"
        "out evaluation of L-SFAN and the CNN-TAP baseline (and L-SFAN under the authors' "
        "leaky protocol), explain L-SFAN, compare the image pools (CLS token, GeM, GGeM) on the "
        "embedded Fashion-MNIST subset, and write one report folder; print every comparison "
        "with its interval or paired verdict.",
    )
    demo.add_argument("--out", default="poolwise-demo", help="report folder")
    demo.add_argument("--subjects", type=positive_int, default=10, help="synthetic subjects")
    demo.add_argument("--epochs", type=positive_int, default=3, help="epochs per LOSO fold")
    demo.add_argument("--seed", type=int, default=0, help="seed of the cohort and of training")
    demo.add_argument("--image-epochs", type=positive_int, default=2,
                      help="epochs of each image pooling run")
    demo.add_argument("--image-seeds", type=positive_int, default=3,
                      help="seeds per image pool")
    demo.set_defaults(run=_cmd_demo)

    named_elsewhere = command in commands.choices  # pools, demo
    for group, where in _GROUPS.items():
        if command == group or (not named_elsewhere and command not in _GROUPS):
            module, _, function = where.partition(":")
            getattr(importlib.import_module(module), function)(commands)
    for sub in subparsers(parser):
        sub.formatter_class = HelpFormatter
    return parser


# Errors that describe bad input or a full/read-only disk: their message is the whole story.
_USER_ERRORS = (ValueError, OSError, FloatingPointError, FolderBusyError, SlurmError)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; an error prints as one line on stderr (exit 2), after any progress
    bar the command opened is closed; ``--debug`` or ``POOLWISE_DEBUG=1`` re-raises it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_named(argv)).parse_args(argv)
    hide_cuda_home_notice()
    debug = args.debug or os.environ.get("POOLWISE_DEBUG", "") not in ("", "0")
    try:
        return args.run(args)
    except Submitted as queued:
        _close_bars(args)
        jobs = ", ".join(f"{name} {job}" for name, job in queued.jobs.items())
        print(f"{queued}; SLURM jobs: {jobs}\nrun the same command again to collect them and "
              "write the report")
        return 0
    except KeyboardInterrupt:
        _close_bars(args)
        print("poolwise: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:
        _close_bars(args)
        if debug:
            raise
        text = str(err).strip() or type(err).__name__
        if not isinstance(err, _USER_ERRORS):
            text = f"{type(err).__name__}: {text} (this looks like a bug in poolwise; rerun " \
                   "with --debug and report the traceback)"
        elif isinstance(err, OSError) and err.filename and str(err.filename) not in text:
            text = f"{err.filename}: {text}"
        print(f"poolwise: error: {text}", file=sys.stderr)
        return 2


def _close_bars(args: argparse.Namespace) -> None:
    for bar in getattr(args, "close_on_error", ()):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
