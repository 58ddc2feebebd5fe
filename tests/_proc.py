"""Process-table helpers for the fault tests (Linux /proc)."""

import os
import signal
import time
from pathlib import Path


def children(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def still_alive_after(pids: set[int], seconds: float) -> set[int]:
    """The pids still alive once ``seconds`` have passed or all are gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(map(alive, pids)):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


def survivors_of_sigkill(parent, spawned: set[int], seconds: float = 10.0) -> set[int]:
    """SIGKILLs ``parent`` (a Popen) and returns the ``spawned`` processes still alive after
    ``seconds``; those are then killed, so a failing test leaves nothing behind."""
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    left = still_alive_after(spawned, seconds)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left
