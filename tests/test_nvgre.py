import ipaddress

import pytest

from ovsnvgre import nvgre


def test_rfc7637_key_puts_vsid_in_top_24_bits():
    assert nvgre.tunnel_key(5001, "rfc7637") == 0x138900
    assert nvgre.tunnel_key(6001, "rfc7637") == 0x177100
    assert nvgre.tunnel_key(5001, "rfc7637", flow_id=0x2A) == 0x13892A


def test_plain_key_is_the_vsid():
    assert nvgre.tunnel_key(5001, "plain") == 5001


def test_receiver_ignores_flow_id():
    key = nvgre.tunnel_key(0xABCDEF, "rfc7637", flow_id=0xFF)
    assert nvgre.vsid_of_key(key, "rfc7637") == 0xABCDEF


@pytest.mark.parametrize("vsid", [0, 4095, 0xFFFFFF, 1 << 24])
def test_reserved_vsids_have_no_key(vsid):
    with pytest.raises(ValueError):
        nvgre.tunnel_key(vsid, "rfc7637")


def test_vsid_range_edges():
    assert nvgre.is_valid_vsid(4096) and nvgre.is_valid_vsid(16777214)
    assert not nvgre.is_valid_vsid(4095) and not nvgre.is_valid_vsid(16777215)


def test_overhead_leaves_1458_of_1500():
    assert nvgre.max_vm_mtu(1500) == 1458


def test_tunnel_port_names_are_short_distinct_and_stable():
    pa = ipaddress.IPv4Address("192.168.2.11")
    per_vsid = nvgre.tunnel_port_name(pa, 5001)
    assert per_vsid == "gc0a8020b001389"
    assert nvgre.tunnel_port_name(pa, None) == "gre-c0a8020b"
    names = {nvgre.tunnel_port_name(ipaddress.IPv4Address("255.255.255.254"), v)
             for v in (4096, nvgre.VSID_MAX)}
    assert len(names) == 2
    assert all(len(n) <= nvgre.MAX_PORT_NAME for n in names)
