"""``poolwise vision ...``: the parser of the vision commands; what each one does is in
:mod:`poolwise.vision.commands`."""

from __future__ import annotations

import argparse
import json

from poolwise._argtypes import pool_names, positive_float, positive_int
from poolwise._launch_args import add_launcher_arguments, add_log_argument
from poolwise.vision import commands as cmd
from poolwise.vision.commands import ARCH_OPTIONS


def _add_arch_options(p: argparse.ArgumentParser) -> None:
    for name, kind in ARCH_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"timm's {name} (default: the model's own"
                       + (", or the data's image size)" if name == "img_size" else ")"))


def _add_spec_options(p: argparse.ArgumentParser, epochs: int) -> None:
    add_log_argument(p)
    from poolwise.runs.loop import AMP_DTYPES
    from poolwise.vision.models import NORM_PLACEMENTS
    from poolwise.vision.retrieval.losses import LOSSES
    from poolwise.vision.train.presets import DEFAULT_MODEL, DEFAULT_PRESET, PRESETS

    p.add_argument("--recipe", default=None,
                   help="a TOML recipe file, or the name of a shipped one (`poolwise vision "
                   "recipes`); options given here override it")
    p.add_argument("--data", default=None,
                   help="'embedded' (the shipped Fashion-MNIST subset), 'fashion-mnist' (the full "
                   "set: Debian package folder, cache or download), a folder with the idx files, "
                   "or an ImageFolder tree with train/ and test/ (default: embedded)")
    p.add_argument("--model", default=None,
                   help=f"any timm model name, built as timm defines it (default: {DEFAULT_MODEL}"
                   f" with --preset {DEFAULT_PRESET}, a small ViT for 28x28 images)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="resize a ViT: tiny28 = patch 7, width 96, depth 4, 6 heads, MLP x2 "
                   "(options you set win); only when asked for, never with --pretrained or "
                   "--checkpoint")
    _add_arch_options(p)
    p.add_argument("--groups", type=positive_int, default=None, help="GGeM groups (default: heads)")
    p.add_argument("--norm", choices=NORM_PLACEMENTS, default=None,
                   help="final LayerNorm before pooling (tokens) or after (pooled); default: "
                   "the timm model's own placement")
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="timm's pretrained weights")
    p.add_argument("--checkpoint", default=None, help="local timm/poolwise weights to start from")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"epochs (default: the recipe's, else {epochs})")
    for flag, kind, text in SPEC_OPTIONS:
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="cross_entropy (classification), or a pytorch-metric-learning loss on "
                   "the embedding with class-balanced batches (needs poolwise[metric]); "
                   "default: the recipe's, else cross_entropy")
    p.add_argument("--m-per-class", type=positive_int, default=None,
                   help="images per class in a batch for the metric-learning losses "
                   "(default: 4)")
    p.add_argument("--proxy-lr-mult", type=positive_float, default=None,
                   help="lr multiplier of Proxy Anchor's proxies (default: 100)")
    p.add_argument("--amp", choices=list(AMP_DTYPES), default=None,
                   help="autocast: bf16 (CPU and CUDA) or fp16 (with a gradient scaler); "
                   "default: the recipe's, else none")
    p.add_argument("--pool-kwargs", type=_json_object, default=None,
                   help='extra pool arguments as JSON, e.g. \'{"negative": "softplus"}\'')
    p.add_argument("--classes", type=_class_list, default=None,
                   help="train and evaluate on these class indices only, e.g. 0,1,7 (all)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no training augmentation")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="channels-last memory format")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training forward")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads per process")
    p.set_defaults(command_defaults={"epochs": epochs})


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _class_list(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of class "
                                         "indices") from None


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _optional_str(text: str) -> str | None:
    return None if text.lower() == "none" else text


# (flag, type, help) of the RunSpec fields that are plain values; defaults come from RunSpec
SPEC_OPTIONS = (
    ("--batch-size", positive_int, "images per step and process (128)"),
    ("--accum-steps", positive_int, "batches per optimizer step (1)"),
    ("--opt", str, "a timm optimizer name (adamw)"),
    ("--lr", positive_float, "base learning rate (1e-3)"),
    ("--weight-decay", float, "weight decay (0.05; none on biases, norms, tokens, p)"),
    ("--layer-decay", _optional_float, "layer-wise lr decay, e.g. 0.65 (off)"),
    ("--p-lr-mult", float, "lr multiplier of the pool's p (10)"),
    ("--sched", str, "a timm scheduler, stepped per optimizer step (cosine)"),
    ("--warmup-epochs", float, "linear warm-up epochs (1)"),
    ("--warmup-lr", float, "lr at the start of warm-up (0)"),
    ("--min-lr", float, "lr at the end of the schedule (0)"),
    ("--clip-grad", _optional_float, "gradient-norm clipping (off)"),
    ("--drop-path", float, "stochastic depth rate, timm's drop_path_rate (0)"),
    ("--label-smoothing", float, "label smoothing (0)"),
    ("--mixup", float, "Mixup alpha, timm's Mixup with soft targets (0: off)"),
    ("--cutmix", float, "CutMix alpha (0: off)"),
    ("--mixup-prob", float, "probability of Mixup/CutMix per batch (1)"),
    ("--ema-decay", _optional_float, "EMA of the weights, timm's ModelEmaV3, e.g. 0.9999 (off)"),
    ("--hflip", float, "horizontal-flip probability (0.5)"),
    ("--auto-augment", _optional_str, "timm RandAugment string for ImageFolder data, e.g. "
     "rand-m9-mstd0.5-inc1 (off)"),
    ("--reprob", float, "RandomErasing probability for ImageFolder data (0)"),
)


def _add_clip_options(p: argparse.ArgumentParser) -> None:
    add_log_argument(p)
    p.add_argument("--data", default="embedded",
                   help="'embedded' or 'fashion-mnist' (built-in captions), or TRAIN.csv,TEST.csv "
                   "(tab-separated 'filepath' and 'title' columns, as open_clip reads them)")
    p.add_argument("--model", default=None,
                   help="an open_clip model name (default: the built-in tiny dual encoder)")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag")
    p.add_argument("--groups", type=positive_int, default=None, help="GGeM groups (default: heads)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs")
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="image-caption pairs per step (the contrastive batch)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--p-lr-mult", type=float, default=10.0,
                   help="lr multiplier of the pool's p")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per process (default: torch's)")
    p.add_argument("--out", required=True, help="run folder (resumes if it exists)")


def add_vision_commands(commands: argparse._SubParsersAction) -> None:
    from poolwise._export import FORMATS
    from poolwise.pooling import list_pools
    from poolwise.pooling.registry import COMPARED
    from poolwise.vision.compare import TASKS
    from poolwise.vision.probe import DTYPES

    vision = commands.add_parser("vision", help="GGeM and other pools on timm models (images)",
                                 description="Image classification, retrieval, pool comparisons "
                                 "and head-wise dependence with pooled timm models.")
    sub = vision.add_subparsers(dest="vision_command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train a classifier; resumable run folder",
                           description="Train a pooled timm model for classification. Under "
                           "torchrun it runs data-parallel (DDP) with no other change.")
    _add_spec_options(train, epochs=10)
    train.add_argument("--pool", default=None, choices=list_pools(),
                       help="a registered pool (default: the recipe's, else ggem)")
    train.add_argument("--seed", type=int, default=None,
                       help="seed of initialisation, order and augmentation (default: 0)")
    train.add_argument("--workers", type=int, default=0,
                       help="DataLoader worker processes, for training and evaluation (0)")
    train.add_argument("--out", required=True, help="run folder (resumes if it exists)")
    add_launcher_arguments(train, gpus=1, training=True)
    train.set_defaults(run=cmd.train)

    retrieval = sub.add_parser("retrieval", help="class-disjoint retrieval: train on half of "
                               "the classes, retrieve the other half",
                               description="Train a pooled timm model on the first half of the "
                               "classes and score k-NN retrieval (Recall@K, R-precision, mAP@R) "
                               "on the test images of the unseen other half, and of the seen "
                               "half for comparison. Resumable run folder.")
    _add_spec_options(retrieval, epochs=10)
    retrieval.add_argument("--pool", default=None, choices=list_pools(),
                       help="a registered pool (default: the recipe's, else ggem)")
    retrieval.add_argument("--seed", type=int, default=None,
                       help="seed of initialisation, order and augmentation (default: 0)")
    retrieval.add_argument("--whitening", action="store_true",
                           help="also score after a learned whitening fitted on the training "
                           "images' embeddings (GeM-style: within-class scatter whitened, "
                           "principal axes first)")
    retrieval.add_argument("--out", required=True, help="run folder (resumes if it exists)")
    retrieval.set_defaults(run=cmd.retrieval)

    compare = sub.add_parser("compare", help="pools x seeds grid: table, verdict, plots",
                             description="Train one model per pool and seed (each an ordinary "
                             "resumable run folder under OUT), then write compare.md (mean ± "
                             "std over seeds, paired verdicts), compare.json, compare.csv and "
                             "plots. --task retrieval makes each cell a class-disjoint "
                             "`vision retrieval` run.")
    _add_spec_options(compare, epochs=5)
    compare.add_argument("--task", choices=TASKS, default="classification",
                         help="classification: train on every class, score the test images; "
                         "retrieval: train on some classes, retrieve the unseen others")
    compare.add_argument("--protocol", choices=TASKS, default=None,
                         help=argparse.SUPPRESS)  # the former name of --task
    compare.add_argument("--pools", type=pool_names, default=",".join(COMPARED),
                         help="comma-separated registered pool names")
    compare.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 per pool")
    compare.add_argument("--jobs", type=positive_int, default=1,
                         help="cells trained in parallel processes")
    compare.add_argument("--out", required=True, help="grid folder (resumes cell by cell)")
    compare.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    add_launcher_arguments(compare, gpus=1)
    compare.set_defaults(run=cmd.compare)

    export = sub.add_parser("export", help="export a trained run to ONNX or TorchScript",
                            description="Export a finished `vision train` run: images in "
                            "(dynamic batch axis), class probabilities (or --embedding) out; "
                            "GGeM as plain ops.")
    export.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    export.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx: torch's maintained exporter (needs poolwise[onnx]); "
                        "torchscript: deprecated (PyTorch no longer develops TorchScript)")
    export.add_argument("--embedding", action="store_true", help="output the pooled embedding")
    export.add_argument("--out", help="output file, not one of the run's own (default: "
                        "RUN/export/model.onnx or .pt)")
    export.set_defaults(run=cmd.export)

    from poolwise.pooling import list_pools

    clip_train = sub.add_parser("clip-train", help="CLIP-style image-text training with a pool "
                                "on the image tower (open_clip)",
                                description="Contrastive image-text training; resumable run "
                                "folder. Under torchrun it runs data-parallel (DDP), the loss "
                                "over the whole gathered batch.")
    _add_clip_options(clip_train)
    clip_train.add_argument("--pool", default="ggem", choices=list_pools(),
                            help="a registered pool for the image tower")
    clip_train.add_argument("--seed", type=int, default=0,
                            help="seed of initialisation and order")
    clip_train.set_defaults(run=cmd.clip_train)

    clip_compare = sub.add_parser("clip-compare", help="pools x seeds for CLIP-style training",
                                  description="One CLIP-style run per pool and seed (resumable "
                                  "run folders under OUT), then clip_compare.md (image->text "
                                  "and text->image R@K, zero-shot accuracy; mean ± std over "
                                  "seeds, verdicts), clip_compare.json and a plot.")
    _add_clip_options(clip_compare)
    clip_compare.add_argument("--pools", type=pool_names, default=",".join(COMPARED),
                              help="comma-separated registered pool names")
    clip_compare.add_argument("--seeds", type=positive_int, default=3,
                              help="seeds 0..N-1 per pool")
    clip_compare.add_argument("--jobs", type=positive_int, default=1,
                              help="runs trained in parallel processes")
    clip_compare.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    add_launcher_arguments(clip_compare, gpus=1)
    clip_compare.set_defaults(run=cmd.clip_compare)

    recipe = sub.add_parser(
        "open-clip-train", help="open_clip's own training recipe with a pool on the image tower",
        description="Runs open_clip_train.main with every argument after -- unchanged; the "
        "image tower's pooling is replaced right after the model (and any pretrained weights) "
        "is built. Works under torchrun like the recipe itself.")
    recipe.add_argument("--pool", default="ggem", choices=list_pools(),
                        help="a registered pool for the image tower")
    recipe.add_argument("--groups", type=positive_int, default=None,
                        help="GGeM groups (default: heads)")
    recipe.add_argument("--include-prefix-tokens", action="store_true",
                        help="pool the CLS token too (default: patch tokens only)")
    recipe.add_argument("recipe_args", nargs=argparse.REMAINDER,
                        help="-- then open_clip_train.main's arguments")
    recipe.set_defaults(run=cmd.open_clip_train)

    probe = sub.add_parser(
        "probe", help="frozen-backbone pool probe: every pool on a ViT's cached final tokens",
        description="Run a (pretrained or checkpointed) ViT once over the images, cache its "
        "final tokens on disk, then train every pool + a linear head on the cached tokens for "
        "several seeds and score k-NN retrieval on the pooled features: one table with the "
        "learned p. Resumable; the backbone never runs twice for the same configuration.")
    probe.add_argument("--model", required=True, help="a timm ViT name")
    _add_arch_options(probe)
    weights = probe.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true",
                         help="timm's pretrained weights (needs the hub or timm's cache)")
    weights.add_argument("--checkpoint", default=None,
                         help="local weights: a poolwise model.safetensors or a timm checkpoint")
    probe.add_argument("--data", default="embedded",
                       help="as for `vision train`")
    probe.add_argument("--pools", type=pool_names, default=",".join(COMPARED),
                       help="comma-separated registered pools")
    probe.add_argument("--seeds", type=positive_int, default=3, help="seeds per pool")
    probe.add_argument("--epochs", type=positive_int, default=30,
                       help="epochs of each head on the cached tokens")
    probe.add_argument("--batch-size", type=positive_int, default=256,
                       help="cached token sets per step")
    probe.add_argument("--lr", type=positive_float, default=3e-3, help="AdamW learning rate")
    probe.add_argument("--p-lr-mult", type=positive_float, default=10.0,
                       help="lr multiplier of the pool's p")
    probe.add_argument("--dtype", choices=DTYPES, default="float16",
                       help="storage of the cached tokens")
    probe.add_argument("--threads", type=positive_int, default=None,
                       help="torch threads (default: torch's)")
    probe.add_argument("--out", required=True, help="probe folder (tokens, cells, report)")
    add_launcher_arguments(probe, gpus=0)
    probe.set_defaults(run=cmd.probe)

    gnd = sub.add_parser(
        "convert-gnd", help="revisited Oxford/Paris ground truth: safe pickle to JSON",
        description="Read a revisited Oxford/Paris ground-truth pickle (gnd_roxford5k.pkl, "
        "gnd_rparis6k.pkl) without executing anything (every opcode must build plain data) "
        "and write the documented JSON form that poolwise.vision.retrieval.revisited reads.")
    gnd.add_argument("pickle", help="the ground-truth .pkl file")
    gnd.add_argument("--out", required=True, help="the JSON file to write")
    gnd.set_defaults(run=cmd.convert_gnd)

    rev = sub.add_parser(
        "revisited", help="evaluate a finished run on revisited Oxford/Paris (E/M/H mAP)",
        description="Embed the database and the box-cropped queries of a revisited "
        "Oxford/Paris ground truth with a finished run's model (its timm eval transform, "
        "L2-normalised pre-logits embeddings), rank by cosine similarity and print Easy / "
        "Medium / Hard mAP and mP@1/5/10; writes revisited.json and revisited.md into OUT.")
    rev.add_argument("run_dir", help="a finished `vision train` or `vision retrieval` run")
    rev.add_argument("--images", required=True,
                     help="the folder of the data set's images (<name><ext> for every name of "
                     "imlist and qimlist)")
    rev.add_argument("--gnd", required=True,
                     help="the ground truth in poolwise's JSON form (`vision convert-gnd`)")
    rev.add_argument("--ext", default=".jpg", help="file extension of the images")
    rev.add_argument("--ema", action="store_true", help="evaluate the run's EMA weights")
    rev.add_argument("--batch-size", type=positive_int, default=32, help="images per batch")
    rev.add_argument("--out", required=True, help="folder for revisited.json and revisited.md")
    rev.set_defaults(run=cmd.revisited)

    recipes = sub.add_parser("recipes", help="list the shipped recipe files",
                             description="List the recipes shipped with poolwise (TOML files "
                             "for `vision train --recipe NAME`), with their first comment line.")
    recipes.set_defaults(run=cmd.recipes)

    dep = sub.add_parser("dependence", help="head-wise dependence (linear CKA between groups)",
                         description="For finished `vision train` runs (or folders of runs, "
                         "such as a compare grid): the linear CKA between the pooled features "
                         "of each pair of head groups on the test images, mean and max per "
                         "run, as a Markdown table (lower = less dependent groups).")
    dep.add_argument("runs", nargs="+", help="run folders, or folders of run folders")
    dep.add_argument("--max-images", type=positive_int, default=None,
                     help="use the first N test images (default: all)")
    dep.add_argument("--threads", type=positive_int, default=None,
                     help="torch threads (default: torch's)")
    dep.add_argument("--out", default=None, help="folder for dependence.md/json")
    dep.set_defaults(run=cmd.dependence)
