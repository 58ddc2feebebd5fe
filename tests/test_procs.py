"""Worker processes never outlive a killed parent."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _proc import children, survivors_of_sigkill

from poolwise._procs import process_pool


def test_bad_job_counts_are_refused():
    for jobs in (0, -1, 1.5):
        with pytest.raises(ValueError, match="jobs must be a positive number"):
            process_pool(jobs)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_sigkill_of_the_parent_leaves_no_orphan(tmp_path):
    code = textwrap.dedent("""
        import os, time
        from poolwise._procs import process_pool
        with process_pool(2) as pool:
            pool.submit(time.sleep, 0).result()
            futures = [pool.submit(time.sleep, 600) for _ in range(2)]
            print("busy", flush=True)
            time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "busy"
        time.sleep(0.5)
        spawned = children(parent.pid)  # two workers and the resource tracker
        assert len(spawned) >= 2
        assert survivors_of_sigkill(parent, spawned) == set()
    finally:
        parent.kill()
