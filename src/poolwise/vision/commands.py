"""What each ``poolwise vision ...`` command does: resolves the run's spec, calls into the
library, prints, and shows progress. The parser is :mod:`poolwise.vision.cli`; every library
import is inside the command that needs it, so building the parser loads none of them."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from poolwise._argtypes import positive_float, positive_int
from poolwise._launch_args import StatusBar, announce, launch_from_args

# timm's architecture options, the same flags and checks on every command that builds a ViT
ARCH_OPTIONS = (("img_size", positive_int), ("patch_size", positive_int),
                ("embed_dim", positive_int), ("depth", positive_int), ("num_heads", positive_int),
                ("mlp_ratio", positive_float))


def _spec(args: argparse.Namespace, pool: str | None, seed: int | None):
    """The RunSpec of a command (:func:`poolwise.vision.train.recipe.resolve_spec`)."""
    import dataclasses

    from poolwise.vision.train.recipe import resolve_spec
    from poolwise.vision.train.spec import RunSpec

    names = {f.name for f in dataclasses.fields(RunSpec)}
    options = {k: v for k, v in vars(args).items() if k in names}
    options.update({k: v for k, v in (("pool", pool), ("seed", seed)) if v is not None})
    return resolve_spec(options, recipe=args.recipe, preset=args.preset,
                        model_kwargs={name: getattr(args, name) for name, _ in ARCH_OPTIONS},
                        defaults=args.command_defaults)


def _model_line(info: dict) -> str:
    """One line for a person: ``vit_tiny_patch16_224: 0.45M parameters, 4x4 patches of 7x7 ...``."""
    parts = [f"{info['name']}: {info['parameters'] / 1e6:.2f}M parameters"]
    if info["patch_grid"]:
        parts.append(f"{'x'.join(map(str, info['patch_grid']))} patches of "
                     f"{'x'.join(map(str, info['patch_size']))}")
    parts.append(f"{info['prefix_tokens']} prefix tokens")
    if info["heads"]:
        parts.append(f"{info['heads']} heads")
    parts.append(f"pool {info['pool']}" + (f" ({info['groups']} groups)" if info["groups"] else ""))
    if info["norm"]:
        parts.append(f"final norm on {info['norm']}")
    return ", ".join(parts)


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _epoch_printer(prefix: str = ""):
    def show(r: dict) -> None:
        p = "" if not r.get("p") else " p=[" + ", ".join(f"{v:.2f}" for v in r["p"][:8]) + "]"
        key = "test_accuracy" if "test_accuracy" in r else "test_recall@1"
        title = "test accuracy" if key == "test_accuracy" else "test Recall@1"
        ema = f" (ema {100 * r['ema_' + key]:.2f}%)" if "ema_" + key in r else ""
        print(f"{prefix}epoch {r['epoch']}: train loss {r['train_loss']:.4f}, {title} "
              f"{100 * r[key]:.2f}%{ema} ({r['seconds']:.0f}s){p}", flush=True)
    return show


class _Bar:
    """A per-epoch batch progress bar (``on_batch``); the CLI closes it before an error."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.bar = None
        args.close_on_error = [self]

    def __call__(self, step: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None or step == 1:
            self.close()
            self.bar = tqdm(total=total, unit="batch", leave=False, file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train(args: argparse.Namespace) -> int:
    from poolwise.vision.train.classification import launch_classification, run_classification

    launch = launch_from_args(args)
    _threads(args)
    spec = _spec(args, args.pool, args.seed)
    if launch.launcher == "local":
        result = run_classification(
            spec, args.out, on_epoch=_epoch_printer(), on_batch=_Bar(args),
            workers=args.workers, on_model=lambda info: print(_model_line(info), flush=True),
            log_to=args.log_to)
    else:
        announce(args, launch, args.out)
        result = launch_classification(spec, args.out, launch, workers=args.workers,
                                       log_to=args.log_to, on_status=StatusBar(args, 1))
    if not result:  # a non-zero rank under torchrun
        return 0
    ret = result["retrieval"]
    accuracy = ("not trained (metric-learning loss)" if result["accuracy"] is None
                else f"{100 * result['accuracy']:.2f}%")
    print(f"{args.out}: test accuracy {accuracy}, Recall@1 "
          f"{100 * ret['recall@1']:.2f}%, mAP@R {100 * ret['map@r']:.2f}%"
          + (f", head dependence {result['dependence']:.3f}" if "dependence" in result else ""))
    if "ema" in result:
        ema = result["ema"]
        print(f"{args.out}: ema weights: Recall@1 {100 * ema['retrieval']['recall@1']:.2f}%"
              + ("" if ema["accuracy"] is None
                 else f", test accuracy {100 * ema['accuracy']:.2f}%"))
    if result.get("p"):
        print("learned p: " + ", ".join(f"{v:.3f}" for v in result["p"]))
    return 0


def retrieval(args: argparse.Namespace) -> int:
    from poolwise.vision.retrieval.run import run_retrieval

    _threads(args)
    result = run_retrieval(_spec(args, args.pool, args.seed), args.out,
                           whitening=args.whitening, on_epoch=_epoch_printer(),
                           on_batch=_Bar(args), log_to=args.log_to)
    print("| test classes | Recall@1 | Recall@2 | Recall@4 | Recall@8 | R-precision | mAP@R |")
    print("|---|---|---|---|---|---|---|")
    for name in [n for n in ("unseen", "unseen_whitened", "seen", "seen_whitened")
                 if result.get(n) is not None]:
        m = result[name]
        classes = result[name.removesuffix("_whitened") + "_classes"]
        label = name.replace("_whitened", ", learned whitening")
        print(f"| {label} ({', '.join(classes)}) | " + " | ".join(
            f"{100 * m[k]:.2f}" for k in ("recall@1", "recall@2", "recall@4", "recall@8",
                                           "r_precision", "map@r")) + " |")
    print(f"written: {Path(args.out) / 'retrieval.json'}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from poolwise.vision.compare import run_compare, task_named, write_compare_report

    _threads(args)
    task = args.task
    if args.protocol is not None:
        if args.task != "classification" and args.task != args.protocol:
            raise ValueError(f"--protocol {args.protocol} and --task {args.task}: "
                             "give --task only")
        print(f"note: --protocol is renamed --task; run with --task {args.protocol}",
              file=sys.stderr)
        task = args.protocol
    pools = args.pools
    seeds = list(range(args.seeds))
    base = _spec(args, pools[0], 0)
    print(f"{len(pools)} pools x {len(seeds)} seeds on {base.data}: {base.model} "
          f"{json.dumps(base.model_kwargs)}, {base.epochs} epochs", flush=True)

    def on_cell(pool: str, seed: int, r: dict) -> None:
        first = task_named(task).first_number(r)
        print(f"  {pool} seed {seed}: {first[0]} {100 * first[1]:.2f}%, mAP@R "
              f"{100 * r['retrieval']['map@r']:.2f}%", flush=True)

    def on_epoch(pool: str, seed: int, r: dict) -> None:
        _epoch_printer(f"    {pool}/{seed} ")(r)

    launch = launch_from_args(args, jobs=args.jobs)
    announce(args, launch, args.out)
    in_process = args.jobs <= 1 and launch.launcher == "local"
    results = run_compare(args.out, base, pools, seeds, task=task, launch=launch,
                          on_cell=on_cell, on_epoch=on_epoch if in_process else None,
                          on_status=StatusBar(args, len(pools) * len(seeds)),
                          log_to=args.log_to)
    command = args.command_line or "poolwise " + shlex.join(sys.argv[1:])
    report = write_compare_report(args.out, results, command, task=task)
    print(f"\nreport: {report}")
    text = report.read_text()
    print(text[text.index("| pool"): text.index("![")].strip())
    return 0


def dependence(args: argparse.Namespace) -> int:
    from poolwise.vision.train.classification import run_dependence
    from poolwise.vision.train.dependence import (
        dependence_table,
        find_run_folders,
        write_dependence_report,
    )

    _threads(args)
    runs = find_run_folders(args.runs)
    rows = [run_dependence(r, max_images=args.max_images) for r in runs]
    print(dependence_table(rows))
    if args.out:
        print(f"written: {write_dependence_report(args.out, rows)}")
    return 0


def export(args: argparse.Namespace) -> int:
    from poolwise.vision.export import export_run

    path = export_run(args.run_dir, args.out, args.format, embedding=args.embedding)
    print(f"wrote {path} and {path.name}.json")
    return 0


def convert_gnd(args: argparse.Namespace) -> int:
    from poolwise._io import write_json
    from poolwise.vision.retrieval.revisited import read_ground_truth_pickle

    table = read_ground_truth_pickle(args.pickle)
    write_json(args.out, table)
    print(f"{args.out}: {len(table['qimlist'])} queries, {len(table['imlist'])} database images")
    return 0


def revisited(args: argparse.Namespace) -> int:
    from poolwise.vision.retrieval.landmarks import evaluate_revisited, write_revisited_report

    result = evaluate_revisited(args.run_dir, args.images, args.gnd, extension=args.ext,
                                batch_size=args.batch_size, ema=args.ema)
    command = "poolwise " + shlex.join(sys.argv[1:])
    table = write_revisited_report(args.out, result, args.run_dir, command)
    print(table)
    print(f"wrote {Path(args.out) / 'revisited.json'} and {Path(args.out) / 'revisited.md'}")
    return 0


def _clip_spec(args: argparse.Namespace, pool: str, seed: int):
    from poolwise.vision.clip.train import ClipSpec

    return ClipSpec(model=args.model, pretrained=args.pretrained, pool=pool, groups=args.groups,
                    data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    p_lr_mult=args.p_lr_mult, seed=seed)


def _print_clip(result: dict) -> None:
    keys = [k for k in result if "R@" in k or k == "zero-shot accuracy"]
    print(" | ".join(f"{k} {100 * result[k]:.2f}%" for k in keys))
    if result.get("p"):
        print("learned p: " + ", ".join(f"{v:.3f}" for v in result["p"]))


def clip_train(args: argparse.Namespace) -> int:
    from poolwise.vision.clip.train import run_clip

    _threads(args)

    def show(r: dict) -> None:
        print(f"epoch {r['epoch']}: loss {r['train_loss']:.4f}, temperature scale "
              f"{r['logit_scale']:.1f} ({r['seconds']:.0f}s)", flush=True)

    def model_line(info: dict) -> None:
        grid = f", {'x'.join(map(str, info['patch_grid']))} patches" if info["patch_grid"] else ""
        groups = f" ({info['groups']} groups)" if info["groups"] else ""
        print(f"CLIP {info['name']}: {info['parameters'] / 1e6:.2f}M parameters (image tower "
              f"{info['image_parameters'] / 1e6:.2f}M{grid}), pool {info['pool']}{groups}",
              flush=True)

    _print_clip(run_clip(_clip_spec(args, args.pool, args.seed), args.out, on_epoch=show,
                         on_batch=_Bar(args), on_model=model_line, log_to=args.log_to))
    return 0


def clip_compare(args: argparse.Namespace) -> int:
    from poolwise.vision.clip.compare import run_clip_compare, write_clip_report

    _threads(args)
    pools = args.pools

    def on_cell(pool: str, seed: int, r: dict) -> None:
        print(f"  {pool} seed {seed}: image->text R@1 {100 * r['image->text R@1']:.2f}%, "
              f"text->image R@1 {100 * r['text->image R@1']:.2f}%", flush=True)

    launch = launch_from_args(args, jobs=args.jobs)
    announce(args, launch, args.out)
    results = run_clip_compare(args.out, _clip_spec(args, pools[0], 0), pools,
                               list(range(args.seeds)), launch=launch, on_cell=on_cell,
                               on_status=StatusBar(args, len(pools) * args.seeds),
                               log_to=args.log_to)
    command = args.command_line or "poolwise " + shlex.join(sys.argv[1:])
    report = write_clip_report(args.out, results, command)
    text = report.read_text()
    print(f"\nreport: {report}")
    print(text[text.index("| pool"):text.index("![")].strip())
    return 0


def open_clip_train(args: argparse.Namespace) -> int:
    from poolwise.vision.clip.recipe import run_open_clip_recipe

    recipe_args = args.recipe_args[1:] if args.recipe_args[:1] == ["--"] else args.recipe_args
    if not recipe_args:
        print("error: give open_clip's training arguments after --, e.g. "
              "poolwise vision open-clip-train --pool ggem -- --model ViT-B-32 --train-data ...",
              file=sys.stderr)
        return 2
    run_open_clip_recipe(recipe_args, pool=args.pool, groups=args.groups,
                         include_prefix_tokens=args.include_prefix_tokens)
    return 0


def recipes(args: argparse.Namespace) -> int:
    from poolwise.vision.train.recipe import shipped_recipes

    for name, path in shipped_recipes().items():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                      if line.startswith("#")), "")
        print(f"{name:<22} {first}  ({path})")
    return 0


def probe(args: argparse.Namespace) -> int:
    import time

    from poolwise.vision.probe import ProbeSpec, run_probe, write_probe_report
    from poolwise.vision.train.recipe import with_data_image_size

    _threads(args)
    kwargs = {name: getattr(args, name) for name, _ in ARCH_OPTIONS
              if getattr(args, name) is not None}
    kwargs = with_data_image_size(args.model, kwargs, args.data)
    spec = ProbeSpec(model=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
                     model_kwargs=kwargs, data=args.data, dtype=args.dtype,
                     pools=args.pools,
                     seeds=args.seeds, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, p_lr_mult=args.p_lr_mult)
    bar = _Bar(args)
    start = time.perf_counter()

    def on_cell(record: dict, resumed: bool) -> None:
        bar.close()
        cell = record["spec"]
        status = "done earlier" if resumed else f"{record['train_seconds']:.1f} s"
        print(f"  {cell['pool']} seed {cell['seed']}: top-1 {100 * record['accuracy']:.2f}%, "
              f"Recall@1 {100 * record['retrieval']['recall@1']:.2f}% ({status})", flush=True)

    launch = launch_from_args(args)
    announce(args, launch, args.out)
    meta, records = run_probe(spec, args.out, on_batch=lambda split, step, total: bar(
        step, total), on_cell=on_cell, launch=launch,
        on_status=StatusBar(args, len(spec.pools) * spec.seeds))
    print(f"tokens: {meta['shapes']['train']} train, {meta['shapes']['test']} test "
          f"({spec.dtype}), computed once in {meta['seconds']:.1f} s; all heads "
          f"{time.perf_counter() - start:.1f} s in this call")
    for line in meta.get("load_report") or []:
        print(f"  {line}")
    path = write_probe_report(args.out, spec, meta, records,
                              "poolwise " + shlex.join(sys.argv[1:]))
    print(f"report: {path}")
    return 0
