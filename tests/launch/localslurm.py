"""A real SLURM cluster on loopback: munged, slurmctld and two slurmd ("n1", "n2") on this machine.

Everything lives in a fresh directory (config, munge key, state, spool, logs) with free ports, so two
clusters never share state or ports (job IDs restart at 1 with fresh state: stale per-job files would
otherwise leak between clusters). Needs root (slurmd runs tasks as their user; mount namespaces).

For trying the launcher by hand:

    python -m tests.launch.localslurm up /tmp/slurm     # prints `export SLURM_CONF=...`
    make pretrain CONFIG=tiny_dyt LAUNCHER=slurm NODES=2
    python -m tests.launch.localslurm down /tmp/slurm

Known behaviour this relies on (each seen when starting these daemons): the munge socket dir must be o+x;
node names must resolve for torchrun's rendezvous, so each slurmd runs in a private mount namespace
whose /etc/hosts maps n1/n2 to 127.0.0.1 (jobs inherit it, the real /etc/hosts is untouched); without
systemd the cgroup plugin must be named explicitly; pid 1 here reaps late, so zombies count as dead.
"""

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODES = ("n1", "n2")
CPUS_PER_NODE = 2
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel", "sinfo")
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here (not root and not installed)."""


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin") + ":" + _SBIN


def ensure_installed() -> None:
    """Install the Debian packages (scripts/install_system_deps.sh) when a binary is missing."""
    missing = [b for b in BINARIES if shutil.which(b, path=_path()) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"missing {' '.join(missing)}: run `sudo bash scripts/install_system_deps.sh`")
    subprocess.run(["bash", str(REPO / "scripts/install_system_deps.sh")], check=True, timeout=600)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):  # held open together, so the n ports differ
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a late reaper."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _conf(root: Path, ctld_port: int, node_ports: list[int]) -> str:
    nodes = "\n".join(f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={p} CPUs={CPUS_PER_NODE} "
                      f"RealMemory=2000 State=UNKNOWN" for n, p in zip(NODES, node_ports, strict=True))
    return f"""\
ClusterName=loopback
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=5 and a 1 s scheduler cycle: a requeued job restarts after ~6 s instead of ~2 min.
AuthInfo=socket={root}/munge/munge.sock,cred_expire=5
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=1,bf_interval=1
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """Start with `start()`, stop with `stop()` (safe to call after a failed or partial start)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": _path()}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def start(self, timeout: float = 30) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        r = self.root
        for d in ("etc", "munge", "state", "log", "run", *(f"spool/{n}" for n in NODES)):
            (r / d).mkdir(parents=True, exist_ok=True)
        r.chmod(0o755)
        (r / "munge").chmod(0o755)  # munged refuses a socket dir that others cannot traverse
        key = r / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        subprocess.run(["munged", f"--key-file={key}", f"--socket={r}/munge/munge.sock",
                        f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/munge/munged.log",
                        f"--seed-file={r}/munge/munged.seed"], env=self.env, check=True, timeout=30)
        ctld_port, *node_ports = _free_ports(1 + len(NODES))
        self.conf.write_text(_conf(r, ctld_port, node_ports))
        # No systemd here: autodetecting the cgroup version fails, naming it works (and is unused).
        (r / "etc" / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        hosts = r / "etc" / "hosts"
        hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {' '.join(NODES)}\n")
        subprocess.run(["slurmctld"], env=self.env, check=True, timeout=30)
        for n in NODES:
            subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            'mount --bind "$1" /etc/hosts && exec slurmd -N "$2"', "sh", str(hosts), n],
                           env=self.env, check=True, timeout=30)
        deadline = time.monotonic() + timeout
        while True:
            dead = [p.name for p in self.pid_files() if not _alive(int(p.read_text().split()[0]))]
            if dead:
                raise RuntimeError(f"SLURM daemon died on start ({', '.join(dead)}):\n{self.logs()}")
            state = self.run("sinfo", "-h", "-o", "%T %D", check=False).stdout.strip()
            if state == f"idle {len(NODES)}":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"SLURM not ready after {timeout} s (sinfo: {state!r}):\n{self.logs()}")
            time.sleep(0.1)

    def pid_files(self) -> list[Path]:
        return sorted((self.root / "run").glob("*.pid"))

    def logs(self, tail: int = 20) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*.log")) + [self.root / "munge" / "munged.log"]:
            if f.exists():
                out.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-tail:]))
        return "\n".join(out)

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, shut the daemons down (killing any that linger), stop munged."""
        # Read pids first: slurmctld removes its pid file early in its shutdown.
        pids = [int(p.read_text().split()[0]) for p in self.pid_files() if p.read_text().strip()]
        if self.conf.exists() and any(_alive(p) for p in pids):
            # Jobs' processes outlive `scontrol shutdown`: end them through SLURM first.
            self.run("scancel", "--partition=debug", check=False)
            deadline = time.monotonic() + timeout
            while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.run("scontrol", "shutdown", check=False)
        munge_pid = self.root / "munge" / "munged.pid"
        self._wait_gone(pids, timeout)
        if munge_pid.exists() and munge_pid.read_text().strip():
            pid = int(munge_pid.read_text())
            if _alive(pid):
                os.kill(pid, 15)
            self._wait_gone([pid], 10)

    @staticmethod
    def _wait_gone(pids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in pids:
            if _alive(p):
                os.kill(p, 9)


def new_root() -> Path:
    # Short and under /tmp: the munge socket path must fit in 108 bytes, and pytest's 0700 temp dirs
    # would make the socket unreachable for anyone but root.
    return Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.launch.localslurm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("dir", type=Path, help="cluster directory (created by up, removed by down)")
    args = ap.parse_args(argv)
    cluster = LocalSlurm(args.dir.resolve())
    if args.action == "up":
        if args.dir.exists() and any(args.dir.iterdir()):
            print(f"{args.dir} is not empty: `down` it first or choose another", file=sys.stderr)
            return 2
        ensure_installed()
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
