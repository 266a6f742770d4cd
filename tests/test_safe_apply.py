"""Safe apply on real links: the underlay check, automatic rollback, confirmed mode,
and `ovsnvgre rollback` after a run that was killed half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fabrics import TWO_HOSTS
from ovsenv import Namespace, sh, veth, wait_for

GATEWAY = "198.51.100.1"
ROLLBACK_FILE = "ovsnvgre-rollback.json"


def host_state(host) -> dict:
    """Everything a rollback must give back: OVSDB rows (without their uuids),
    every link's flags and addresses, every route."""
    tables = {}
    for table, columns in (("Bridge", ["name", "datapath_type", "fail_mode", "protocols",
                                       "external_ids"]),
                           ("Port", ["name", "external_ids"]),
                           ("Interface", ["name", "type", "options", "external_ids"])):
        query = ["Open_vSwitch", {"op": "select", "table": table, "where": [],
                                  "columns": columns}]
        out = sh("ovsdb-client", "transact", host.switch.db, json.dumps(query)).stdout
        tables[table] = sorted(json.dumps(row, sort_keys=True)
                               for row in json.loads(out)[0]["rows"])
    links = {link["ifname"]: ("UP" in link["flags"], sorted(
        f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
        if a.get("scope") == "global"))
        for link in json.loads(host.ip("-j", "addr", "show"))}
    # IPv6 link-local routes come and go with duplicate address detection on
    # fresh links, on the kernel's own timing: they are not part of the underlay.
    routes = sorted(json.dumps(route, sort_keys=True)
                    for route in json.loads(host.ip("-j", "route", "show", "table", "all"))
                    if not route["dst"].startswith("fe80:"))
    return {"tables": tables, "links": links, "routes": routes}


def assert_restored(host, before: dict) -> None:
    """The host is as ``before``; a failure names only what differs."""
    after = host_state(host)
    for part in ("tables", "links"):
        assert after[part] == before[part]
    assert set(after["routes"]) - set(before["routes"]) == set()
    assert set(before["routes"]) - set(after["routes"]) == set()


def rollback_file(host) -> Path:
    return host.switch.rundir / ROLLBACK_FILE


def with_gateway(tmp_path: Path, gateway: str) -> Path:
    path = tmp_path / "wrong-gateway.yaml"
    path.write_text(TWO_HOSTS.replace("gateway: 198.51.100.1", f"gateway: {gateway}"))
    return path


def start(host, *args: str) -> subprocess.Popen:
    """`ovsnvgre ARGS` in the host's namespace, in the background."""
    return subprocess.Popen(
        ["ip", "netns", "exec", host.netns.name, sys.executable, "-m", "ovsnvgre", *args,
         "-c", str(host.fabric), "--host", host.name],
        env=host.switch.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def awaiting_confirmation(host) -> bool:
    try:
        return json.loads(rollback_file(host).read_text())["state"] == "awaiting-confirmation"
    except (OSError, ValueError):
        return False


def timer_gone(host) -> bool:
    return not (host.switch.rundir / f"{ROLLBACK_FILE}.timer").exists()


def test_a_correct_fabric_is_verified_and_leaves_no_rollback_state(host1):
    result = host1.ovsnvgre("up", "--json")
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)["underlay_check"]
    gateway = next(t for t in check["targets"] if t["address"] == GATEWAY)
    assert gateway["answered_before"] and gateway["answered_after"]
    assert gateway["how"] == "ARP on tep0"
    assert check["seconds"] > 0
    assert not rollback_file(host1).exists()
    nothing = host1.switch.ovsnvgre("rollback")
    assert nothing.returncode == 1 and "nothing to roll back" in nothing.stderr
    # A run that does not touch the underlay does not probe it.
    again = host1.ovsnvgre("up", "--json")
    assert json.loads(again.stdout)["underlay_check"] is None


def test_a_wrong_gateway_is_rolled_back_and_the_host_keeps_its_way_out(host1, tmp_path):
    before = host_state(host1)
    result = host1.ovsnvgre("up", fabric=with_gateway(tmp_path, "198.51.100.99"))
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ovsnvgre: error: host host1: the underlay check failed")
    assert ("198.51.100.99 (the fabric's gateway; gateway of route 203.0.113.0/24) did not "
            "answer ARP on tep0 (nor before the change)") in error
    assert "Rolled back" in error and "the overlay was not applied" in error
    assert "Traceback" not in result.stderr
    assert_restored(host1, before)
    assert not rollback_file(host1).exists()
    assert host1.ping(GATEWAY)


def test_a_wrong_uplink_is_refused_before_any_change(lab, host1, tmp_path):
    # A second NIC that leads to a namespace with nobody in it; the PA is on eth1.
    void = Namespace("void")
    lab.namespaces.append(void)
    veth(host1.netns, "eth2", void, "eth0")
    before = host_state(host1)
    fabric = tmp_path / "wrong-uplink.yaml"
    fabric.write_text(TWO_HOSTS.replace("uplink: eth1, gateway: 198.51.100.1",
                                        "uplink: eth2, gateway: 198.51.100.1"))
    result = host1.ovsnvgre("up", fabric=fabric)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ovsnvgre: error: host host1: the PA 198.51.100.11 is already configured on eth1, "
        "which is neither the uplink nor the tep port: remove it there first; nothing was "
        "changed")
    assert_restored(host1, before)
    assert not rollback_file(host1).exists()
    assert host1.ping(GATEWAY)


def test_a_wrong_uplink_without_the_pa_elsewhere_is_rolled_back(lab, host1, tmp_path):
    """Preflight cannot know which NIC reaches the gateway: the underlay check can."""
    void = Namespace("void")
    lab.namespaces.append(void)
    veth(host1.netns, "eth2", void, "eth0")
    host1.ip("addr", "del", "198.51.100.11/24", "dev", "eth1")
    host1.ip("addr", "add", "198.51.100.11/24", "dev", "eth2")
    host1.ip("route", "replace", "default", "via", GATEWAY, "dev", "eth1", "onlink")
    before = host_state(host1)
    fabric = tmp_path / "wrong-uplink.yaml"
    fabric.write_text(TWO_HOSTS.replace("uplink: eth1, gateway: 198.51.100.1",
                                        "uplink: eth2, gateway: 198.51.100.1"))
    result = host1.ovsnvgre("up", fabric=fabric)
    assert result.returncode == 1
    assert "198.51.100.1 (the fabric's gateway" in result.stderr
    assert "did not answer ARP on tep0" in result.stderr and "Rolled back" in result.stderr
    assert_restored(host1, before)
    assert not rollback_file(host1).exists()


def test_no_verify_skips_the_check(host1, tmp_path):
    result = host1.ovsnvgre("up", "--no-verify", fabric=with_gateway(tmp_path, "198.51.100.99"))
    assert result.returncode == 0, result.stderr
    assert "underlay check" not in result.stderr
    assert "198.51.100.11/24" in host1.ip("addr", "show", "tep0")


def test_a_failed_check_on_a_converged_host_returns_to_the_converged_state(host1, tmp_path):
    assert host1.ovsnvgre("up").returncode == 0
    before = host_state(host1)
    # The fabric moves the host to a gateway that does not exist.
    result = host1.ovsnvgre("up", fabric=with_gateway(tmp_path, "198.51.100.99"))
    assert result.returncode == 1
    assert_restored(host1, before)
    assert "no changes" in host1.ovsnvgre("up").stdout


def test_confirm_timeout_rolls_the_whole_run_back(host1):
    before = host_state(host1)
    began = time.monotonic()
    result = host1.ovsnvgre("up", "--confirm", "5")
    assert result.returncode == 1
    assert "not confirmed in time: rolled back" in result.stdout
    assert time.monotonic() - began >= 5
    assert_restored(host1, before)
    assert not rollback_file(host1).exists() and timer_gone(host1)
    assert host1.ping(GATEWAY)


def test_confirmed_run_stays(host1):
    run = start(host1, "up", "--confirm", "60")
    try:
        wait_for(lambda: awaiting_confirmation(host1), 30, what="the run to wait for confirm")
        confirmed = host1.switch.ovsnvgre("confirm")
        assert confirmed.returncode == 0, confirmed.stderr
        assert "the change stays" in confirmed.stdout
        out, err = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert "confirmed: the change stays" in out
    assert not rollback_file(host1).exists()
    wait_for(lambda: timer_gone(host1), 30, what="the timer to exit")
    assert "no changes" in host1.ovsnvgre("up").stdout
    assert host1.ping(GATEWAY)


def test_confirm_timeout_rolls_back_when_the_up_process_is_killed(host1):
    before = host_state(host1)
    run = start(host1, "up", "--confirm", "5")
    try:
        wait_for(lambda: awaiting_confirmation(host1), 30, what="the run to wait for confirm")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        wait_for(lambda: not rollback_file(host1).exists() and timer_gone(host1),
                 30, what="the detached timer to roll back")
    finally:
        run.kill()
    assert_restored(host1, before)
    log = (host1.switch.rundir / "ovsnvgre-rollback.log").read_text()
    assert "no confirmation in time" in log and "rolled back" in log
    assert host1.ping(GATEWAY)


def test_a_timer_whose_rollback_fails_keeps_the_state_for_ovsnvgre_rollback(host1):
    """The detached timer cannot reach OVSDB when its deadline comes: it says so in its
    log, keeps the rollback state, and `ovsnvgre rollback` restores the host later."""
    before = host_state(host1)
    run = start(host1, "up", "--confirm", "120")
    try:
        wait_for(lambda: awaiting_confirmation(host1), 30, what="the run to wait for confirm")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        timer_file = host1.switch.rundir / f"{ROLLBACK_FILE}.timer"
        wait_for(lambda: timer_file.read_text().strip(), 30, what="the timer to name itself")
        timer = int(timer_file.read_text())
        host1.switch.stop_db()
        try:
            os.kill(timer, signal.SIGUSR1)  # what `ovsnvgre rollback` sends it
            wait_for(lambda: timer_gone(host1), 60, what="the timer to give up")
        finally:
            host1.switch.start_db()
    finally:
        run.kill()
    log = (host1.switch.rundir / "ovsnvgre-rollback.log").read_text()
    assert "rollback failed:" in log and "the state is kept in" in log, log
    assert "Traceback" not in log
    assert json.loads(rollback_file(host1).read_text())["state"] == "applying"
    result = host1.switch.ovsnvgre("rollback")
    assert result.returncode == 0, result.stderr
    assert "rolled back" in result.stdout
    assert_restored(host1, before)
    assert not rollback_file(host1).exists()
    assert host1.ping(GATEWAY)


def test_rollback_by_hand_undoes_a_pending_confirm_at_once(host1):
    before = host_state(host1)
    run = start(host1, "up", "--confirm", "120")
    try:
        wait_for(lambda: awaiting_confirmation(host1), 30, what="the run to wait for confirm")
        result = host1.switch.ovsnvgre("rollback")
        assert result.returncode == 0, result.stderr
        out, _ = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 1 and "rolled back" in out
    assert_restored(host1, before)
