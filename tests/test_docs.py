"""Every Python and shell block of the README and docs/ runs as written.

The blocks of one page run in order in one fresh folder, like a reader typing them: shell
blocks with ``bash -euo pipefail`` (``poolwise`` and ``python`` are this interpreter's; each
``poolwise`` command runs in a fork of a server that has imported poolwise once, see
``tests/_forkserver.py``), Python blocks in one namespace per page. A block is skipped only
where the line just above its fence says why: ``<!-- docs: skip (reason) -->`` (GPUs, full
data sets, hub access, hour-long runs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
SKIP = re.compile(r"^<!-- docs: skip \((.+)\) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    skip: str | None


def blocks(page: str) -> list[Block]:
    """The fenced ``python`` and ``bash`` blocks of a page, with the reason to skip any."""
    lines = (ROOT / page).read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        skip = SKIP.match(lines[i - 1]) if i else None
        if match.group(1) in ("python", "bash"):
            found.append(Block(page, i + 1, match.group(1), "\n".join(lines[i + 1:end]),
                               skip.group(1) if skip else None))
        i = end + 1
    return found


def test_every_block_is_python_or_bash_and_every_skip_has_a_reason():
    for page in PAGES:
        lines = (ROOT / page).read_text().splitlines()
        for n, line in enumerate(lines):
            if line.startswith("<!-- docs:"):
                assert SKIP.match(line), f"{page}:{n + 1}: malformed skip marker {line!r}"
                assert FENCE.match(lines[n + 1]), f"{page}:{n + 1}: skip marker without a block"
        opened = [FENCE.match(line).group(1) for line in lines if FENCE.match(line)][::2]
        assert set(opened) <= {"python", "bash", "text", "json", ""}, f"{page}: {set(opened)}"


def _environment(folder: Path, shim_dir: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    if shim_dir is not None:
        bin_dir = shim_dir + os.pathsep + bin_dir
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""), MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT / "src"))
    env.setdefault("HOME", str(folder))
    return env


@pytest.fixture(scope="session")
def poolwise_shim():
    """A fork server (one per test process) and the folder of its ``poolwise`` shim."""
    sys.path.insert(0, str(Path(__file__).parent))
    import _forkserver

    folder = tempfile.mkdtemp(prefix="pw-")  # short: a socket path holds 107 bytes at most
    socket_path = os.path.join(folder, "s")
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_forkserver.py"),
                               socket_path], env=_environment(Path(folder)),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready", "the docs fork server did not start"
        _forkserver.write_shim(folder, socket_path)
        yield folder
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if any(not b.skip for b in blocks(p))])
def test_the_blocks_of_a_page_run_as_written(page, tmp_path, monkeypatch, poolwise_shim):
    monkeypatch.chdir(tmp_path)
    env = _environment(tmp_path, poolwise_shim)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.skip:
            continue
        where = f"{block.page}:{block.line}"
        if block.lang == "python":
            try:
                exec(compile(block.code, where, "exec"), namespace)
            except Exception as error:
                pytest.fail(f"{where}: the Python block raised {type(error).__name__}: {error}")
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.fail(f"{where}: the shell block exited {done.returncode}\n"
                            f"--- stdout (end)\n{done.stdout[-3000:]}\n"
                            f"--- stderr (end)\n{done.stderr[-3000:]}")
