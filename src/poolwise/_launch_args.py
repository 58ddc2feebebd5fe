"""The options every command that trains shares: the launcher (``--launcher``, ``--slurm-*``,
``--no-wait``, turned into a :class:`poolwise.runs.Launch`) and the log sinks
(``--log-to``); and the progress bar of a SLURM grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from poolwise._argtypes import positive_float, positive_int
from poolwise.runs.launch import Launch
from poolwise.runs.slurm import SlurmOptions

# (option, SlurmOptions field, type, help)
_SLURM_FLAGS = (
    ("--slurm-partition", "partition", str, "partition (default: the cluster's default)"),
    ("--slurm-time", "time_min", positive_int, "time limit of each job, minutes"),
    ("--slurm-cpus", "cpus_per_task", positive_int,
     "CPUs of each task (it runs with this many torch threads unless --threads)"),
    ("--slurm-gpus", "gpus_per_task", int, "GPUs of each cell's job (0: none)"),
    ("--slurm-mem", "mem_gb", positive_float,
     "memory of each job per node, GB (default: the cluster's)"),
    ("--slurm-account", "account", str, "account to charge"),
    ("--slurm-qos", "qos", str, "quality of service"),
    ("--slurm-constraint", "constraint", str, "node features (sbatch --constraint)"),
    ("--slurm-array-parallelism", "array_parallelism", positive_int,
     "most array elements running at once"),
)


def _sink_names(text: str) -> tuple[str, ...]:
    from poolwise.runs.sinks import check_sinks

    try:
        return check_sinks(name.strip() for name in text.split(",") if name.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-to``: where each epoch's record goes besides ``log.jsonl``."""
    parser.add_argument("--log-to", type=_sink_names, default=(), metavar="SINKS",
                        help="also log every epoch to, comma-separated: tensorboard (event "
                        "files in OUT/tensorboard/, one subfolder per LOSO fold), mlflow (one "
                        "run per training, to MLFLOW_TRACKING_URI), wandb (one run per "
                        "training, files in OUT/wandb/; WANDB_MODE=offline keeps them local); "
                        "pip install 'poolwise[NAME]'")


def _sbatch_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. mail-type=END)")
    if key in ("nodes", "N", "ntasks", "ntasks-per-node", "array"):
        raise argparse.ArgumentTypeError(
            f"--slurm {key}=... is not allowed: every cell of a grid is one task on one node, "
            "and poolwise makes the job array itself")
    return key, value.strip()


def add_launcher_arguments(parser: argparse.ArgumentParser, *, gpus: int,
                           training: bool = False) -> None:
    """``--launcher`` and the scheduler's options; ``gpus``: GPUs per cell by default (1 where
    a cell trains a ViT, 0 for the pain models). ``training``: one run, not a grid: one SLURM
    job of ``--nodes`` x ``--tasks-per-node`` tasks (one per GPU) instead of a job array."""
    group = parser.add_argument_group(
        "launcher", ("where the run goes: this machine (local) or one SLURM job of --nodes x "
                     "--tasks-per-node tasks, one per GPU, trained with DDP (slurm)"
                     if training else
                     "where the cells run: this machine (local) or one SLURM job-array element "
                     "per cell (slurm)")
        + "; pip install 'poolwise[slurm]'. Options come from --slurm-config, then the flags "
        "below; they are printed when the job is submitted")
    group.add_argument("--launcher", choices=("local", "slurm"), default="local",
                       help="where the cells run")
    group.add_argument("--slurm-config", type=Path, default=None, metavar="FILE",
                       help="TOML file of scheduler options (keys: partition, time_min, "
                       "cpus_per_task, gpus_per_task, mem_gb, account, qos, constraint, "
                       "array_parallelism, signal_delay_s, nodes and tasks_per_node for "
                       "training, and a table [extra] of other sbatch options)")
    defaults = SlurmOptions(gpus_per_task=gpus)
    for flag, field, kind, text in _SLURM_FLAGS:
        if training and field in ("gpus_per_task", "array_parallelism"):
            continue
        value = getattr(defaults, field)
        group.add_argument(flag, type=kind, default=None, metavar=field.split("_")[0].upper(),
                           help=text if value is None else f"{text} (default: {value})")
    group.add_argument("--slurm", type=_sbatch_option, action="append", default=None,
                       metavar="KEY=VALUE",
                       help="any other sbatch option, repeatable (--slurm mail-type=END)")
    group.add_argument("--no-wait", dest="slurm_wait", action="store_false",
                       help="with --launcher slurm: return once the cells are queued; the same "
                       "command run again collects them and writes the report")
    if training:
        group.add_argument("--nodes", type=positive_int, default=None,
                           help="nodes of the job (default: 1)")
        group.add_argument("--gpus-per-node", type=int, default=None,
                           help=f"GPUs per node, one task each (default: {gpus})")
        group.add_argument("--tasks-per-node", type=positive_int, default=None,
                           help="tasks per node (default: --gpus-per-node, or 1 without GPUs; "
                           "several CPU tasks train with gloo)")
    parser.set_defaults(slurm_gpus_default=gpus, slurm_training=training)


def launch_from_args(args: argparse.Namespace, *, jobs: int = 1) -> Launch:
    """The :class:`poolwise.runs.Launch` the options describe."""
    slurm_flags = [flag for flag, field, _, _ in _SLURM_FLAGS
                   if getattr(args, field_attr(flag), None) is not None]
    slurm_flags += [flag for flag in ("--nodes", "--gpus-per-node", "--tasks-per-node")
                    if getattr(args, field_attr(flag), None) is not None]
    if args.launcher != "slurm":
        used = slurm_flags + (["--slurm KEY=VALUE"] if args.slurm else []) + \
            (["--slurm-config"] if args.slurm_config else []) + \
            ([] if args.slurm_wait else ["--no-wait"])
        if used:
            raise ValueError(f"{', '.join(used)} go(es) with --launcher slurm")
        return Launch(jobs=jobs)
    return Launch("slurm", jobs=jobs, threads=getattr(args, "threads", None),
                  slurm=slurm_options(args), wait=args.slurm_wait)


def field_attr(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    """Defaults (GPUs per the command), then --slurm-config, then the flags."""
    options = SlurmOptions(gpus_per_task=args.slurm_gpus_default)
    if args.slurm_config is not None:
        from poolwise._io import read_toml

        options = SlurmOptions.from_mapping(read_toml(args.slurm_config),
                                            str(args.slurm_config), options)
    values = {field: getattr(args, field_attr(flag)) for flag, field, _, _ in _SLURM_FLAGS
              if getattr(args, field_attr(flag), None) is not None}
    if args.slurm_training:
        values.update(_training_tasks(args, options))
    if args.slurm:
        values["extra"] = {**options.extra, **dict(args.slurm)}
    options = SlurmOptions.from_mapping(values, "slurm options", options)
    if not args.slurm_training and options.nodes * options.tasks_per_node > 1:
        raise ValueError("nodes and tasks_per_node are for `vision train`: every cell of a grid "
                         "is one task on one node")
    return options


def _training_tasks(args: argparse.Namespace, options: SlurmOptions) -> dict:
    """nodes, tasks per node and GPUs per task of a training job: one task per GPU."""
    gpus = args.gpus_per_node if args.gpus_per_node is not None else \
        options.gpus_per_task * options.tasks_per_node
    if gpus < 0:
        raise ValueError(f"--gpus-per-node must be 0 or more, got {gpus}")
    tasks = args.tasks_per_node or (gpus or options.tasks_per_node)
    if gpus and tasks != gpus:
        raise ValueError(f"--tasks-per-node {tasks} with --gpus-per-node {gpus}: poolwise runs "
                         "one task per GPU; give the same number (or leave --tasks-per-node out)")
    return {"nodes": args.nodes or options.nodes, "tasks_per_node": tasks,
            "gpus_per_task": 1 if gpus else 0}


def describe(options: SlurmOptions) -> str:
    """One line of what each job asks for."""
    parts = [f"partition {options.partition or '(default)'}", f"{options.time_min} min",
             f"{options.cpus_per_task} CPU", f"{options.gpus_per_task} GPU",
             f"memory {f'{options.mem_gb:g} GB' if options.mem_gb else '(default)'}"]
    if options.nodes * options.tasks_per_node > 1:
        parts[2:4] = [f"{options.nodes} node(s) x {options.tasks_per_node} task(s) of "
                      f"{options.cpus_per_task} CPU and {options.gpus_per_task} GPU"]
    else:
        parts.append(f"at most {options.array_parallelism} at once")
    for name in ("account", "qos", "constraint"):
        if getattr(options, name):
            parts.append(f"{name} {getattr(options, name)}")
    parts += [f"--{k}={v}" for k, v in options.extra.items()]
    return ", ".join(parts)


def announce(args: argparse.Namespace, launch: Launch, run_dir: str | Path) -> None:
    """Checks the launcher before any work and prints what a SLURM grid asks for."""
    for text in launch.check(run_dir):
        print(f"warning: {text}", file=sys.stderr, flush=True)
    if launch.launcher == "slurm":
        what = "one job" if args.slurm_training else "one job per cell"
        print(f"SLURM: {what} ({describe(launch.options())}); files in "
              f"{Path(run_dir) / 'slurm'}", flush=True)


class StatusBar:
    """A bar of a SLURM grid's finished cells, with pending / running / failed beside it."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.total, self.bar = total, None
        args.close_on_error = [*getattr(args, "close_on_error", []), self]

    def __call__(self, status: dict[str, int]) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.total, unit="cell", desc="SLURM", file=sys.stderr)
        self.bar.n = status["done"] + status["failed"]
        self.bar.set_postfix(pending=status["pending"], running=status["running"],
                             failed=status["failed"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
