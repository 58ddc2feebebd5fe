"""A real single-node SLURM cluster on this machine for the tests: munged, slurmctld and slurmd
from Debian's ``slurm-wlm`` and ``munge``, with a generated ``slurm.conf`` in a temporary
folder, localhost only, on free ports. :func:`start` returns the environment that points
SLURM's commands at it; :meth:`Cluster.stop` kills exactly the daemons it started, by pid.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld",
           "slurmd": "/usr/sbin/slurmd"}


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    absent = [name for name, path in DAEMONS.items() if not os.access(path, os.X_OK)]
    absent += [c for c in ("sbatch", "squeue", "scontrol", "sinfo") if shutil.which(c) is None]
    if absent:
        return (f"SLURM is not installed ({', '.join(absent)} missing): "
                "apt-get install slurm-wlm munge (bash .ci/run does it)")
    if os.geteuid() != 0:
        return "the local SLURM test cluster needs root (slurmd starts jobs as their user)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed: pip install 'poolwise[slurm]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_pid(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"{path} was not written: the daemon did not start")


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True,
                              timeout=60, check=check)

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)

    def warn(self, job_id: str) -> None:
        """Sends a running job SLURM's warning signal (USR2, what submitit asks for before the
        time limit) and waits until the job is back in the queue; SLURM starts it again once
        its old credential expired (``cred_expire``, short on this cluster; 120 s by
        default)."""
        self.run("scancel", "--signal=USR2", job_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.run("squeue", "-h", "-o", "%T", "-j", job_id, check=False).stdout
            if state.strip() == "PENDING":
                return
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} was not requeued within 60 s")

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text()[-3000:] if path.is_file() else ""


# how long a requeued job waits before it starts again (slurmd refuses to start it while the
# old incarnation's credential is still valid: 'Job credential revoked')
CRED_EXPIRE_S = 5


def start(root: Path, cpus: int | None = None) -> Cluster:
    """Starts munged, slurmctld and slurmd with their files under ``root``."""
    root = Path(root)
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o600)
    socket_path = root / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    memory_mb = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**21)
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=poolwisetest",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={socket_path},cred_expire={CRED_EXPIRE_S}",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "ReturnToService=2", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MinJobAge=3600", "KillWait=5", "SchedulerParameters=sched_interval=1",
        "MessageTimeout=30",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(root, env)
    try:
        subprocess.run([DAEMONS["munged"], f"--key-file={key}", f"--socket={socket_path}",
                        f"--pid-file={root / 'munge' / 'munged.pid'}",
                        f"--log-file={root / 'log' / 'munged.log'}",
                        f"--seed-file={root / 'munge' / 'seed'}", "--force"],
                       check=True, capture_output=True, timeout=30)
        cluster.pids["munged"] = _read_pid(root / "munge" / "munged.pid")
        subprocess.run([DAEMONS["slurmctld"], "-f", str(conf)], check=True, env=env,
                       capture_output=True, timeout=30)
        cluster.pids["slurmctld"] = _read_pid(root / "slurmctld.pid")
        subprocess.run([DAEMONS["slurmd"], "-f", str(conf)], check=True, env=env,
                       capture_output=True, timeout=30)
        cluster.pids["slurmd"] = _read_pid(root / "slurmd.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = cluster.run("sinfo", "-h", "-o", "%T", check=False)
            if out.stdout.strip() in ("idle", "mixed", "allocated"):
                return cluster
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster's node did not come up:\n{cluster.log('slurmd')}"
                           f"\n{cluster.log('slurmctld')}")
    except BaseException:
        cluster.stop()
        raise
