"""A real one-node Slurm cluster on localhost for the tests: Debian's munge, slurmctld and slurmd, started in a
temp folder with a generated slurm.conf (this machine's real CPU count), stopped afterwards.

Requeued jobs: slurmctld holds a requeued batch job (Reason=BeginTime) for cred_expire + 1 seconds (120 + 1 by
default), so that its new launch credential is dated after the old one's revocation; a job released earlier
(`scontrol update StartTime=now`) can be launched in the same second, which slurmd refuses as "already killed",
and the job then ends instead of restarting. Here cred_expire is 5 (Slurm's minimum): the hold is 6 s and
nothing needs releasing; the schedulers look at pending jobs every 1-2 s (not 30-60 s), so a job whose hold
has passed starts at once.

Tasks are bound to the CPUs Slurm gave them (task/affinity), as on most clusters: two 1-CPU tasks side by side
then train on one thread each. Unbound, each started a thread per core of the machine, and on 2 cores the two
runs' threads waited on each other (3 steps of the smoke sweep took 17 s instead of 1-2 s)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")
CRED_EXPIRE_S = 5  # a requeued job is held this long + 1 s (Slurm: at least 5; default 120)


def available() -> str | None:
    """None when the cluster can start here, else why not."""
    missing = [d for d in DAEMONS if not shutil.which(d) and not os.path.exists(f"/usr/sbin/{d}")]
    if missing:
        return f"Slurm/munge not installed ({', '.join(missing)}); .ci/run installs them"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: str):
        self.root = root
        self.conf = os.path.join(root, "slurm.conf")
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "Cluster":
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        socket_path = os.path.join(r, "munge", "munge.socket")
        ctld_port, d_port = _free_port(), _free_port()
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=testcluster
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path},cred_expire={CRED_EXPIRE_S}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
        # munged refuses root unless forced; its socket and files live in the temp folder.
        self._spawn(["munged", "--foreground", "--force", f"--socket={socket_path}",
                     f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/log/munged.log",
                     f"--seed-file={r}/munge/munge.seed", "--key-file=/etc/munge/munge.key"])
        self._wait(lambda: os.path.exists(socket_path), "munged")
        self._spawn(["slurmctld", "-D", "-i", "-f", self.conf])
        self._spawn(["slurmd", "-D", "-f", self.conf])
        self._wait(self._node_idle, "the node to become idle")
        return self

    def _spawn(self, argv):
        log = open(os.path.join(self.root, "log", f"{argv[0]}.stdout"), "w")
        self.procs.append(subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

    def _wait(self, ready, what: str, timeout: float = 60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}); see {self.root}/log")
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}; see {self.root}/log")

    def run(self, *argv, check=True, timeout=120) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def wait_jobs_done(self, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "-h", "-o", "%i").stdout.strip():
                return
            time.sleep(1)
        raise RuntimeError("jobs still queued or running: " + self.run("squeue").stdout)

    def diagnose(self) -> str:
        """What Slurm says about its jobs and node, and the end of its logs: for a failing test's message."""
        parts = []
        for argv in (["squeue", "-a"], ["scontrol", "show", "job"], ["sinfo", "-N", "-l"]):
            r = self.run(*argv, check=False)
            parts.append(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}")
        for name in ("slurmctld.log", "slurmd.log"):
            try:
                with open(os.path.join(self.root, "log", name)) as f:
                    parts.append(f"--- {name} (end)\n" + "".join(f.readlines()[-25:]))
            except OSError:
                pass
        return "\n".join(parts)

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True, timeout=30)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
