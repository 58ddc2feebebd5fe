"""Start-up time of the ``poolwise`` command: this checkout against another revision, side by side.

Each command is one that returns at once (help, listing, a two-subject synthetic cohort), so
what is timed is the interpreter, the imports and the parser. The other revision is checked
out into a temporary ``git worktree``; both run with this interpreter, alternating, and the
median of the repeats is reported with the ratio.

    python benchmarks/bench_startup.py [--against HEAD~1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--help"],
    ["pain", "synth", "{tmp}/cohort", "--subjects", "2"],
    ["pain", "models"],
    ["pools"],
    ["vision", "recipes"],
]


def run_once(src: Path, args: list[str], tmp: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    argv = [sys.executable, "-m", "poolwise", *(a.format(tmp=tmp) for a in args)]
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD~1", help="the other git revision")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command and side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other),
                        args.against], check=True, capture_output=True)
        try:
            print(f"| command | {args.against} (s) | this checkout (s) | ratio |")
            print("|---|---|---|---|")
            for command in COMMANDS:
                times: dict[str, list[float]] = {"other": [], "this": []}
                for _ in range(args.repeats):
                    times["other"].append(run_once(other / "src", command, tmp))
                    times["this"].append(run_once(ROOT / "src", command, tmp))
                before, after = (statistics.median(times[k]) for k in ("other", "this"))
                print(f"| `poolwise {' '.join(command).format(tmp='DIR')}` | {before:.2f} | "
                      f"{after:.2f} | {before / after:.2f}x |", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(other)], check=False, capture_output=True)


if __name__ == "__main__":
    main()
