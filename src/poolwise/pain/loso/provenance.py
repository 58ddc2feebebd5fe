"""What a pain report says about where its runs came from: the machine and versions the
folds recorded, their time, and whether the runs may share one report at all.

``runs`` are :class:`poolwise.pain.loso.records.Run` objects (their ``path``, ``folds``,
``config`` and ``class_names``).
"""

from __future__ import annotations

from pathlib import Path

from poolwise.runs import RunFolder


def duration(seconds: float) -> str:
    if not seconds:
        return "n/a"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def check_comparable(runs: list) -> None:
    """One report compares runs of one class set and one window file: paired statistics over
    subjects mean nothing across different data.

    Raises:
        ValueError: naming two runs that differ, and what differs.
    """
    class_sets = {r.class_names: r.path for r in runs}
    if len(class_sets) > 1:
        (a, path_a), (b, path_b) = list(class_sets.items())[:2]
        raise ValueError(f"one report holds runs of one class set: {path_a} has {list(a)}, "
                         f"{path_b} has {list(b)}; report them separately")
    seen: dict[str, Path] = {}
    for run in runs:
        seen.setdefault(run.config["data"]["fingerprint"], run.path)
    if len(seen) > 1:
        (a, path_a), (b, path_b) = list(seen.items())[:2]
        raise ValueError(f"one report holds runs of one data set: {path_a} was made from "
                         f"windows with fingerprint {a}, {path_b} from {b}; report them "
                         "separately")


def environment_lines(runs: list, summaries: list[dict]) -> list[str]:
    """Where the folds ran (CPU, cores, versions, threads; as their records say) and their
    total wall time."""
    seen: dict[str, int] = {}
    for run in runs:
        for fold in run.folds:
            env = fold.get("environment", {})
            if "cpu" in env:
                gpu = f", {env['gpu']}" if env["gpu"] else ""
                threads = f"{env['torch_threads']} thread{'s' * (env['torch_threads'] != 1)}"
                text = (f"{env['cpu']} ({env['cpus']} cores{gpu}), Python {env['python']}, "
                        f"torch {env['torch']} with {threads} per fold, "
                        f"poolwise {env['poolwise']}")
            else:
                text = (f"not recorded (torch {env.get('torch', '?')}, poolwise "
                        f"{fold.get('poolwise_version', '?')})")
            seen[text] = seen.get(text, 0) + 1
    total = sum(seen.values())
    where = [f"{text}{'' if n == total else f' ({n} of {total} folds)'}"
             for text, n in seen.items()]
    seconds = sum(s["seconds"] for s in summaries)
    events = [e for run in runs for e in RunFolder(run.path).events("fold")]
    span = ""
    if events:
        wall = max(e["time"] for e in events) - min(e["time"] - e["seconds"] for e in events)
        span = (f"; wall time from the first fold's start to the last fold's end "
                f"{duration(wall)} (a run resumed later counts the pause too)")
    return [f"Machine and versions: {'; '.join(where)}. Fold time, all runs added up: "
            f"{duration(seconds)} (per run in the table below){span}.", ""]


__all__ = ["check_comparable", "duration", "environment_lines"]
