"""A two-node Ray cluster on this machine's loopback interface, for the sweep's Ray test."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_command() -> str:
    """The `ray` script of this Python's installation (its bin folder need not be on PATH)."""
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command was not found (pip install 'minivgg[ray]')")
    return found


def _node_ports(taken: set) -> list:
    """A node's ports: its workers' range of 41 first, then one port per component, none of
    them in `taken` (the cluster's ports so far, updated) or in a worker range: Ray refuses
    to start a node one of whose ports falls in a worker range ("is trying to use a port
    number ... that is used by other components")."""
    worker = free_port()
    while any(port in taken for port in range(worker, worker + 41)):
        worker = free_port()
    taken.update(range(worker, worker + 41))
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    args = []
    for name in names:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        args += [name, str(port)]
    return args + ["--min-worker-port", str(worker), "--max-worker-port", str(worker + 40)]


class RayCluster:
    """`ray start --head` and a second node joining it, each with `cpus` CPUs; stop() ends them.

    Ray's own processes go in a temp folder of their own; RAY_USAGE_STATS_ENABLED=0 and no
    dashboard (there is no internet). Every command is bounded in time."""

    def __init__(self, temp_dir: Path, cpus: int = 1, timeout: float = 90):
        self.temp_dir, self.cpus, self.timeout = Path(temp_dir), cpus, timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_DOCKER_CPU_WARNING="1",
                        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")

    def _ray(self, *args):
        done = subprocess.run([ray_command(), *args], env=self.env, capture_output=True, text=True,
                              timeout=self.timeout)
        if done.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args[:2])} failed ({done.returncode}):\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def start(self) -> "RayCluster":
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
                  "--disable-usage-stats", "--object-store-memory=100000000"]
        taken = {self.port}
        self._ray("start", "--head", f"--port={self.port}", "--include-dashboard=false",
                  f"--temp-dir={self.temp_dir}",
                  *common, *_node_ports(taken))
        self._ray("start", f"--address={self.address}", *common, *_node_ports(taken))
        self._wait_for_nodes(2)
        return self

    def _wait_for_nodes(self, count: int) -> None:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            done = subprocess.run([ray_command(), "status", f"--address={self.address}"],
                                  env=self.env, capture_output=True, text=True, timeout=self.timeout)
            if done.stdout.count("node_") >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster at {self.address} did not reach {count} nodes")

    def processes(self) -> list:
        """Ids of this cluster's processes: those whose command line names its GCS port or its
        temp folder (the head's and the joined node's raylets, the GCS, the workers)."""
        marks = (f"127.0.0.1:{self.port}", f"gcs_server_port={self.port}", str(self.temp_dir))
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                found.append(int(proc.name))
        return found

    def stop(self) -> None:
        """End this cluster's processes, by id (never `ray stop`, which would end any Ray on
        the machine): SIGTERM, then SIGKILL for what is left after a few seconds."""
        import signal
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            pids = self.processes()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while pids and time.time() < deadline and self.processes():
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
