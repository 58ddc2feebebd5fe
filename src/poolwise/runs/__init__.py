"""The run layer: run folders (:mod:`poolwise.runs.folder`), grids of independent cells with
the executors that run them (:mod:`poolwise.runs.grid`; SLURM in :mod:`poolwise.runs.slurm`)
and the choice between them (:mod:`poolwise.runs.launch`). Vision training, CLIP training, the
probe, ``vision compare`` and pain LOSO all run through it."""

from poolwise.runs.folder import RunFolder, file_entry
from poolwise.runs.grid import Cell, Executor, Grid, InProcess, LocalPool, local_executor, ordered
from poolwise.runs.launch import LAUNCHERS, Launch

__all__ = ["LAUNCHERS", "Cell", "Executor", "Grid", "InProcess", "Launch", "LocalPool",
           "RunFolder", "file_entry", "local_executor", "ordered"]
