import gc
import ipaddress

import pytest
from fabrics import TWO_HOSTS, load, refuse

from ovsnvgre import fabric
from ovsnvgre.errors import FabricError


def test_two_host_fabric_loads():
    fab = load(TWO_HOSTS)
    assert fab.name == "contoso"
    assert fab.datapath_type == "netdev"
    assert fab.hosts["host1"].pa == ipaddress.IPv4Interface("198.51.100.11/24")
    assert fab.hosts["host2"].gateway == ipaddress.IPv4Address("203.0.113.1")
    assert fab.virtual_subnets["blue"].vsid == 6001
    assert fab.vms["red-a"].mac == "02:00:00:00:50:01"
    assert fab.vsids_on("host1") == {5001, 6001}


def test_defaults():
    fab = load("fabric: f\nhosts:\n  h: {pa: 192.168.1.11/24}\n")
    assert fab.datapath_type == "system"
    assert (fab.underlay.bridge, fab.underlay.tep_port) == ("br0", "tep0")
    assert (fab.overlay.bridge, fab.overlay.key_layout, fab.overlay.tunnel_ports) == (
        "br-int", "rfc7637", "per-vsid")
    assert fab.hosts["h"].uplink is None and fab.hosts["h"].gateway is None
    assert fab.vms == {} and fab.virtual_subnets == {}


def test_mac_is_normalised_to_lower_case():
    fab = load(TWO_HOSTS.replace('"02:00:00:00:50:01"', '"02:00:00:00:5A:01"'))
    assert fab.vms["red-a"].mac == "02:00:00:00:5a:01"


# Each case: a change to the two-host fabric, the line the error must name,
# and words the message must hold.
CASES = [
    ("vsid: 5001", "vsid: 4095", 9, ["virtual_subnets.red.vsid", "4095", "4096-16777214"]),
    ("vsid: 5001", "vsid: 16777215", 9, ["virtual_subnets.red.vsid", "16777215"]),
    ("vsid: 5001", "vsid: true", 9, ["virtual_subnets.red.vsid", "true is not",
                                     "not an integer"]),
    ("vsid: 5001", 'vsid: "5001"', 9, ["virtual_subnets.red.vsid", "not an integer"]),
    ("vsid: 6001", "vsid: 5001", 10, ["virtual_subnets.blue.vsid", "already used by subnet 'red'"]),
    ("ca: 10.0.0.2/24}\n  blue-b", "ca: 10.0.0.1/24}\n  blue-b", 14,
     ["vms.red-b.ca", "10.0.0.1", "red-a", "'red'"]),
    ('"02:00:00:00:50:02"', '"02:00:00:00:50:01"', 14,
     ["vms.red-b.mac", "already used by VM 'red-a'"]),
    ('"02:00:00:00:50:01"', '"02:00:00:00:50"', 12, ["vms.red-a.mac", "not a MAC"]),
    ('"02:00:00:00:50:01"', '"01:00:5e:00:00:01"', 12, ["vms.red-a.mac", "multicast"]),
    ('"02:00:00:00:50:01"', '"00:00:00:00:00:00"', 12, ["vms.red-a.mac", "all-zero"]),
    ("ca: 10.0.0.1/24}\n  blue-a", "ca: 10.0.0.300/24}\n  blue-a", 12,
     ["vms.red-a.ca", "10.0.0.300"]),
    ("ca: 10.0.0.1/24}\n  blue-a", "ca: 10.0.0.1}\n  blue-a", 12,
     ["vms.red-a.ca", "prefix length"]),
    ("pa: 203.0.113.11/24", "pa: 198.51.100.11/24", 7, ["hosts.host2.pa", "host1"]),
    ("pa: 203.0.113.11/24", "pa: 203.0.113.11", 7, ["hosts.host2.pa", "prefix length"]),
    ("pa: 203.0.113.11/24", "pa: 2001:db8::1/64", 7, ["hosts.host2.pa", "IPv4"]),
    ("{host: host2, subnet: red,", "{host: host9, subnet: red,", 14,
     ["vms.red-b.host", "unknown host 'host9'"]),
    ("{host: host2, subnet: red,", "{host: host2, subnet: green,", 14,
     ["vms.red-b.subnet", "unknown virtual subnet 'green'"]),
    ("port: vnet1, mac: \"02:00:00:00:60:01\"", "port: vnet0, mac: \"02:00:00:00:60:01\"", 13,
     ["vms.blue-a.port", "'vnet0'", "host1", "red-a"]),
    ("port: vnet0, mac: \"02:00:00:00:50:01\"",
     "port: averyveryverylongname, mac: \"02:00:00:00:50:01\"", 12,
     ["vms.red-a.port", "15"]),
    ("gateway: 203.0.113.1}", "gateway: 198.51.100.1}", 7,
     ["hosts.host2.gateway", "outside", "203.0.113.0/24"]),
    ("key_layout: rfc7637", "key_layout: vxlan", 4, ["overlay.key_layout", "'vxlan'",
                                                      "rfc7637, plain"]),
    ("tunnel_ports: per-vsid", "tunnel_ports: mesh", 4, ["overlay.tunnel_ports", "per-peer"]),
    ("datapath_type: netdev", "datapath_type: dpdk", 2, ["datapath_type", "system, netdev"]),
    ("{pa: 198.51.100.11/24, uplink", "{pa: 198.51.100.11/24, uplnk", 6,
     ["hosts.host1.uplnk", "unknown key"]),
    ("overlay: {bridge: br-int,", "overlay: {brige: br-int,", 4, ["overlay.brige",
                                                                  "unknown key"]),
    ("fabric: contoso", "fabric: contoso\nfabrik: x", 2, ["fabrik", "unknown key"]),
    ("overlay: {bridge: br-int,", "overlay: {bridge: br0,", 4, ["overlay.bridge",
                                                                "underlay bridge"]),
    ("  blue: {vsid: 6001}", "  blue: {vsid: 6001}\n  blue: {vsid: 7001}", 11,
     ["duplicate key 'blue'", "line 10"]),
    ("uplink: eth1, gateway: 198.51.100.1", "uplink: vnet0, gateway: 198.51.100.1", 12,
     ["vms.red-a.port", "uplink"]),
    ("tunnel_ports: per-vsid}", "tunnel_ports: flow, bfd: true}", 4,
     ["overlay.bfd", "BFD needs a GRE port per peer", "tunnel_ports: flow"]),
]


@pytest.mark.parametrize("old,new,line,words", CASES, ids=[c[1][:30] for c in CASES])
def test_validation_refuses_with_file_line_and_entry(old, new, line, words):
    assert old in TWO_HOSTS
    message = refuse(TWO_HOSTS.replace(old, new, 1))
    assert message.startswith(f"f.yaml:{line}:"), message
    for word in words:
        assert word in message, message


def test_bfd_with_the_flow_port_is_refused_at_the_bfd_line():
    text = TWO_HOSTS.replace("overlay: {bridge: br-int, key_layout: rfc7637, "
                             "tunnel_ports: per-vsid}\n",
                             "overlay:\n  tunnel_ports: flow\n  bfd: yes\n")
    message = refuse(text)
    assert message == ("f.yaml:6: overlay.bfd: BFD needs a GRE port per peer, and "
                       "tunnel_ports: flow has one port for every peer; use tunnel_ports: "
                       "per-peer or per-vsid for BFD, or bfd: false")
    assert load(text.replace("bfd: yes", "bfd: no")).overlay.tunnel_ports == "flow"


def test_the_flow_ports_name_is_taken_in_flow_mode_only():
    text = TWO_HOSTS.replace('port: vnet0, mac: "02:00:00:00:50:01"',
                             'port: gre-flow, mac: "02:00:00:00:50:01"')
    assert load(text).vms["red-a"].port == "gre-flow"
    message = refuse(text.replace("tunnel_ports: per-vsid", "tunnel_ports: flow"))
    assert message == ("f.yaml:12: vms.red-a.port: 'gre-flow' is already the GRE port of "
                       "tunnel_ports: flow")
    message = refuse(TWO_HOSTS.replace("tunnel_ports: per-vsid", "tunnel_ports: flow")
                     .replace("bridge: br-int", "bridge: gre-flow"))
    assert message.startswith("f.yaml:4: overlay.bridge: 'gre-flow' is the name of the GRE "
                              "port of tunnel_ports: flow"), message


@pytest.mark.parametrize("text,words", [
    ("", ["empty"]),
    ("# only a comment\n", ["empty"]),
    ("- a\n- b\n", ["must be a mapping", "list"]),
    ("just a string\n", ["must be a mapping"]),
    ("fabric: [unclosed\n", ["YAML syntax error"]),
    ("fabric: x\nhosts: {}\n", ["hosts", "no host"]),
    ("fabric: x\n", ["hosts", "required"]),
    ("hosts: {h: {pa: 192.168.1.1/24}}\n", ["fabric", "required"]),
    ("fabric: x\nhosts:\n  h: {pa: 192.168.1.0/24}\n", ["network or broadcast"]),
])
def test_documents_that_are_not_fabrics(text, words):
    message = refuse(text)
    for word in words:
        assert word in message, message


def test_non_utf8_bytes_name_their_line():
    message = refuse(b"fabric: x\nhosts:\n  h: {pa: 192.168.1.1/24, uplink: eth\xff}\n")
    assert message.startswith("f.yaml:3:")
    assert "0xff" in message and "UTF-8" in message


def test_yaml_syntax_error_names_its_line():
    message = refuse("fabric: x\nhosts:\n  h: {pa: 1.2.3.4/24\n  k: v\n")
    assert "YAML syntax error" in message
    assert message.startswith("f.yaml:4:") or message.startswith("f.yaml:3:")


def test_missing_file(tmp_path):
    with pytest.raises(FabricError, match="no such file"):
        fabric.load(tmp_path / "absent.yaml")


def test_overlapping_cas_across_subnets_are_the_point():
    fab = load(TWO_HOSTS)
    assert fab.vms["red-a"].ca == fab.vms["blue-a"].ca


# overlay.flow_id: only ports that take the key from the flow can send a hashed FlowID.
FLOW_ID = "key_layout: rfc7637, tunnel_ports: per-vsid"


def test_flow_id_defaults_to_zero_and_takes_hash_with_flow_keyed_ports():
    assert load(TWO_HOSTS).overlay.flow_id == "zero"
    hashed = load(TWO_HOSTS.replace(FLOW_ID, "tunnel_ports: per-peer, flow_id: hash"))
    assert hashed.overlay.flow_id == "hash" and hashed.overlay.key_layout == "rfc7637"


@pytest.mark.parametrize("settings, words", [
    ("flow_id: hash", ["overlay.flow_id: hash needs tunnel ports that take the key from the "
                       "flow (tunnel_ports: per-peer", "tunnel_ports is per-vsid",
                       "fixed key"]),
    ("tunnel_ports: per-vsid, flow_id: hash", ["overlay.flow_id:", "per-vsid"]),
    ("key_layout: plain, tunnel_ports: per-peer, flow_id: hash",
     ["overlay.flow_id: hash needs key_layout: rfc7637", "no FlowID"]),
    ("tunnel_ports: per-peer, flow_id: random", ["overlay.flow_id", "'random'", "zero, hash"]),
])
def test_flow_id_hash_is_refused_where_no_port_takes_the_key_from_the_flow(settings, words):
    message = refuse(TWO_HOSTS.replace(FLOW_ID, settings))
    assert message.startswith("f.yaml:4: overlay.flow_id"), message
    for word in words:
        assert word in message, message


def test_flow_id_refusal_names_its_own_line():
    text = TWO_HOSTS.replace("overlay: {bridge: br-int, key_layout: rfc7637, tunnel_ports: "
                             "per-vsid}", "overlay:\n  bridge: br-int\n  flow_id: hash")
    assert refuse(text).startswith("f.yaml:6: overlay.flow_id: hash needs tunnel ports")


ADDRESSES = ["10.0.0.1", "0.0.0.0", "255.255.255.255", "256.0.0.1", "01.2.3.4", "1.2.3.04",
             "1.2.3.00", "0.0.0.00", "001.2.3.4", "1.2.3.1234", "1.2.3", "1.2.3.4.5", "1..3.4",
             ".1.2.3", "1.2.3.", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n", "1.2.3.4\x00",
             "\u0661.\u0662.\u0663.\u0664", "1.2.3.0x4", "1.2.3.+4", "1.2.3.-4", "0x0a.0.0.1",
             "1e1.0.0.1", "", "2001:db8::1", "::ffff:10.0.0.1", "1.2.3.4%eth0", "fe80::1%eth0"]
PREFIXES = ["24", "8", "32", "0", "33", "08", "+8", " 8", "255.255.255.0", "0.0.0.255",
            "255.0.255.0", "", "x", "24/5", "64", "128"]


@pytest.mark.parametrize("address", ADDRESSES)
def test_cas_and_pas_are_read_exactly_as_ipaddress_reads_them(address):
    """The fast reading of an IPv4 CA or PA (inet_pton, then the prefix) takes what
    ipaddress.ip_interface takes, as the same value, and refuses what it refuses."""
    def outcome(parse, text):
        try:
            value = parse(text)
        except ValueError:
            return None
        return type(value), value, value.network, value.ip.packed

    for prefix in PREFIXES:
        text = f"{address}/{prefix}"
        assert outcome(fabric._parse_ca, text) == outcome(ipaddress.ip_interface, text), text
        assert outcome(fabric._parse_pa, text) == outcome(ipaddress.IPv4Interface, text), text


def test_loading_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    """Loading pauses the collector (for speed) and gives it back, even on a refusal: a
    long-running `watch` reloads the fabric and must keep collecting its cycles."""
    path = tmp_path / "f.yaml"
    path.write_text(TWO_HOSTS)
    assert gc.isenabled()
    fabric.load(path)
    fabric.load(path)  # from the cache
    assert gc.isenabled()
    with pytest.raises(FabricError):
        load(TWO_HOSTS.replace("vsid: 5001", "vsid: 1"))
    with pytest.raises(FabricError):
        load("a: [unclosed\n")
    assert gc.isenabled()
    gc.disable()
    try:
        load(TWO_HOSTS)
        assert not gc.isenabled()  # a caller's own pause is kept
    finally:
        gc.enable()
