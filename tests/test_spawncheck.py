"""The suite runs the environment under test: no test starts a `python3` or `ovsnvgre`
from PATH (issue 16: `make test` failed on a fresh Debian 12 machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import spawncheck

ROOT = Path(__file__).resolve().parent.parent
VENV_OVSNVGRE = str(Path(sys.executable).parent / "ovsnvgre")


def test_no_test_and_no_bench_writes_a_stray_command_line():
    files = sorted(ROOT.glob("tests/*.py")) + sorted(ROOT.glob("bench/*.py"))
    assert len(files) > 10
    assert spawncheck.scan(files) == []


# The command lines the scan must find; the first is the line of the issue.
STRAY_SOURCE = '''
def test_ovs_rundir_selects_the_switch(host1, tmp_path):
    result = host1.netns.exec("python3", "-m", "ovsnvgre", "plan", "-c", str(host1.fabric),
                              "--host", "host1", env=env, check=False)
subprocess.run(["ip", "netns", "exec", ns.name, "python3", "-m", "ovsnvgre"])
subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", "ovsnvgre", "up"])
subprocess.run(["env", "OVS_RUNDIR=/x", "python", "-c", "pass"])
subprocess.run("python3.11 -m ovsnvgre --help", shell=True)
os.system("ovsnvgre status")
'''
FINE_SOURCE = '''
host1.netns.exec(sys.executable, "-m", "ovsnvgre", "plan")
subprocess.run([sys.executable, "-m", "ovsnvgre", "lab", "up"])
subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-m", "ovsnvgre"])
subprocess.run([str(Path(sys.executable).parent / "ovsnvgre"), "--help"])
click.Group("ovsnvgre", commands={})
runner.invoke(main, ["--help"], prog_name="ovsnvgre")
'''


def test_the_scan_finds_stray_command_lines():
    assert spawncheck.scan_source(STRAY_SOURCE, "t.py") == [
        "t.py:3: runs 'python3' from PATH: use sys.executable",
        "t.py:5: runs 'python3' from PATH: use sys.executable",
        "t.py:6: runs 'ovsnvgre' from PATH: use sys.executable",
        "t.py:7: runs 'python' from PATH: use sys.executable",
        "t.py:8: runs 'python3.11' from PATH: use sys.executable",
        "t.py:9: runs 'ovsnvgre' from PATH: use sys.executable",
    ]
    assert spawncheck.scan_source(FINE_SOURCE, "t.py") == []


STRAY = [  # the system's python3 is as stray as a bare one
    ["python3", "-c", "pass"],  # spawncheck: stray on purpose
    ["ovsnvgre", "--help"],  # spawncheck: stray on purpose
    ["/usr/bin/python3", "-c", "pass"],  # spawncheck: stray on purpose
    ["ip", "netns", "exec", "nowhere", "python3", "-c", "pass"],  # spawncheck: stray on purpose
    ["nsenter", "--net=/x", "env", "A=1", "python", "-c", "pass"],  # spawncheck: stray on purpose
]


@pytest.mark.parametrize("argv", STRAY)
def test_the_suite_refuses_to_start_a_stray_python(argv):
    """The hook conftest.py installs stops the process before it starts."""
    with pytest.raises(spawncheck.StraySpawn, match="use sys.executable"):
        subprocess.run(argv, capture_output=True)  # spawncheck: stray on purpose
    with pytest.raises(spawncheck.StraySpawn):
        subprocess.run(" ".join(argv), shell=True)  # spawncheck: stray on purpose
    with pytest.raises(spawncheck.StraySpawn):
        os.system(" ".join(argv))  # spawncheck: stray on purpose


def test_the_environments_python_and_ovsnvgre_start():
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0
    assert subprocess.run([VENV_OVSNVGRE, "--help"], capture_output=True).returncode == 0
    assert subprocess.run(["env", "A=1", sys.executable, "-c", "pass"]).returncode == 0


def test_wrappers_are_seen_through():
    assert spawncheck.program(["ip", "netns", "exec", "n", "tcpdump", "-i", "x"]) == "tcpdump"
    assert spawncheck.program(["timeout", "5", "sudo", "-E", "arping", "-c1"]) == "arping"
    assert spawncheck.program(["setsid", None, "x"]) is None
