"""A fabric whose per-vsid tunnel ports exceed what ovs-vswitchd numbers on one bridge
(32,767, the lower half of the OpenFlow range): validate warns, naming the host, and
`up` refuses before its first change (preflight) instead of failing half-way."""

from __future__ import annotations

import ipaddress

from click.testing import CliRunner
from fabrics import load
from test_desired_plan import converged
from test_preflight import kernel

from ovsnvgre.actual import ActualSwitch
from ovsnvgre.cli import main
from ovsnvgre.desired import MAX_AUTO_OFPORTS, desired_host, per_vsid_ports_at_least, tunnel_ports
from ovsnvgre.preflight import preflight


def full_mesh(hosts: int, vsids: int, mode: str) -> str:
    """``hosts`` hosts with one VM in each of ``vsids`` VSIDs: every host is every other's
    peer in every VSID.  host0's PA is the one test_preflight's kernel holds."""
    lines = ["fabric: big", "datapath_type: netdev",
             f"overlay: {{bridge: br-int, key_layout: rfc7637, tunnel_ports: {mode}}}",
             "hosts:"]
    for h in range(hosts):
        pa = "198.51.100.11/24" if h == 0 else f"{ipaddress.ip_address('10.64.0.1') + h}/10"
        gateway = "198.51.100.1" if h == 0 else "10.64.0.1"
        lines.append(f"  host{h}: {{pa: {pa}, uplink: eth1, gateway: {gateway}}}")
    lines.append("virtual_subnets:")
    lines += [f"  s{v}: {{vsid: {5000 + v}}}" for v in range(vsids)]
    lines.append("vms:")
    for h in range(hosts):
        for v in range(vsids):
            n = h * vsids + v
            lines.append(f"  vm{n}: {{host: host{h}, subnet: s{v}, port: vnet{v}, "
                         f"mac: \"02:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:01\", "
                         f"ca: 10.{h >> 8}.{h & 255}.1/8}}")
    return "\n".join(lines) + "\n"


BIG = full_mesh(183, 182, "per-vsid")  # 182 peers x 182 VSIDs + 182 receive-only ports


def test_the_bound_is_below_the_count_and_exact_near_the_limit():
    small = load(full_mesh(6, 4, "per-vsid"))
    assert per_vsid_ports_at_least(small, "host0") <= len(tunnel_ports(small, small.hosts["host0"]))
    big = load(BIG)
    assert per_vsid_ports_at_least(big, "host0") == len(tunnel_ports(big, big.hosts["host0"]))


def spread(peers: int, vsids: int, window: int) -> str:
    """host0 (198.51.100.11) with one VM in each of ``vsids`` VSIDs, each VSID shared with
    a rotating ``window`` of the ``peers``: many peers, none in every VSID."""
    lines = ["fabric: spread", "datapath_type: netdev",
             "overlay: {bridge: br-int, key_layout: rfc7637, tunnel_ports: per-vsid}", "hosts:",
             "  host0: {pa: 198.51.100.11/24, uplink: eth1, gateway: 198.51.100.1}"]
    lines += [f"  host{h}: {{pa: {ipaddress.ip_address('10.64.0.1') + h}/10, uplink: eth1, "
              "gateway: 10.64.0.1}" for h in range(1, peers + 1)]
    lines += ["virtual_subnets:", *(f"  s{v}: {{vsid: {5000 + v}}}" for v in range(vsids)),
              "vms:"]
    n = 0
    for v in range(vsids):
        members = [0, *(1 + (v * 300 + i) % peers for i in range(window))]
        for h in members:
            n += 1
            lines.append(f"  vm{n}: {{host: host{h}, subnet: s{v}, port: vnet{v}, mac: "
                         f"\"02:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:01\", "
                         f"ca: 10.{h >> 8}.{h & 255}.1/8}}")
    return "\n".join(lines) + "\n"


def test_validate_warns_of_peers_spread_over_many_vsids(tmp_path):
    # 11 VSIDs x 2,700 peers = 29,700 (peer, VSID) ports, plus one receive-only port for
    # each of the 3,300 peers: 33,000, over the limit though no VSID alone comes near.
    text = spread(3300, 11, 2700)
    fab = load(text)
    assert per_vsid_ports_at_least(fab, "host0") == len(tunnel_ports(fab, fab.hosts["host0"]))
    path = tmp_path / "spread.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: host host0 needs at least 33,000 tunnel ports" in result.stderr


def test_validate_warns_of_a_host_beyond_the_bridges_port_numbers(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(BIG)
    result = CliRunner().invoke(main, ["validate", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert (f"{path}: warning: host host0 needs at least 33,306 tunnel ports with "
            "overlay.tunnel_ports per-vsid, and Open vSwitch numbers at most 32,767 ports on "
            "a bridge: `up` would fail there") in result.stderr
    assert result.stderr.count("warning: host host") == 183
    path.write_text(BIG.replace("tunnel_ports: per-vsid", "tunnel_ports: per-peer"))
    quiet = CliRunner().invoke(main, ["validate", "-c", str(path)])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_up_refuses_before_any_change_where_the_ports_cannot_be_numbered():
    fab = load(BIG)
    host0 = desired_host(fab, "host0")
    assert len(host0.ports) > MAX_AUTO_OFPORTS
    blockers, _ = preflight(host0, ActualSwitch({}, {}), kernel())
    assert [b for b in blockers if b.startswith("bridge br-int would hold 33,488 ports "
                                                "(33,488 of this fabric), and Open vSwitch "
                                                "numbers at most 32,767 on a bridge")], blockers
    per_peer = desired_host(load(BIG.replace("per-vsid", "per-peer")), "host0")
    assert preflight(per_peer, ActualSwitch({}, {}), kernel()) == ([], [])


def test_moving_such_a_host_to_per_peer_is_not_refused_for_the_ports_it_will_delete():
    # The host holds the per-vsid ports (ovsnvgre's own): the per-peer run deletes them,
    # so they do not count against the bridge, as the refusal's own advice needs.
    switch = converged(desired_host(load(BIG), "host0"))
    per_peer = desired_host(load(BIG.replace("per-vsid", "per-peer")), "host0")
    assert preflight(per_peer, switch, kernel())[0] == []
