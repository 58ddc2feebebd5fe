"""``poolwise pain ...`` subcommands: argument parsing and printing only."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_synth(args: argparse.Namespace) -> int:
    from poolwise.pain.data.synth import write_synthetic_cohort

    files = write_synthetic_cohort(
        args.out_dir, n_subjects=args.subjects, seed=args.seed, n_healthy=args.healthy
    )
    print(f"wrote {len(files)} sessions in the raw FAME .mat layout under {args.out_dir}")
    return 0


def _cmd_windows(args: argparse.Namespace) -> int:
    from poolwise.pain.data.dataset import WindowDataset
    from poolwise.pain.data.readers import read_challenge_file, read_fame_folder

    source = Path(args.data)
    if args.challenge:
        files = sorted([*source.glob("*.csv"), *source.glob("*.mat")])
        if not files:
            raise FileNotFoundError(f"{source}: no .csv or .mat challenge files")
        dataset = WindowDataset.concatenate(
            [read_challenge_file(f, window=args.window, step=args.step) for f in files]
        )
    else:
        dataset = read_fame_folder(source, window=args.window, step=args.step)
    dataset.save(args.out)
    print(
        f"{len(dataset)} windows of {dataset.window} frames, {len(dataset.subjects)} subjects, "
        f"{dataset.y.mean():.1%} protective -> {args.out}"
    )
    print("\n| group | subjects | windows | protective |\n|---|---|---|---|")
    for group in sorted(set(dataset.group.tolist())):
        mask = dataset.group == group
        print(
            f"| {group} | {len(set(dataset.subject[mask].tolist()))} | {int(mask.sum())} "
            f"| {dataset.y[mask].mean():.1%} |"
        )
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from poolwise.pain.models import count_parameters, create_model, describe_models

    print("| model | trainable parameters | description |\n|---|---|---|")
    for name, text in describe_models().items():
        print(f"| {name} | {count_parameters(create_model(name)):,} | {text} |")
    return 0


def add_pain_commands(commands: argparse._SubParsersAction) -> None:
    pain = commands.add_parser(
        "pain",
        help="L-SFAN pain-behaviour detection",
        description="L-SFAN pain-behaviour detection on EmoPain-style data.",
    )
    sub = pain.add_subparsers(dest="pain_command", metavar="COMMAND", required=True)

    synth = sub.add_parser(
        "synth",
        help="write a synthetic cohort in the raw FAME .mat layout",
        description="Write a synthetic EmoPain-like cohort (raw FAME .mat "
        "layout; see docs/synthetic_cohort.md).",
    )
    synth.add_argument("out_dir", help="destination folder")
    synth.add_argument("--subjects", type=int, default=30, help="subjects in all (default 30)")
    synth.add_argument(
        "--healthy",
        type=int,
        default=None,
        help="healthy controls among them (default 40%%: 12 of 30)",
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_cmd_synth)

    windows = sub.add_parser(
        "windows",
        help="cut recordings into one cached window file",
        description="Read raw FAME sessions (or challenge files) and write "
        "all windows, labels and metadata to one .npz file.",
    )
    windows.add_argument(
        "data",
        help="raw EmoPain tree ('randomised C'/'randomised P') or a folder of challenge files",
    )
    windows.add_argument("--out", required=True, help="output .npz file")
    windows.add_argument(
        "--challenge",
        action="store_true",
        help="DATA holds challenge-style per-subject .csv/.mat files",
    )
    windows.add_argument("--window", type=int, default=180, help="frames per window (180)")
    windows.add_argument("--step", type=int, default=45, help="hop in frames (45)")
    windows.set_defaults(run=_cmd_windows)

    models = sub.add_parser(
        "models",
        help="list the pain models with parameter counts",
        description="List the registered pain models.",
    )
    models.set_defaults(run=_cmd_models)
