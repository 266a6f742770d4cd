"""End to end: two hosts on two subnets behind a router, each with its own switch."""

from __future__ import annotations

import time

RED_TO_HOST2 = "gcb00710b001389"
RED_TO_HOST1 = "gc633640b001389"


def wait_for(predicate, attempts: int = 50, pause: float = 0.2) -> bool:
    for _ in range(attempts):
        if predicate():
            return True
        time.sleep(pause)
    return False


def test_two_hosts_reach_each_other_over_the_underlay_bridges(host1, host2):
    for host in (host1, host2):
        result = host.ovsnvgre("up")
        assert result.returncode == 0, result.stderr
    # PA to PA: tep0 -> br0 -> eth1 -> router -> eth1 -> br0 -> tep0.
    assert host1.ping("203.0.113.11", count=2)
    assert host2.ping("198.51.100.11", count=2)
    # The userspace datapath routes tunnels itself: it learned the peer route.
    routes = host1.switch.appctl("ovs/route/show")
    assert "203.0.113.0/24" in routes and "tep0" in routes
    for host, port, remote in ((host1, RED_TO_HOST2, "203.0.113.11"),
                               (host2, RED_TO_HOST1, "198.51.100.11")):
        sw = host.switch
        assert sw.vsctl("get", "interface", port, "options:remote_ip").strip() == f'"{remote}"'
        assert int(sw.vsctl("get", "interface", port, "ofport")) > 0
        assert sw.vsctl("get", "interface", port, "error").strip() == "[]"
        assert wait_for(lambda sw=sw, port=port: sw.vsctl(
            "get", "interface", port, "link_state").strip() == "up")
        assert "gre_sys" in sw.appctl("tnl/ports/show")  # the GRE receive port is listening
    # Re-running on both is a no-op, and down on both restores the uplinks.
    for host in (host1, host2):
        assert "no changes" in host.ovsnvgre("up").stdout
    for host in (host1, host2):
        assert host.ovsnvgre("down").returncode == 0
    assert host1.ping("203.0.113.11")
