"""A real one-node Slurm cluster for the tests: munged, slurmctld and slurmd, all run as root.

Everything lives under one temporary folder (configuration, munge key and socket, state, spool,
logs) and uses free TCP ports, so the cluster neither needs nor touches /etc/slurm and two test
runs can coexist. Debian's `slurm-wlm` and `munge` provide the programs (`make slurm` installs
them). Client commands find the cluster through SLURM_CONF in `cluster.environment()`.

    python tests/slurmcluster.py /tmp/cluster   # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "scancel", "squeue")


def missing_programs() -> list[str]:
    """The Slurm and munge programs this machine lacks."""
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def why_unavailable() -> str | None:
    """None when a cluster can be started here, else a sentence saying why not."""
    missing = missing_programs()
    if missing:
        return (
            f"Slurm tests skipped: {', '.join(missing)} not installed; run `make slurm` as root "
            "(apt-get install slurm-wlm munge) to run them."
        )
    if os.geteuid() != 0:
        return "Slurm tests skipped: slurmctld and slurmd must run as root here."
    return None


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlurmCluster:
    """One node named after this host, with every CPU, in one default partition `test`."""

    def __init__(self, root: Path, cred_expire: int = 5):
        self.root = Path(root)
        self.node = socket.gethostname()
        self.cpus = os.cpu_count() or 1
        # How long a requeued job waits before it may start again (Slurm's default is 120 s).
        self.cred_expire = cred_expire
        self.processes: list[subprocess.Popen] = []

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default os.environ) pointed at this cluster, without an outer job's variables."""
        env = {
            name: value
            for name, value in (os.environ if base is None else base).items()
            if not name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))
        }
        env["SLURM_CONF"] = str(self.conf)
        return env

    def start(self, timeout: float = 60) -> None:
        for folder in ("munge", "state", "spool", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        self._write_munge_key()
        self.conf.write_text(self._slurm_conf())
        try:
            self._spawn("munged", "--foreground", "--force", *self._munge_options())
            self._wait_for(lambda: (self.root / "munge" / "socket").exists(), timeout, "munged")
            self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
            self._wait_for(self._controller_answers, timeout, "slurmctld")
            self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", self.node)
            self._wait_for(self._node_idle, timeout, "slurmd")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel every job, wait for them to end, then stop the daemons in reverse order."""
        if self.processes and self._controller_answers():
            self.run("scancel", "--full", "--user", "root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout:
                time.sleep(0.5)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()

    def run(self, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        result = subprocess.run(
            list(command),
            env=kwargs.pop("env", None) or self.environment(),
            capture_output=True,
            text=True,
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {result.returncode}\n{result.stderr}")
        return result

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (the fields of its first record), {} once forgotten."""
        result = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        if result.returncode != 0 or not result.stdout.strip():
            return {}
        record = result.stdout.splitlines()[0]
        return dict(part.split("=", 1) for part in record.split() if "=" in part)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted((self.root / "log").glob("*.log"))
        )

    def _spawn(self, name: str, *arguments: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 (lives with the daemon)
        self.processes.append(
            subprocess.Popen(
                [_which(name), *arguments],
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def _wait_for(self, ready, timeout: float, name: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if any(process.poll() is not None for process in self.processes):
                raise RuntimeError(f"{name} did not start:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout} s:\n{self.logs()}")
            time.sleep(0.2)

    def _controller_answers(self) -> bool:
        return self.run("scontrol", "ping", check=False).returncode == 0

    def _node_idle(self) -> bool:
        state = self.run("scontrol", "-o", "show", "node", self.node, check=False).stdout
        return "State=IDLE" in state

    def _write_munge_key(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)

    def _munge_options(self) -> list[str]:
        munge = self.root / "munge"
        return [
            f"--socket={munge / 'socket'}",
            f"--key-file={munge / 'munge.key'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'munged.seed'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
        ]

    def _slurm_conf(self) -> str:
        log, state, spool = (self.root / name for name in ("log", "state", "spool"))
        return f"""\
ClusterName=esmpitest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.root / "munge" / "socket"},cred_expire={self.cred_expire}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={state / "slurmctld.pid"}
SlurmdPidFile={spool / "slurmd.pid"}
SlurmctldLogFile={log / "slurmctld.log"}
SlurmdLogFile={log / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""


if __name__ == "__main__":
    reason = why_unavailable()
    if reason:
        sys.exit(reason)
    cluster = SlurmCluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/esmpi-slurm"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the daemons on SIGTERM too
    cluster.start()
    print(f"export SLURM_CONF={cluster.conf}   # Ctrl-C stops the cluster", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
