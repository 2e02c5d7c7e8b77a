"""Clusters emulated on one machine for the launcher tests: a private sshd (DeepSpeed's pdsh launcher) and a
private two-node SLURM (munged, slurmctld, two slurmd). Each lives in a test folder with its own keys, config
and free ports, and is stopped on exit; nothing outside the folder is touched but sshd's /run/sshd."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from engine_helpers import free_port


def _unavailable(reason: str) -> None:
    """Stop a launcher test that cannot run here: a failure under CI (which provides what it needs), else a
    skip, with `reason` either way. CI is `CI` set to anything but empty, 0 or false (CI services set `CI=true`)."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        pytest.fail(reason)
    pytest.skip(reason)


def _require(programs: List[str], packages: str) -> List[str]:
    """Paths of `programs` (PATH or /usr/sbin); when one is missing the test is `_unavailable`, naming the
    Debian packages."""
    found = [shutil.which(p) or (f"/usr/sbin/{p}" if os.path.exists(f"/usr/sbin/{p}") else None) for p in programs]
    if None in found:
        _unavailable(f"{', '.join(programs)} needed for this launcher test: apt-get install {packages} "
                     f"(.ci/run does)")
    return found


@contextlib.contextmanager
def private_sshd(directory: Path) -> Iterator[str]:
    """An sshd of its own on 127.0.0.1 (fresh host and user keys in `directory`, a free port), so DeepSpeed's
    pdsh launcher can ssh to "other hosts" without touching ~/.ssh. Yields the ssh options for
    `PDSH_SSH_ARGS_APPEND`. Needs `sshd` and `pdsh` (Debian: openssh-server, pdsh; `.ci/run` installs them):
    missing, the test fails under CI and is skipped elsewhere with that hint."""
    sshd = _require(["sshd", "pdsh"], "openssh-server pdsh")[0]
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / key)], check=True)
    (directory / "authorized_keys").write_text((directory / "user_key.pub").read_text())
    port = free_port()
    (directory / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPidFile {directory / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n")
    log = directory / "sshd.log"
    server = subprocess.Popen([sshd, "-D", "-E", str(log), "-f", str(directory / "sshd_config")])
    options = (f"-i {directory / 'user_key'} -p {port} -o BatchMode=yes -o StrictHostKeyChecking=no "
               "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ssh", *options.split(), "127.0.0.1", "true"], capture_output=True).returncode:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the test's private sshd did not accept a login; {log}:\n{_tail(log)}")
            time.sleep(0.2)
        yield options
    finally:
        server.kill()
        server.wait()


@contextlib.contextmanager
def private_slurm(directory: Path) -> Iterator[Dict[str, str]]:
    """A two-node SLURM cluster of its own on this machine: munged with a fresh key, slurmctld, and two slurmd
    (nodes `t2t-n1`, `t2t-n2`, one CPU each, both 127.0.0.1) on free ports, config and state in `directory`.
    Yields the environment additions (`SLURM_CONF`) for sbatch/srun/scontrol. Needs root (slurmd) and the
    Debian packages slurm-wlm and munge; stops every daemon on exit."""
    munged, slurmctld, slurmd, _ = _require(["munged", "slurmctld", "slurmd", "sbatch"], "slurm-wlm munge")
    if os.geteuid() != 0:
        _unavailable("the SLURM launcher test starts slurmd, which must run as root")
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (directory / sub).mkdir(exist_ok=True)
    key = directory / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = directory / "munge.sock"
    ctld_port, node_ports = free_port(), [free_port(), free_port()]
    host = socket.gethostname().split(".")[0]  # SLURM compares short host names
    conf = directory / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=t2t-test", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={ctld_port}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket_path}",
        "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={directory / 'state'}",
        f"SlurmdSpoolDir={directory / 'spool'}/%n", f"SlurmctldPidFile={directory / 'slurmctld.pid'}",
        f"SlurmdPidFile={directory / 'slurmd-%n.pid'}", f"SlurmctldLogFile={directory / 'slurmctld.log'}",
        f"SlurmdLogFile={directory / 'slurmd-%n.log'}", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "ReturnToService=2", "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        *(f"NodeName=t2t-n{i + 1} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs=1 "
          "State=UNKNOWN" for i, port in enumerate(node_ports)),
        "PartitionName=test Nodes=t2t-n1,t2t-n2 Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {"SLURM_CONF": str(conf)}
    daemon_env = {**os.environ, **env}
    started: List[Path] = []
    try:
        subprocess.run([munged, f"--key-file={key}", f"--socket={socket_path}", "--force",
                        f"--pid-file={directory / 'munged.pid'}", f"--log-file={directory / 'munged.log'}",
                        f"--seed-file={directory / 'munge.seed'}"], check=True)
        started.append(directory / "munged.pid")
        subprocess.run([slurmctld, "-f", str(conf)], check=True, env=daemon_env)
        started.append(directory / "slurmctld.pid")
        for node in ("t2t-n1", "t2t-n2"):
            subprocess.run([slurmd, "-f", str(conf), "-N", node], check=True, env=daemon_env)
            started.append(directory / f"slurmd-{node}.pid")
        deadline = time.monotonic() + 30
        while True:
            states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                    env=daemon_env).stdout.split()
            if states == ["idle", "idle"]:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the test's SLURM nodes are {states}, not idle; "
                            f"{directory / 'slurmctld.log'}:\n{_tail(directory / 'slurmctld.log')}")
            time.sleep(0.5)
        yield env
    finally:
        for pid_file in reversed(started):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), 15)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
