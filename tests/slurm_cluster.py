"""A real single-node Slurm cluster for the tests: Debian's munge and slurm-wlm (munged, slurmctld, slurmd)
started in a temporary folder on free ports, with no accounting daemon. `.ci/run` installs the packages;
elsewhere `apt-get install slurm-wlm munge` (as root: slurmd launches the jobs).

`start(folder)` returns the environment the Slurm commands need (SLURM_CONF) or raises Unavailable with the
reason; `stop(folder)` cancels what is left and stops the daemons."""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "mungekey", "sbatch", "squeue", "scancel", "srun")


class Unavailable(RuntimeError):
    """Why no cluster could be started here."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise Unavailable(f"{name} not found: install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)")
    return path


def _conf(d: Path, user: str) -> str:
    node = socket.gethostname().split(".")[0]
    mem = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)  # MemTotal kB -> MB, 80%
    return f"""ClusterName=rbols-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=600
KillWait=5
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start(d: Path, timeout: float = 60.0) -> dict:
    """Start the cluster in folder `d`; the environment (os.environ plus SLURM_CONF) its commands need."""
    for name in DAEMONS:
        _exe(name)
    if os.geteuid() != 0:
        raise Unavailable("slurmd must run as root to launch jobs; run the tests as root (as .ci/run does)")
    d.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (d / sub).mkdir(exist_ok=True)
    key = d / "munge.key"
    subprocess.run([_exe("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o600)
    subprocess.run([_exe("munged"), f"--key-file={key}", f"--socket={d}/munge.sock", f"--pid-file={d}/munged.pid",
                    f"--log-file={d}/munged.log", f"--seed-file={d}/munge.seed", "--force"],
                   check=True, capture_output=True)
    conf = d / "slurm.conf"
    conf.write_text(_conf(d, getpass.getuser()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in ("slurmctld", "slurmd"):
        p = subprocess.run([_exe(daemon), "-f", str(conf)], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            stop(d)
            raise Unavailable(f"{daemon} did not start: {p.stderr.strip() or p.stdout.strip()} (see {d})")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        p = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=env, capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip() == "idle":
            return env
        time.sleep(1.0)
    logs = "".join((d / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log") if (d / f).exists())
    stop(d)
    raise Unavailable(f"the node did not come up within {timeout:.0f} s; logs:\n{logs}")


def stop(d: Path) -> None:
    conf = d / "slurm.conf"
    if conf.exists():
        subprocess.run(["scancel", "--full", "--user", getpass.getuser()], capture_output=True,
                       env={**os.environ, "SLURM_CONF": str(conf)})
    for pidfile in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
        try:
            os.kill(int((d / pidfile).read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
