"""What each ``poolwise pain ...`` command does: calls into the library, prints, and shows
progress. The parser is :mod:`poolwise.pain.cli`; every library import is inside the command
that needs it, so building the parser loads none of them."""

from __future__ import annotations

import argparse
from pathlib import Path

from poolwise._launch_args import announce, launch_from_args


def synth(args: argparse.Namespace) -> int:
    from poolwise.pain.data.synth import write_synthetic_cohort

    files = write_synthetic_cohort(
        args.out_dir, n_subjects=args.subjects, seed=args.seed, n_healthy=args.healthy,
        fmt=args.format,
    )
    kind = ("in the raw FAME .mat layout" if args.format == "mat"
            else "as challenge-style CSV files (30 channels + protective)")
    print(f"wrote {len(files)} sessions {kind} under {args.out_dir}")
    return 0


def windows(args: argparse.Namespace) -> int:
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


def models(args: argparse.Namespace) -> int:
    from poolwise.pain.models import count_parameters, create_model, describe_models, model_entry

    print("| model | trainable parameters | export | description |\n|---|---|---|---|")
    for name, text in describe_models().items():
        entry = model_entry(name)
        size = ("fitted per fold" if entry.closed_form else
                f"{count_parameters(create_model(name)):,}")
        export = "no (not a torch graph)" if entry.closed_form else "ONNX, TorchScript"
        print(f"| {name} | {size} | {export} | {text} |")
    return 0


def _loso_config(args: argparse.Namespace, model: str, protocol: str, split: dict | None):
    from poolwise.pain.loso.run import LosoConfig
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


def loso(args: argparse.Namespace) -> int:
    import torch

    from poolwise.pain.data.readers import load_dataset
    from poolwise.pain.loso.protocols import protocol_type
    from poolwise.pain.loso.run import fold_names, run_loso
    from poolwise.pain.loso.splits import read_split

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


def compare(args: argparse.Namespace) -> int:
    import shlex
    import sys

    import torch

    from poolwise.pain.data.readers import load_dataset
    from poolwise.pain.loso.compare import compare_runs, run_compare
    from poolwise.pain.loso.report import write_report

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
    path = write_report(paths, args.report or args.out, command=command)
    print(f"report -> {path}")
    return 0


def report(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from poolwise.pain.loso.report import write_report

    command = args.command_line or "poolwise " + shlex.join(sys.argv[1:])
    path = write_report(args.runs, args.out or args.runs[0], command=command)
    print(f"report -> {path}")
    return 0


def explain(args: argparse.Namespace) -> int:
    from poolwise.pain.data.readers import load_dataset
    from poolwise.pain.deploy.explain import explain_run, write_explanations

    arrays = explain_run(args.run_dir, load_dataset(args.data))
    for path in write_explanations(arrays, args.out or args.run_dir):
        print(f"wrote {path}")
    return 0


def export(args: argparse.Namespace) -> int:
    from poolwise.pain.deploy.export import export_detector

    path = export_detector(args.checkpoint, args.out, args.format, max_abs_z=args.max_z)
    print(f"wrote {path} and {path.name}.json (input: raw windows (batch, channels, window); "
          "outputs: protective-behaviour probability, and valid: False where the window is "
          "out of range or the probability is not finite)")
    return 0


def stream(args: argparse.Namespace) -> int:
    import sys

    from poolwise.pain.constants import FRAME_RATE
    from poolwise.pain.data.layout import CHANNEL_NAMES
    from poolwise.pain.deploy.detector import Detector
    from poolwise.pain.deploy.replay import iter_csv_frames, read_fame_frames
    from poolwise.pain.deploy.streaming import StreamingDetector

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
        from poolwise.pain.deploy.stream_report import write_stream_outputs

        write_stream_outputs(Path(args.out), decisions, n_frames, config)
        print(f"# written: {args.out}/decisions.csv, frames.csv, stream.png, stream.svg")
    return 0
