"""``poolwise pain ...``: the parser of the pain commands; what each one does is in
:mod:`poolwise.pain.commands`."""

from __future__ import annotations

import argparse

from poolwise._argtypes import (
    fraction,
    key_value,
    positive_float,
    positive_int,
    registered_names,
)
from poolwise._launch_args import add_launcher_arguments, add_log_argument
from poolwise.pain import commands as cmd


def model_names(text: str) -> list[str]:
    """A comma-separated list of registered pain model names, each named once."""
    from poolwise.pain.models import list_models

    return registered_names(text, list_models(), "model")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options of how each fold trains, shared by `pain loso` and `pain compare`."""
    add_log_argument(parser)
    parser.add_argument("--epochs", type=positive_int, default=20, help="epochs per fold")
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the training forward (needs a C++ compiler; faster on CPU)",
    )
    parser.add_argument("--model-option", type=key_value, action="append", default=[],
                      metavar="KEY=VALUE",
                      help="a constructor argument of the model, repeatable (e.g. n_segments=3 "
                      "for banet on 6 channels, heads=2); channels, window and classes come "
                      "from the data")
    parser.add_argument("--batch-size", type=positive_int, default=40,
                      help="windows per step")
    parser.add_argument("--lr", type=positive_float, default=1e-3,
                      help="Adam learning rate")
    parser.add_argument("--patience", type=positive_int, default=None,
                      help="early-stopping patience in epochs (default: off)")
    parser.add_argument("--min-steps", type=int, default=0,
                      help="train at least this many optimiser steps per fold, adding epochs "
                      "beyond --epochs where a fold has few windows (0: the fixed epochs of "
                      "the paper)")
    parser.add_argument(
        "--select-subjects", type=positive_int, default=3,
        help="inner selection subjects drawn from the training subjects",
    )
    parser.add_argument("--seed", type=int, default=0,
                      help="base seed; each fold's seed is derived from it and recorded")
    parser.add_argument("--jobs", type=positive_int, default=1,
                      help="folds run in parallel local processes (--launcher local)")


def add_pain_commands(commands: argparse._SubParsersAction) -> None:
    from poolwise._export import FORMATS
    from poolwise.pain.constants import MAX_ABS_Z, STEP, WINDOW
    from poolwise.pain.loso.protocols import PROTOCOLS
    from poolwise.pain.models import list_models

    pain = commands.add_parser(
        "pain",
        help="L-SFAN pain-behaviour detection",
        description="L-SFAN pain-behaviour detection on EmoPain-style data.",
    )
    sub = pain.add_subparsers(dest="pain_command", metavar="COMMAND", required=True)

    synth = sub.add_parser(
        "synth",
        help="write a synthetic EmoPain-like cohort (raw FAME .mat or challenge-style CSV)",
        description="Write a synthetic EmoPain-like cohort, one session per subject: raw FAME "
        ".mat files (for `pain windows`), or challenge-style CSV files with a header of the 30 "
        "channel names and `protective` (for `pain windows --challenge` and `pain stream "
        "--input`). See docs/pain.md, section 'The synthetic cohort'.",
    )
    synth.add_argument("out_dir", help="destination folder")
    synth.add_argument("--subjects", type=positive_int, default=30,
                       help="subjects in all")
    synth.add_argument(
        "--healthy",
        type=int,
        default=None,
        help="healthy controls among them (default 40%%: 12 of 30)",
    )
    synth.add_argument("--seed", type=int, default=0, help="seed of the generative model")
    synth.add_argument("--format", choices=("mat", "csv"), default="mat",
                       help="mat: raw FAME layout under 'randomised C'/'randomised P'; csv: "
                       "one <subject>.csv per subject")
    synth.set_defaults(run=cmd.synth)

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
    windows.add_argument("--window", type=positive_int, default=WINDOW,
                         help="frames per window")
    windows.add_argument("--step", type=positive_int, default=STEP, help="hop in frames")
    windows.set_defaults(run=cmd.windows)

    models = sub.add_parser(
        "models",
        help="list the pain models with parameter counts",
        description="List the registered pain models.",
    )
    models.set_defaults(run=cmd.models)

    loso = sub.add_parser(
        "loso",
        help="leave-one-subject-out training and evaluation (resumable)",
        description="Leave-one-subject-out evaluation. One JSON file per fold is written "
        "atomically in OUT; rerunning the same command resumes at the first unfinished fold. "
        "--protocol reference reproduces the leaks of the authors' code (labelled as such); "
        "--protocol challenge --split FILE trains once on a fixed split of the subjects, as "
        "the EmoPain 2020 challenge does (split file format: docs/pain.md).",
    )
    loso.add_argument("data", help="raw recording tree or a cached .npz window file")
    loso.add_argument("--model", default="lsfan", choices=list_models(),
                      help="a model of `poolwise pain models`")
    loso.add_argument("--out", required=True, help="run folder")
    loso.add_argument(
        "--folds",
        nargs="+",
        help="subset of folds: subject ids, 0-based indices or ranges like 0-9 (array jobs)",
    )
    loso.add_argument("--protocol", choices=PROTOCOLS, default="clean",
                      help="clean: no leaks; reference: the leaks of the authors' code, to "
                      "measure their optimism (labelled REFERENCE (leaky) everywhere); "
                      "challenge: one fixed train / validation / test split (--split)")
    loso.add_argument("--split", default=None, metavar="FILE",
                      help='the challenge protocol\'s split: JSON {"train": [...], '
                      '"validation": [...], "test": [...]} of subject ids')
    _add_training_options(loso)
    loso.add_argument("--wait", action="store_true",
                      help="if another run holds OUT, wait for it instead of refusing")
    loso.add_argument("--threads", type=positive_int, default=None,
                      help="torch threads (one process; with --launcher slurm, each job's)")
    add_launcher_arguments(loso, gpus=0)
    loso.set_defaults(run=cmd.loso)

    compare = sub.add_parser(
        "compare",
        help="several models (x seeds) leave-one-subject-out, one report (resumable)",
        description="Leave-one-subject-out evaluation of several models under the clean "
        "protocol (each model x seed a normal `pain loso` run folder OUT/<model>-clean, "
        "-clean-seed<k> with several seeds), optionally some under the authors' leaky "
        "reference protocol too (OUT/<model>-reference), then one report in OUT with the "
        "paired statistics between the runs. With --launcher slurm, every fold of every clean "
        "run is submitted before any is waited for.",
    )
    compare.add_argument("data", help="raw recording tree or a cached .npz window file")
    compare.add_argument("--models", type=model_names, required=True,
                         help="comma-separated models of `poolwise pain models`")
    compare.add_argument("--seeds", type=positive_int, default=1,
                         help="seeds per model (--seed, --seed + 1, ...)")
    compare.add_argument("--reference", type=model_names, default=[],
                         help="comma-separated models also run under the reference (leaky) "
                         "protocol, to show its optimism")
    compare.add_argument("--out", required=True, help="comparison folder")
    compare.add_argument("--report", default=None, metavar="DIR",
                         help="folder of the report (default: OUT), e.g. to publish it apart "
                         "from the run folders")
    _add_training_options(compare)
    compare.add_argument("--threads", type=positive_int, default=None,
                         help="torch threads (one process; with --launcher slurm, each job's)")
    compare.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    add_launcher_arguments(compare, gpus=0)
    compare.set_defaults(run=cmd.compare)

    report = sub.add_parser(
        "report",
        help="merge LOSO fold files into a Markdown report with tables and plots",
        description="Merge the fold files of one or more run folders (found recursively) "
        "into report.md, summary.json, per_subject.csv and PNG plots.",
    )
    explain = sub.add_parser(
        "explain",
        help="Grad-CAM over time x signal column and encoder attention, per class and group",
        description="Explain every fold model of a LOSO run on its own held-out windows: "
        "Grad-CAM heat maps over time x signal column and the encoder's attention between "
        "CNN channels, averaged per class and per subject group (PNG + explanations.npz).",
    )
    explain.add_argument("run_dir", metavar="RUN", help="a LOSO run folder")
    explain.add_argument("data", help="the data the run was trained on")
    explain.add_argument("--out", help="output folder (default: the run folder)")
    explain.set_defaults(run=cmd.explain)

    export = sub.add_parser(
        "export",
        help="export a fold checkpoint (detector) to ONNX or TorchScript",
        description="Export a detector checkpoint (a LOSO fold_<subject>.safetensors) to ONNX "
        "or TorchScript: raw windows in (dynamic batch axis); out the probability, (batch,) "
        "for a binary detector or (batch, K) for K classes, and valid (batch,); normalisation "
        "and softmax included; the config (channels, frame rate, window, hop, threshold) is "
        "written beside it as JSON.",
    )
    export.add_argument("checkpoint", help="fold_<subject>.safetensors of a LOSO run")
    export.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx: torch's maintained exporter (needs poolwise[onnx]); "
                        "torchscript: deprecated (PyTorch no longer develops TorchScript)")
    export.add_argument("--out", help="output file, not one of the run's own (default: "
                        "RUN/export/<checkpoint's name>.onnx or .pt)")
    export.add_argument("--max-z", type=positive_float, default=MAX_ABS_Z,
                        help="largest |z-score| the graph marks valid (%(default)g)")
    export.set_defaults(run=cmd.export)

    stream = sub.add_parser(
        "stream",
        help="replay a recording (CSV, stdin or FAME .mat) through a detector as a stream",
        description="Replay a recording as a live stream through a detector checkpoint: one "
        "protective-behaviour probability per hop, printed as it is made; gaps, NaNs and "
        "dropped sensors follow the documented policy (docs/pain.md#streaming).",
    )
    stream.add_argument("checkpoint", help="a detector checkpoint (LOSO fold .safetensors)")
    stream.add_argument("--input", required=True,
                        help="CSV file with a header of channel names (optional 'time' column), "
                        "'-' for CSV on stdin, or a raw FAME .mat session")
    stream.add_argument("--chunk", type=positive_int, default=45, help="frames per push")
    stream.add_argument("--frame-rate", type=positive_float, default=None,
                        help="the CSV's frame rate, checked against the detector's")
    stream.add_argument("--max-z", type=positive_float, default=MAX_ABS_Z,
                        help="largest |z-score| that is scored; beyond it the decision is "
                        "unavailable, status out-of-range (%(default)g)")
    stream.add_argument("--max-missing", type=fraction, default=0.1,
                        help="largest missing fraction of a channel in a window that is "
                        "interpolated; beyond it the decision is unavailable")
    stream.add_argument("--out", help="folder for decisions.csv, frames.csv and stream.png")
    stream.set_defaults(run=cmd.stream)

    report.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    report.add_argument("--out", help="report folder (default: the first RUN folder)")
    report.add_argument(
        "--command-line", help="the command(s) that made the runs, quoted in the report"
    )
    report.set_defaults(run=cmd.report)
