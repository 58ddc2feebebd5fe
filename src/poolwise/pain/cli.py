"""``poolwise pain ...`` subcommands: argument parsing and printing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from poolwise._argtypes import fraction, key_value, positive_float, positive_int
from poolwise._launch_args import (
    add_launcher_arguments,
    add_log_argument,
    announce,
    launch_from_args,
)


def _cmd_synth(args: argparse.Namespace) -> int:
    from poolwise.pain.data.synth import write_synthetic_cohort

    files = write_synthetic_cohort(
        args.out_dir, n_subjects=args.subjects, seed=args.seed, n_healthy=args.healthy,
        fmt=args.format,
    )
    kind = ("in the raw FAME .mat layout" if args.format == "mat"
            else "as challenge-style CSV files (30 channels + protective)")
    print(f"wrote {len(files)} sessions {kind} under {args.out_dir}")
    return 0


def _cmd_windows(args: argparse.Namespace) -> int:
    from poolwise.pain.data.readers import read_challenge_folder, read_fame_folder

    read = read_challenge_folder if args.challenge else read_fame_folder
    dataset = read(Path(args.data), window=args.window, step=args.step)
    dataset.save(args.out)
    print(
        f"{len(dataset)} windows of {dataset.window} frames, {len(dataset.subjects)} subjects, "
        f"{dataset.y.mean():.1%} protective -> {args.out}"
    )
    for entry in dataset.skipped:
        if entry.get("whole_file"):
            print(f"skipped {entry['file']}: {entry['reason']}")
    summary = dataset.skipped_summary()
    if summary:
        print("\n| left out (recorded in the file's `skipped`) | frames |\n|---|---|")
        for reason, frames in sorted(summary.items()):
            print(f"| {reason} | {frames:,} |")
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


def _loso_config(args: argparse.Namespace, model: str, protocol: str, split: dict | None):
    from poolwise.pain.loso import LosoConfig
    from poolwise.pain.train import TrainConfig

    return LosoConfig(
        model=model,
        protocol=protocol,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          patience=args.patience, min_steps=args.min_steps,
                          compile=args.compile),
        seed=args.seed,
        n_select_subjects=args.select_subjects,
        model_kwargs=dict(args.model_option),
        split=split,
    )


def _cmd_loso(args: argparse.Namespace) -> int:
    import torch

    from poolwise.pain.data.readers import load_dataset
    from poolwise.pain.loso import fold_names, run_loso
    from poolwise.pain.protocols import protocol_type, read_split

    launch = launch_from_args(args, jobs=args.jobs)
    if args.threads:
        torch.set_num_threads(args.threads)
    protocol = protocol_type(args.protocol)
    if protocol.takes_split != (args.split is not None):
        raise ValueError("--split FILE goes with --protocol challenge, and that protocol needs "
                         "it")
    dataset = load_dataset(args.data)
    split = None if args.split is None else read_split(args.split, dataset.subjects)
    config = _loso_config(args, args.model, args.protocol, split)
    n_folds = len(fold_names(dataset, config, args.folds))
    print(
        f"{args.model}, {args.protocol} protocol: {n_folds} fold{'s' * (n_folds != 1)} of "
        f"{len(dataset.subjects)} "
        f"subjects, {len(dataset)} windows -> {args.out}"
    )
    if protocol.note is not None:
        print(f"NOTE: {protocol.note}")
    announce(args, launch, args.out)
    bars = _LosoBars(args, n_folds, show_windows=args.jobs == 1 and launch.launcher == "local")

    def on_fold(record: dict, resumed: bool) -> None:
        m = record["metrics"]
        f1 = "undefined" if m["macro_f1"] is None else f"{m['macro_f1']:.3f}"
        status = "done earlier" if resumed else f"epoch {record['epoch_chosen']}"
        bars.fold_done(f"  {record['test_subject']}: macro F1 {f1} ({status})")

    def on_epoch(subject: str, record: dict) -> None:
        bars.windows().set_postfix(fold=subject, epoch=record["epoch"],
                                   loss=f"{record['train_loss']:.3f}")

    records = run_loso(
        dataset, args.out, config, folds=args.folds, launch=launch,
        on_fold=on_fold, on_epoch=on_epoch, on_batch=lambda n: bars.windows().update(n),
        on_notice=lambda text: bars.write(f"  note: {text}"), wait=args.wait,
        log_to=args.log_to,
        on_status=lambda counts: bars.folds().set_postfix(
            pending=counts["pending"], running=counts["running"], failed=counts["failed"]),
    )
    bars.close()
    print(f"{len(records)} fold files in {args.out}; merge with: poolwise pain report {args.out}")
    return 0


class _LosoBars:
    """The folds and windows progress bars of ``pain loso``, opened at their first update (so
    an error found before training prints alone) and closed by the CLI before any error."""

    def __init__(self, args: argparse.Namespace, n_folds: int, *, show_windows: bool) -> None:
        self.n_folds, self.show_windows = n_folds, show_windows
        self._folds = self._windows = None
        args.close_on_error = [self]

    def folds(self):
        from tqdm import tqdm

        if self._folds is None:
            self._folds = tqdm(total=self.n_folds, desc="folds", unit="fold")
        return self._folds

    def windows(self):
        from tqdm import tqdm

        self.folds()
        if self._windows is None:
            self._windows = tqdm(desc="windows", unit="win", leave=False,
                                 disable=not self.show_windows)
        return self._windows

    def write(self, text: str) -> None:
        self.folds().write(text)

    def fold_done(self, text: str) -> None:
        self.folds().write(text)
        self.folds().update()

    def close(self) -> None:
        for bar in (self._windows, self._folds):
            if bar is not None:
                bar.close()
        self._folds = self._windows = None


def model_names(text: str) -> list[str]:
    """A comma-separated list of registered pain model names."""
    from poolwise.pain.models import list_models

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in list_models()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none named)'}; known: "
            f"{', '.join(list_models())}")
    return names


def _cmd_compare(args: argparse.Namespace) -> int:
    import shlex
    import sys

    import torch

    from poolwise.pain.compare import compare_runs, run_compare
    from poolwise.pain.data.readers import load_dataset
    from poolwise.pain.report import write_report

    launch = launch_from_args(args, jobs=args.jobs)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = compare_runs(_loso_config(args, args.models[0], "clean", None), args.models,
                        args.seeds, args.reference)
    dataset = load_dataset(args.data)
    print(f"{len(runs)} runs ({', '.join(runs)}) of {len(dataset.subjects)} subjects, "
          f"{len(dataset)} windows -> {args.out}")
    announce(args, launch, args.out)
    bars = _LosoBars(args, len(dataset.subjects), show_windows=False)

    def on_run(name: str, config) -> None:
        bars.close()
        print(f"{name}:", flush=True)

    def on_fold(record: dict, resumed: bool) -> None:
        m = record["metrics"]
        f1 = "undefined" if m["macro_f1"] is None else f"{m['macro_f1']:.3f}"
        status = "done earlier" if resumed else f"epoch {record['epoch_chosen']}"
        bars.fold_done(f"  {record['test_subject']}: macro F1 {f1} ({status})")

    paths = run_compare(dataset, args.out, runs, launch=launch, on_run=on_run, on_fold=on_fold,
                        log_to=args.log_to,
                        on_notice=lambda text: bars.write(f"  note: {text}"))
    bars.close()
    command = args.command_line or "poolwise " + shlex.join(sys.argv[1:])
    path = write_report(paths, args.out, command=command)
    print(f"report -> {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from poolwise.pain.report import write_report

    command = args.command_line or "poolwise " + shlex.join(sys.argv[1:])
    path = write_report(args.runs, args.out or args.runs[0], command=command)
    print(f"report -> {path}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from poolwise.pain.data.readers import load_dataset
    from poolwise.pain.explain import explain_run, write_explanations

    arrays = explain_run(args.run_dir, load_dataset(args.data))
    for path in write_explanations(arrays, args.out or args.run_dir):
        print(f"wrote {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from poolwise.pain.export import export_detector

    path = export_detector(args.checkpoint, args.out, args.format, max_abs_z=args.max_z)
    print(f"wrote {path} and {path.name}.json (input: raw windows (batch, channels, window); "
          "outputs: protective-behaviour probability, and valid: False where the window is "
          "out of range or the probability is not finite)")
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    import sys

    from poolwise.pain.constants import FRAME_RATE
    from poolwise.pain.data.layout import CHANNEL_NAMES
    from poolwise.pain.detector import Detector
    from poolwise.pain.replay import iter_csv_frames, read_fame_frames
    from poolwise.pain.streaming import StreamingDetector

    detector = Detector.load(args.checkpoint, max_abs_z=args.max_z)
    config = detector.config
    if args.input.endswith(".mat"):
        detector.check(channel_names=CHANNEL_NAMES, frame_rate=FRAME_RATE)
        session = read_fame_frames(args.input)
        chunks = ((session[i:i + args.chunk], None) for i in range(0, len(session), args.chunk))
    else:
        if args.frame_rate is not None:
            detector.check(frame_rate=args.frame_rate)
        handle = sys.stdin if args.input == "-" else open(args.input, newline="")
        chunks = iter_csv_frames(handle, config.channel_names, chunk=args.chunk,
                                 name="stdin" if args.input == "-" else args.input)
    stream = StreamingDetector(detector, max_missing=args.max_missing)
    decisions = []
    print(f"# window {config.window} frames, hop {config.hop} ({config.hop / config.frame_rate:g}"
          f" s), threshold {config.threshold:.3f}; time_s start end probability label status")
    for chunk, times in chunks:
        for d in stream.push(chunk, times):
            decisions.append(d)
            p = "-" if d.probability is None else f"{d.probability:.4f}"
            label = {None: "unknown", 0: "not-protective", 1: "PROTECTIVE"}[d.label]
            print(f"{d.time_s:8.2f} {d.start} {d.end} {p} {label} {d.status}"
                  + (f" ({d.detail})" if d.detail else ""), flush=True)
    n_frames = stream.frames
    unavailable = sum(d.probability is None for d in decisions)
    kinds = {s: sum(d.status == s for d in decisions) for s in ("missing", "out-of-range",
                                                                "unavailable")}
    detail = ", ".join(f"{n} {s}" for s, n in kinds.items() if n)
    print(f"# {len(decisions)} decisions over {n_frames} frames "
          f"({n_frames / config.frame_rate:.1f} s); {unavailable} without a probability"
          + (f" ({detail})" if detail else ""))
    if args.out:
        _write_stream_outputs(Path(args.out), decisions, n_frames, config)
        print(f"# written: {args.out}/decisions.csv, frames.csv, stream.png, stream.svg")
    return 0


def _write_stream_outputs(out: Path, decisions, n_frames: int, config) -> None:
    import csv
    import io

    from poolwise._figures import figure, save_figure
    from poolwise._io import write_text
    from poolwise.pain.streaming import frame_labels

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["time_s", "start", "end", "probability", "label", "status", "detail"])
    for d in decisions:
        writer.writerow([f"{d.time_s:.4f}", d.start, d.end,
                         "" if d.probability is None else f"{d.probability:.6f}",
                         "" if d.label is None else d.label, d.status, d.detail])
    write_text(out / "decisions.csv", buffer.getvalue())
    prob, labels = frame_labels(decisions, n_frames, config.threshold)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["frame", "time_s", "probability", "label"])
    for i in range(n_frames):
        writer.writerow([i, f"{i / config.frame_rate:.4f}",
                         "" if prob[i] != prob[i] else f"{prob[i]:.6f}", int(labels[i])])
    write_text(out / "frames.csv", buffer.getvalue())
    fig = figure((10, 3))
    ax = fig.subplots()
    t = [d.time_s for d in decisions if d.probability is not None]
    ax.plot(t, [d.probability for d in decisions if d.probability is not None], ".-", ms=3,
            label="window probability (at its end)")
    ax.axhline(config.threshold, color="grey", ls="--", lw=0.8, label="threshold")
    frames_t = [i / config.frame_rate for i in range(n_frames)]
    ax.fill_between(frames_t, 0, 1, where=labels == 1, color="C3", alpha=0.15, step="post",
                    label="shading: frames predicted protective")
    ax.fill_between(frames_t, 0, 1, where=labels == -1, color="k", alpha=0.07, step="post",
                    label="shading: no decision (unknown)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(protective)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, out / "stream.png", dpi=110)


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
    from poolwise.pain.models import list_models
    from poolwise.pain.protocols import PROTOCOLS

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
    windows.add_argument("--window", type=positive_int, default=WINDOW,
                         help="frames per window")
    windows.add_argument("--step", type=positive_int, default=STEP, help="hop in frames")
    windows.set_defaults(run=_cmd_windows)

    models = sub.add_parser(
        "models",
        help="list the pain models with parameter counts",
        description="List the registered pain models.",
    )
    models.set_defaults(run=_cmd_models)

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
    loso.set_defaults(run=_cmd_loso)

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
    _add_training_options(compare)
    compare.add_argument("--threads", type=positive_int, default=None,
                         help="torch threads (one process; with --launcher slurm, each job's)")
    compare.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    add_launcher_arguments(compare, gpus=0)
    compare.set_defaults(run=_cmd_compare)

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
    explain.set_defaults(run=_cmd_explain)

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
    export.set_defaults(run=_cmd_export)

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
    stream.set_defaults(run=_cmd_stream)

    report.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    report.add_argument("--out", help="report folder (default: the first RUN folder)")
    report.add_argument(
        "--command-line", help="the command(s) that made the runs, quoted in the report"
    )
    report.set_defaults(run=_cmd_report)
