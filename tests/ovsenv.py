"""Real Open vSwitch daemons and network namespaces for the tests.

Everything made here carries a unique prefix, is stopped by pid and deleted
in ``close()`` - also when a test fails.  Nothing made by anyone else is
touched.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ovsnvgre.lab.proc import stop

SCHEMA_CANDIDATES = ("/usr/share/openvswitch/vswitch.ovsschema",
                     "/usr/local/share/openvswitch/vswitch.ovsschema")
PREFIX = f"onv{os.getpid() % 100000}"
_counter = itertools.count()


def ovs_missing() -> str | None:
    """Why real-switch tests cannot run here, or None."""
    for tool in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install openvswitch-switch)"
    if schema_path() is None:
        return "vswitch.ovsschema not found"
    return None


def netns_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "ip (iproute2) not installed"
    return None


def schema_path() -> str | None:
    return next((p for p in SCHEMA_CANDIDATES if os.path.exists(p)), None)


def unique(tag: str) -> str:
    return f"{PREFIX}-{tag}{next(_counter)}"


def sh(*args: str, check: bool = True, netns: str | None = None,
       env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = list(args)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result


def wait_for(condition, timeout: float, what: str):
    """Poll ``condition`` until it is truthy and return that value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)


class Namespace:
    def __init__(self, tag: str) -> None:
        self.name = unique(tag)
        sh("ip", "netns", "add", self.name)
        self.exec("ip", "link", "set", "lo", "up")

    def exec(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
        return sh(*args, check=check, netns=self.name, env=env, timeout=timeout)

    def delete(self) -> None:
        sh("ip", "netns", "delete", self.name, check=False)


def veth(a_ns: Namespace, a_name: str, b_ns: Namespace, b_name: str) -> None:
    """A veth pair between two namespaces (made with temporary names, then moved)."""
    tmp_a, tmp_b = unique("va"), unique("vb")
    sh("ip", "link", "add", tmp_a[-15:], "type", "veth", "peer", "name", tmp_b[-15:])
    sh("ip", "link", "set", tmp_a[-15:], "netns", a_ns.name)
    sh("ip", "link", "set", tmp_b[-15:], "netns", b_ns.name)
    a_ns.exec("ip", "link", "set", tmp_a[-15:], "name", a_name)
    b_ns.exec("ip", "link", "set", tmp_b[-15:], "name", b_name)
    a_ns.exec("ip", "link", "set", a_name, "up")
    b_ns.exec("ip", "link", "set", b_name, "up")


class Switch:
    """A private ovsdb-server and ovs-vswitchd (userspace datapath) in one namespace."""

    def __init__(self, netns: Namespace, dummy: bool = False) -> None:
        self.netns = netns
        # Short: unix socket paths have a 108-byte limit.
        self.rundir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir="/tmp"))
        self.db = f"unix:{self.rundir}/db.sock"
        self.env = {**os.environ, "OVS_RUNDIR": str(self.rundir), "OVS_LOGDIR": str(self.rundir),
                    "OVS_DBDIR": str(self.rundir), "OVS_SYSCONFDIR": str(self.rundir)}
        self.dummy = dummy
        self.pids: list[int] = []

    def start(self) -> Switch:
        sh("ovsdb-tool", "create", f"{self.rundir}/conf.db", schema_path() or "", env=self.env)
        self.start_db()
        sh("ovs-vsctl", f"--db={self.db}", "--no-wait", "init", env=self.env)
        return self.start_vswitchd()

    def start_db(self) -> None:
        """Start ovsdb-server on this switch's database (again, after ``stop_db``)."""
        d = self.rundir
        sh("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
           f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log",
           "--detach", "--no-chdir", env=self.env)
        self.pids.insert(0, self._pid("ovsdb-server"))

    def stop_db(self) -> None:
        """Stop ovsdb-server (by its pid); the database file stays."""
        pid = self._pid("ovsdb-server")
        stop(pid)
        self.pids.remove(pid)
        (self.rundir / "ovsdb-server.pid").unlink(missing_ok=True)

    def start_vswitchd(self) -> Switch:
        d = self.rundir
        extra = ["--enable-dummy=override"] if self.dummy else []
        self.netns.exec("ovs-vswitchd", self.db, f"--pidfile={d}/ovs-vswitchd.pid",
                        f"--log-file={d}/ovs-vswitchd.log", "--detach", "--no-chdir",
                        *extra, env=self.env)
        self.pids.append(self._pid("ovs-vswitchd"))
        return self

    def _pid(self, daemon: str) -> int:
        path = self.rundir / f"{daemon}.pid"
        for _ in range(100):
            if path.exists() and path.read_text().strip():
                return int(path.read_text())
            time.sleep(0.05)
        raise AssertionError(f"{daemon} wrote no pidfile in {self.rundir}")

    def stop_vswitchd(self, sig: int = signal.SIGTERM) -> None:
        pid = self._pid("ovs-vswitchd")
        if sig == signal.SIGKILL:
            os.kill(pid, sig)
        stop(pid)
        self.pids.remove(pid)
        (self.rundir / "ovs-vswitchd.pid").unlink(missing_ok=True)

    def vsctl(self, *args: str, check: bool = True) -> str:
        return sh("ovs-vsctl", f"--db={self.db}", "--timeout=10", *args, env=self.env,
                  check=check).stdout

    def appctl(self, *args: str) -> str:
        return sh("ovs-appctl", "-t", str(self.rundir / f"ovs-vswitchd.{self.pids[-1]}.ctl"),
                  *args, env=self.env).stdout

    def ovsnvgre(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """Run the real command inside this switch's namespace, as a host would."""
        return self.netns.exec(sys.executable, "-m", "ovsnvgre", *args, env=self.env,
                               check=check, timeout=120)

    def close(self) -> None:
        for pid in reversed(self.pids):
            stop(pid)
        self.pids.clear()
        shutil.rmtree(self.rundir, ignore_errors=True)
