"""Several pain models (and seeds) under the clean LOSO protocol, and optionally some of them
under the authors' leaky reference protocol, in one folder with one report.

Each run is a normal ``pain loso`` run folder ``<out>/<model>-clean`` (``-seed<k>`` per seed
when there are several) or ``<out>/<model>-reference``, so ``pain report``, ``pain explain`` and
``pain export`` work on it as on any run. On SLURM every clean run's folds are submitted before
any is waited for, so the cluster sees the whole models x seeds x folds grid at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.loso.config import LosoConfig
from poolwise.pain.loso.run import check_run, run_loso
from poolwise.runs import Launch
from poolwise.runs.slurm import Submitted


def compare_runs(base: LosoConfig, models: Sequence[str], seeds: int = 1,
                 reference: Sequence[str] = ()) -> dict[str, LosoConfig]:
    """``{run folder name: configuration}``: every model x seed under the clean protocol
    (seeds ``base.seed``, ``base.seed + 1``, ...), then each ``reference`` model once under the
    reference protocol with ``base.seed``."""
    if not models:
        raise ValueError("name at least one model to compare")
    for names, what in ((models, "--models"), (reference, "--reference")):
        repeated = sorted({m for m in names if list(names).count(m) > 1})
        if repeated:
            raise ValueError(f"{what} names {', '.join(repeated)} twice")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive number, got {seeds!r}")
    runs = {}
    for model in models:
        for k in range(seeds):
            name = f"{model}-clean" if seeds == 1 else f"{model}-clean-seed{k}"
            runs[name] = dataclasses.replace(base, model=model, protocol="clean",
                                             seed=base.seed + k)
    for model in reference:
        runs[f"{model}-reference"] = dataclasses.replace(base, model=model,
                                                         protocol="reference")
    return runs


def run_compare(
    dataset: WindowDataset,
    out: str | Path,
    runs: dict[str, LosoConfig],
    *,
    launch: Launch | None = None,
    on_run: Callable[[str, LosoConfig], None] | None = None,
    **loso_kwargs: Any,
) -> list[Path]:
    """Runs (or resumes) every run of :func:`compare_runs` in ``out``; returns their folders.

    Clean runs go through ``launch`` (local, or SLURM); reference runs chain their folds and
    run here. ``on_run(name, config)`` is called as each run starts; other keywords go to
    :func:`poolwise.pain.loso.run.run_loso`.

    Raises:
        poolwise.runs.slurm.Submitted: with SLURM and ``launch.wait`` False, once every clean
            run's folds are queued (the same call later collects them).
    """
    out = Path(out)
    launch = launch or Launch()
    for config in runs.values():  # every run is checked before any work
        check_run(dataset, config, loso_kwargs.get("folds"))
    queued: dict[str, str] = {}
    finished = 0
    if launch.launcher != "local":
        early = dataclasses.replace(launch, wait=False)
        quiet = {k: v for k, v in loso_kwargs.items()
                 if k in ("folds", "on_notice", "wait", "log_to")}
        for name, config in runs.items():
            if config.evaluation.independent_folds:
                try:
                    run_loso(dataset, out / name, config, launch=early, **quiet)
                except Submitted as submitted:
                    queued.update({f"{name}/{k}": v for k, v in submitted.jobs.items()})
                    finished += submitted.finished
        if queued and not launch.wait:
            raise Submitted(queued, finished)
    for name, config in runs.items():
        if on_run is not None:
            on_run(name, config)
        here = launch if config.evaluation.independent_folds else Launch()
        run_loso(dataset, out / name, config, launch=here, **loso_kwargs)
    return [out / name for name in runs]
